"""NKD: normalized knowledge distillation (Yang et al., ICCV 2023; C2KD Tables 1, 3, Fig. 3, 5).

``ce_weight * CE(s, y) + kd_weight * [-p_T^t log p_S^t - gamma T^2 sum_{i != t} q_T^i log q_S^i]``
(:func:`cmkd.distill.nkd_loss`), frozen teacher; defaults gamma 1.5, T 1 (the official code,
yzd-v/cls_KD ``NKDLoss``, which keeps the student's cross entropy beside it).

Diagnostic for C2KD Fig. 3: ``n_krc_below_omega``, the samples of the batch whose Kendall rank
correlation between teacher and student logits is not above omega = 0 (the complement of
C2KD's OFSD filter, Eq. 4); it does not change training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import nkd_loss
from cmkd.methods.base import Method, register
from cmkd.metrics.krc import kendall_tau
from cmkd.params import spec

#: The KRC threshold of C2KD Fig. 3 (omega = 0).
FIG3_OMEGA = 0.0


@register
class NKD(Method):
    """NKD from a frozen teacher."""

    name = "nkd"

    @dataclass(frozen=True)
    class Hparams:
        gamma: float = field(default=1.5, metadata=spec("weight of the non-target term", low=0))
        temperature: float = field(default=1.0, metadata=spec(
            "temperature of the non-target distributions", low=0, high=100, low_open=True))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        kd_weight: float = field(default=1.0, metadata=spec("weight of the NKD term", low=0))

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        teacher = self.teacher_forward(batch)
        y = batch["label"]
        ce = self.supervised_loss(student, y)
        student, teacher, y = self.samples(y, student, teacher)
        nkd = nkd_loss(student, teacher, y, gamma=self.hp.gamma,
                       temperature=self.hp.temperature, runs=self.runs)
        total = self.hp.ce_weight * ce + self.hp.kd_weight * nkd
        below = (~(kendall_tau(teacher.detach(), student.detach()) > FIG3_OMEGA)).sum(-1)
        return {"total": total, "ce": ce.detach(), "nkd": nkd.detach(),
                "n_krc_below_omega": below.to(ce.dtype)}
