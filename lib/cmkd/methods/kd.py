"""KD (Hinton et al., 2015): cross entropy plus the temperature-softened KL to a fixed teacher,
``ce_weight * CE(s, y) + kd_weight * T^2 KL(p_t^T || p_s^T)`` (MFH Eq. 1 with rho = ce_weight).
``select`` distils only the samples of C2KD's KRC filter ('krc') or as many at random ('random':
C2KD Table 2's "+KRC" and "+Random", :mod:`cmkd.methods.selection`); presets ``kd_krc`` and
``kd_random``.

Multi-label targets (float multi-hot labels, MM-IMDB's genres; :func:`cmkd.metrics.task.
infer_task`): the cross entropy is the binary one per label and the KD term the binary KD per
label (:func:`cmkd.distill.kd.binary_kd_loss`, sigmoid instead of softmax), MFH Table 7.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import kd_loss, masked_mean
from cmkd.distill.kd import binary_kd_loss
from cmkd.methods.base import Method, register
from cmkd.methods.selection import omega_field, select_field, selection_of
from cmkd.metrics.task import infer_task
from cmkd.params import spec


@register
class KD(Method):
    """Hinton KD from a frozen teacher."""

    name = "kd"

    @dataclass(frozen=True)
    class Hparams:
        temperature: float = field(default=1.0, metadata=spec(
            "softening temperature T (C2KD's and MFH's code: 1)", low=0, high=100,
            low_open=True))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))
        kd_weight: float = field(default=1.0, metadata=spec(
            "weight of the KD term", low=0))
        reduction: str = field(default="mean", metadata=spec(
            "KL reduction: 'mean' (the KL per sample, averaged over the batch: the equations) "
            "or 'elementwise_mean' (also divided by the classes: MFH's official code)",
            choices=("mean", "elementwise_mean")))
        select: str = select_field()
        select_omega: float = omega_field()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.selection = selection_of(self)

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        teacher = self.teacher_forward(batch)
        ce = self.supervised_loss(student, batch["label"])
        if not self.runs and infer_task(student, batch["label"]) == "multilabel":
            if self.hp.select != "none":
                raise ValueError(f"kd: select {self.hp.select!r} ranks classes of one label; "
                                 f"multi-label targets take select 'none'")
            kd = binary_kd_loss(student, teacher, temperature=self.hp.temperature,
                                reduction=self.hp.reduction)
            total = self.hp.ce_weight * ce + self.hp.kd_weight * kd
            return {"total": total, "ce": ce.detach(), "kd": kd.detach()}
        student, teacher, _ = self.samples(batch["label"], student, teacher)
        keep = self.selection.mask(teacher, student)
        if keep is None:
            kd = kd_loss(student, teacher, temperature=self.hp.temperature,
                         reduction=self.hp.reduction, runs=self.runs)
        else:
            per = kd_loss(student, teacher, temperature=self.hp.temperature, reduction="none",
                          runs=self.runs)
            if self.hp.reduction == "elementwise_mean":
                per = per / student.shape[-1]
            kd = masked_mean(per, keep)
        total = self.hp.ce_weight * ce + self.hp.kd_weight * kd
        terms = {"total": total, "ce": ce.detach(), "kd": kd.detach()}
        if keep is not None:
            terms["keep"] = keep.float().mean(-1)
        return terms
