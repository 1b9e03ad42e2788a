"""Pseudo-labels: a student trained on a frozen teacher's *hard* predictions, with the task loss
and no true label (MFH Appendix B.3's modality-specific teacher, "trained on pseudo labels from
an image network" after Xue et al., 2021, in its hard form; the soft form is ``kd`` with
``ce_weight`` 0).

Classes: the cross entropy to the teacher's argmax.  Multi-label targets (float multi-hot
labels, :func:`cmkd.metrics.task.infer_task`): the binary cross entropy per label to the
teacher's sigmoid thresholded at ``threshold``.  The batch's true labels are read only to tell
the task; they enter no loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cmkd.methods.base import Method, register
from cmkd.metrics.task import infer_task
from cmkd.params import spec


def hard_labels(teacher: torch.Tensor, task: str, threshold: float = 0.5) -> torch.Tensor:
    """The teacher's hard pseudo-labels: (batch,) argmax for classes, (batch, labels) float
    0/1 (sigmoid >= ``threshold``) for multi-label."""
    if task == "multilabel":
        return (torch.sigmoid(teacher) >= threshold).to(teacher.dtype)
    return teacher.argmax(1)


@register
class PseudoLabel(Method):
    """The task loss to the frozen teacher's hard predictions."""

    name = "pseudo_label"

    @dataclass(frozen=True)
    class Hparams:
        threshold: float = field(default=0.5, metadata=spec(
            "multi-label: a label is on where the teacher's sigmoid reaches this", low=0,
            high=1, low_open=True, high_open=True))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.runs:
            raise ValueError("method 'pseudo_label' trains one run at a time (runs=False)")

    def step(self, batch, epoch):
        student = self.student_forward(batch)
        with torch.no_grad():
            teacher = self.teacher_forward(batch)
        task = infer_task(student, batch["label"])
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"method 'pseudo_label' takes classes or multi-label targets, "
                             f"not {task!r}")
        loss = self.supervised_loss(student, hard_labels(teacher, task, self.hp.threshold))
        return {"total": loss, "ce": loss.detach()}
