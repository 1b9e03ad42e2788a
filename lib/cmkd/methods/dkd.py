"""DKD: decoupled knowledge distillation (Zhao et al., CVPR 2022; C2KD Eq. 2, Tables 1-3).

``ce_weight * CE(s, y) + warmup(epoch) * (alpha TCKD + beta NCKD)`` from a frozen teacher
(:func:`cmkd.distill.dkd_loss`, DKD Eq. 6), defaults alpha 1, beta 8, T 4 and a linear warm-up
over 20 epochs (the public code, mdistiller).  The warm-up factor is
``min((epoch + 1) / warmup_epochs, 1)``: mdistiller counts epochs from 1, the engine from 0, so
the first epoch already distils with 1 / warmup_epochs.  ``select`` distils only the samples of
C2KD's KRC filter or as many at random (C2KD Table 2's "+KRC" / "+Random",
:mod:`cmkd.methods.selection`); presets ``tckd_krc``, ``nckd_random`` and the like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import dkd_loss, dkd_warmup, masked_mean
from cmkd.methods.base import Method, register
from cmkd.methods.selection import omega_field, select_field, selection_of
from cmkd.params import spec


@register
class DKD(Method):
    """DKD from a frozen teacher, with its warm-up."""

    name = "dkd"

    @dataclass(frozen=True)
    class Hparams:
        alpha: float = field(default=1.0, metadata=spec("weight of TCKD (target class)", low=0))
        beta: float = field(default=8.0, metadata=spec("weight of NCKD (non-target classes)",
                                                       low=0))
        temperature: float = field(default=4.0, metadata=spec(
            "softening temperature T", low=0, high=100, low_open=True))
        warmup_epochs: float = field(default=20.0, metadata=spec(
            "epochs of the linear warm-up of the DKD term (0: none)", low=0))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        select: str = select_field()
        select_omega: float = omega_field()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.selection = selection_of(self)

    def warmup(self, epoch: int) -> float:
        """The warm-up factor of (0-based) ``epoch``: ``min((epoch + 1) / warmup_epochs, 1)``."""
        return dkd_warmup(epoch + 1, self.hp.warmup_epochs)

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        teacher = self.teacher_forward(batch)
        y = batch["label"]
        ce = self.supervised_loss(student, y)
        keep = self.selection.mask(teacher, student)
        dkd = dkd_loss(student, teacher, y, alpha=self.hp.alpha, beta=self.hp.beta,
                       temperature=self.hp.temperature, warmup=self.warmup(epoch),
                       reduction="mean" if keep is None else "none", runs=self.runs)
        if keep is not None:
            dkd = masked_mean(dkd, keep)
        total = self.hp.ce_weight * ce + dkd
        terms = {"total": total, "ce": ce.detach(), "dkd": dkd.detach()}
        if keep is not None:
            terms["keep"] = keep.float().mean(-1)
        return terms
