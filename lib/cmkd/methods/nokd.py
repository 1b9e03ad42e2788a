"""No KD: the student trained alone with its task loss (the baseline of every table)."""

from __future__ import annotations

from cmkd.methods.base import Method, register


@register
class NoKD(Method):
    """Cross entropy (or BCE for multilabel targets) on the student; no teacher needed."""

    name = "nokd"
    needs_teacher = False

    def step(self, batch, epoch):
        ce = self.supervised_loss(self.student_forward(batch), batch["label"])
        return {"total": ce, "ce": ce.detach()}
