"""DIST (Huang et al., NeurIPS 2022; C2KD Tables 1, 3, Fig. 5): knowledge distillation from a
stronger teacher through Pearson correlations of the probabilities within each sample
(inter-class) and within each class over the batch (intra-class).

``ce_weight * CE(s, y) + kd_weight * T^2 (beta * inter + gamma * intra)``
(:func:`cmkd.distill.dist_loss`), frozen teacher; defaults beta = gamma = 1, T = 1 (the paper's
values; C2KD's comparisons keep each method's defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import dist_loss
from cmkd.methods.base import Method, register
from cmkd.params import spec


@register
class DIST(Method):
    """DIST from a frozen teacher."""

    name = "dist"

    @dataclass(frozen=True)
    class Hparams:
        beta: float = field(default=1.0, metadata=spec("weight of the inter-class relation",
                                                       low=0))
        gamma: float = field(default=1.0, metadata=spec("weight of the intra-class relation",
                                                        low=0))
        temperature: float = field(default=1.0, metadata=spec(
            "softening temperature T", low=0, high=100, low_open=True))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        kd_weight: float = field(default=1.0, metadata=spec("weight of the DIST term", low=0))

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        teacher = self.teacher_forward(batch)
        ce = self.supervised_loss(student, batch["label"])
        student, teacher, _ = self.samples(batch["label"], student, teacher)
        dist = dist_loss(student, teacher, beta=self.hp.beta, gamma=self.hp.gamma,
                         temperature=self.hp.temperature, runs=self.runs)
        total = self.hp.ce_weight * ce + self.hp.kd_weight * dist
        return {"total": total, "ce": ce.detach(), "dist": dist.detach()}
