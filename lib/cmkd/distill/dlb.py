"""DLB: self-distillation from the last mini-batch (Shen et al., CVPR 2022), a self-KD baseline
of C2KD Table 6.

Each mini-batch holds half the samples of the previous one and half new ones (the batch order is
the method's: :func:`cmkd.methods.dlb.dlb_batches`); the predictions made on the repeated half at
the previous iteration are the soft targets of this iteration:
``L = CE + alpha * T^2 KL(p_last / T || p_now / T)`` (T = 3, alpha = 1 in the paper).
"""

from __future__ import annotations

import torch

from cmkd.distill.kd import kd_loss


def dlb_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None = None,
             *, temperature: float = 3.0, reduction: str = "mean", detach_teacher: bool = True,
             runs: bool = False) -> torch.Tensor:
    """The DLB consistency term: KD towards the logits the same model produced for the same
    samples at the previous iteration (the "teacher" here; detached by default).

    student, teacher : (batch, classes), or (runs, batch, classes) with ``runs=True``; target
    unused but checked as :func:`cmkd.distill.kd_loss` checks it (None or class indices of the
    batch; a number in its place is refused: the temperature is keyword-only).  Returns what
    :func:`cmkd.distill.kd_loss` returns for ``reduction``.
    """
    return kd_loss(student, teacher, target, temperature=temperature, reduction=reduction,
                   detach_teacher=detach_teacher, runs=runs)
