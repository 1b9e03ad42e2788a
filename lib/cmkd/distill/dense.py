"""Dense (per-pixel) distillation: segmentation logits as a batch of pixel samples.

Every logit loss of this package takes (batch, classes) logits.  A segmentation network gives
(batch, classes, H, W) logits and a (batch, H, W) target with the void label ``ignore_index``
(255 on NYU Depth V2).  :func:`pixels` turns them into (N, classes) rows, one per *labelled*
pixel of the batch (the void pixels dropped), so per-pixel KD, DIST, NKD, SHAKE and C2KD are the
classification losses on those rows:

- per-sample terms (KD's KL, NKD, C2KD's non-target KL, the cross entropies) are averaged over
  the labelled pixels of the whole batch (every pixel weighs the same, whatever its image);
- terms that relate samples (DIST's intra-class Pearson over the batch) relate all labelled
  pixels of the batch;
- C2KD's on-the-fly selection (Eq. 4) scores every pixel by the Kendall rank correlation of its
  teacher and student class scores and keeps those above omega; the crossmodal term is averaged
  over the kept pixels of the batch.

Void pixels contribute to no term (the label-free KD terms included: a void pixel has no
class the losses may use, and NYU's void is mostly the unlabelled border).  :func:`dense` applies
any loss of the package in this way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cmkd.metrics.task import IGNORE_INDEX


def is_dense(logits: torch.Tensor) -> bool:
    """Whether ``logits`` are per-pixel: (batch, classes, H, W)."""
    return isinstance(logits, torch.Tensor) and logits.dim() == 4


def pixels(target: torch.Tensor, *logits: torch.Tensor, ignore_index: int = IGNORE_INDEX
           ) -> tuple[torch.Tensor, ...]:
    """``(rows..., labels)``: each of ``logits`` (batch, classes, H, W) as (N, classes) rows and
    ``target`` (batch, H, W) as (N,), N the pixels whose label is not ``ignore_index``, in the
    order batch, row, column.

    Raises ValueError naming the shapes when a logit tensor is not 4-d or does not match the
    target's (batch, H, W).
    """
    if not isinstance(target, torch.Tensor) or target.dim() != 3:
        raise ValueError(f"target must be a (batch, H, W) tensor of class indices, got "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    keep = (target != ignore_index).flatten()
    out = []
    for i, z in enumerate(logits):
        if not is_dense(z) or z.shape[0] != target.shape[0] or z.shape[2:] != target.shape[1:]:
            raise ValueError(f"logits {i} must be (batch, classes, H, W) = (" +
                             f"{target.shape[0]}, classes, {target.shape[1]}, "
                             f"{target.shape[2]}) to match the target, got {tuple(z.shape)}")
        out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])[keep])
    return (*out, target.flatten()[keep])


def dense(loss: Callable, student: torch.Tensor, teacher: torch.Tensor,
          target: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, pass_target: bool = True,
          **hyperparameters):
    """``loss`` (a logit loss of this package) on the labelled pixels of dense logits:
    ``loss(student_rows, teacher_rows, labels, **hyperparameters)`` (without the labels when
    ``pass_target`` is False).  student, teacher: (batch, classes, H, W); target (batch, H, W).
    """
    s, t, y = pixels(target, student, teacher, ignore_index=ignore_index)
    if pass_target:
        return loss(s, t, y, **hyperparameters)
    return loss(s, t, **hyperparameters)


__all__ = ["dense", "is_dense", "pixels"]
