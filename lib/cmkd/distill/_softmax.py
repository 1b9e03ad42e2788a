"""Softmax, log-softmax and cross entropy over the class dimension (the last one) of logit rows,
fast for the dense losses.

Dense distillation (:mod:`cmkd.distill.dense`) hands the losses every labelled pixel of a batch
as a row: tens of thousands of rows of a few classes.  On a CPU, torch's softmax kernels over
such a short last dimension are slow: a (32768, 5) log-softmax forward and backward takes about
6.4 ms on one thread, against 1.0 ms over the same numbers laid out class-major, (5, 32768) and
dim 0 (one training step of notebook 10's C2KD job makes seven such calls).  The functions
below therefore compute class-major (a transposed view; nothing is copied) when the logits are
on a CPU with at least :data:`MANY_ROWS` rows of at most :data:`FEW_CLASSES` classes, and call
torch as usual otherwise.  The two layouts give the same values up to floating-point rounding
(about 1e-7); every classification batch of the study (at most a few hundred rows) takes the
usual path, so its numbers are exactly those of torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: rows (the dimension before the classes) from which the class-major layout is used
MANY_ROWS = 4096
#: classes up to which the class-major layout is used
FEW_CLASSES = 64


def _class_major(z: torch.Tensor) -> bool:
    return (z.device.type == "cpu" and z.dim() >= 2 and z.shape[-1] <= FEW_CLASSES
            and z.shape[-2] >= MANY_ROWS)


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    """``F.log_softmax(z, -1)``."""
    if _class_major(z):
        return torch.log_softmax(z.movedim(-1, 0), 0).movedim(0, -1)
    return F.log_softmax(z, -1)


def softmax(z: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(z, -1)``."""
    if _class_major(z):
        return torch.softmax(z.movedim(-1, 0), 0).movedim(0, -1)
    return torch.softmax(z, -1)


def cross_entropy(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row ``F.cross_entropy(z, target, reduction='none')``: z (N, C), target (N,)."""
    if _class_major(z):
        return F.nll_loss(log_softmax(z), target, reduction="none")
    return F.cross_entropy(z, target, reduction="none")


__all__ = ["FEW_CLASSES", "MANY_ROWS", "cross_entropy", "log_softmax", "softmax"]
