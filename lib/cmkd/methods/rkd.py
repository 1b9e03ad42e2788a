"""RKD (Park et al., CVPR 2019, "Relational Knowledge Distillation"): the student's embeddings
keep the teacher's pairwise distances and triplet angles,
``ce_weight * CE(s, y) + feat_weight * (25 * distance + 50 * angle)``
(:func:`cmkd.distill.rkd_loss`; the paper's and mdistiller's weights 25 and 50, ``FEAT_WEIGHT``
1, on the pooled embeddings).

The relations compare samples with each other, so the student's and the teacher's embeddings may
have different widths (crossmodal pairs of different architectures need no regressor).  A layer
other than 'pooled' may be named; a (channels, H, W) map is flattened per sample, as the RKD
code does (``view(batch, -1)``).  A mini-batch of fewer than 3 samples has no triplet: its RKD
terms are 0 (the cross entropy still trains).  Works with ``runs=True`` (batched MLPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cmkd.distill import rkd_angle_loss, rkd_distance_loss
from cmkd.methods.base import Method, register
from cmkd.methods.layers import check_layer, feature_shapes
from cmkd.params import spec


@register
class RKD(Method):
    """Distance- and angle-wise relational KD from a frozen teacher (no extra modules)."""

    name = "rkd"

    @dataclass(frozen=True)
    class Hparams:
        student_layer: str = field(default="pooled", metadata=spec(
            "student embedding, by feature name (the paper: the penultimate embedding)"))
        teacher_layer: str = field(default="pooled", metadata=spec(
            "teacher embedding, by feature name"))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        feat_weight: float = field(default=1.0, metadata=spec(
            "weight of the RKD term (mdistiller: 1)", low=0))
        distance_weight: float = field(default=25.0, metadata=spec(
            "weight of the distance-wise loss (the paper: 25)", low=0))
        angle_weight: float = field(default=50.0, metadata=spec(
            "weight of the angle-wise loss (the paper: 50)", low=0))

    def __init__(self, hp=None, **kwargs):
        super().__init__(hp, **kwargs)
        for role, model, name in (("student", self.student, self.hp.student_layer),
                                  ("teacher", self.teacher, self.hp.teacher_layer)):
            check_layer(name, feature_shapes(model, role, self.name), param=f"{role}_layer",
                        method=self.name, role=role)

    def embeddings(self, student_features, teacher_features
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, dim) embeddings of each side ((runs, batch, dim) with runs); maps
        flattened."""
        lead = 2 if self.runs else 1
        return tuple(f.flatten(lead) if f.dim() > lead + 1 else f
                     for f in (student_features[self.hp.student_layer],
                               teacher_features[self.hp.teacher_layer]))

    def step(self, batch, epoch):
        logits, fs = self.student_forward(batch, features=True)
        _, ft = self.teacher_forward(batch, features=True)
        ce = self.supervised_loss(logits, batch["label"])
        es, et = self.embeddings(fs, ft)
        if es.shape[-2] >= 3:
            distance = rkd_distance_loss(es, et, runs=self.runs)
            angle = rkd_angle_loss(es, et, runs=self.runs)
        else:  # no triplet in the batch
            distance = angle = es.sum((-2, -1)) * 0
        rkd = self.hp.distance_weight * distance + self.hp.angle_weight * angle
        total = self.hp.ce_weight * ce + self.hp.feat_weight * rkd
        return {"total": total, "ce": ce.detach(), "rkd": rkd.detach(),
                "rkd_distance": distance.detach(), "rkd_angle": angle.detach()}
