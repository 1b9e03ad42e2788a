"""DML: deep mutual learning (Zhang et al., CVPR 2018; C2KD Tables 1, 3).

The student-modality network (``student``) and the teacher-modality network (``teacher``) train
together, each on ``CE(x, y) + kd_weight * T^2 KL(p_other || p_x)`` with the other's prediction
detached (:func:`cmkd.distill.dml_loss`); T = 1 (DML's plain KL).  The teacher trains in full
(``teacher_update = 'all'``); C2KD's comparisons start it from the trained teacher, which is the
caller's choice of teacher weights.  Both networks move in one optimiser step on the summed
loss; the DML paper updates them in turn within an iteration, so there the second network's KL
target is the first one's updated prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import dml_loss
from cmkd.methods.base import Method, register
from cmkd.params import spec


@register
class DML(Method):
    """Mutual learning of the two modalities' networks."""

    name = "dml"
    teacher_update = "all"

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=1.0, metadata=spec(
            "softening temperature T", low=0, high=100, low_open=True))
        kd_weight: float = field(default=1.0, metadata=spec(
            "weight of each peer's KL term", low=0))

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        teacher = self.teacher_forward(batch)
        out = dml_loss(student, teacher, batch["label"], temperature=self.hp.temperature,
                       kd_weight=self.hp.kd_weight, runs=self.runs)
        return {"total": out["total"], "student": out["student"].detach(),
                "teacher": out["teacher"].detach()}
