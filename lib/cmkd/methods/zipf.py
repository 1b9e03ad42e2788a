"""Zipf's label smoothing (Liang et al., ECCV 2022; C2KD Table 6), a self-KD baseline.

No teacher: ``ce_weight * CE + zipf_weight * KL(Zipf soft label || non-target distribution)``
(:func:`cmkd.distill.zipf_loss`), the soft label ranking the non-target classes by the student's
own (detached) logits, ``q^i proportional to rank_i^-power`` with power 1.  Departure from the
paper: it ranks by the outputs of the last and of intermediate layers; here the final logits
alone give the ranking, as the loss function does.  ``zipf_weight`` defaults to 1 (not checked
against the public code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cmkd.distill import zipf_loss
from cmkd.methods.base import Method, register
from cmkd.params import spec


@register
class Zipf(Method):
    """Zipf's label smoothing (no teacher)."""

    name = "zipf"
    needs_teacher = False

    @dataclass(frozen=True)
    class Hparams:
        power: float = field(default=1.0, metadata=spec("the Zipf exponent", low=0,
                                                        low_open=True))
        zipf_weight: float = field(default=1.0, metadata=spec("weight of the Zipf KL term",
                                                              low=0))
        ce_weight: float = field(default=1.0, metadata=spec(
            "weight of the cross entropy on labels", low=0))

    def step(self, batch, epoch):
        logits = self.student_forward(batch)
        y = batch["label"]
        ce = self.supervised_loss(logits, y)
        zipf = zipf_loss(logits, y, power=self.hp.power, runs=self.runs)
        total = self.hp.ce_weight * ce + self.hp.zipf_weight * zipf
        return {"total": total, "ce": ce.detach(), "zipf": zipf.detach()}
