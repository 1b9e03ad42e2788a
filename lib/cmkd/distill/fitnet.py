"""FitNets (Romero et al., ICLR 2015): hint regression from a student layer to a teacher layer.

A regressor maps the student's guided-layer features to the teacher's hint-layer shape; the loss
is the mean squared error between them (the paper's ``1/2 ||u_h - r(v_g)||^2``, here averaged
over elements, as the KD libraries do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cmkd.distill._shapes import check_features, check_reduction, maybe_detach


def fitnet_loss(student: torch.Tensor, teacher: torch.Tensor, *,
                regressor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                reduction: str = "mean", detach_teacher: bool = True,
                runs: bool = False) -> torch.Tensor:
    """Mean squared error between ``regressor(student)`` and the teacher features.

    Parameters
    ----------
    student, teacher : (batch, dim) vectors or (batch, C, H, W) maps (their own dims and
        channels; the regressed student must match the teacher's shape); with ``runs=True`` a
        leading run dimension, (runs, batch, dim) or (runs, batch, C, H, W).  A 3-d tensor
        without ``runs=True`` is refused: flatten a (batch, C, T) map first.
    regressor : callable, optional
        Maps the student features to the teacher's shape
        (:func:`cmkd.models.auxiliary.hint_regressor`); without it the shapes must already agree.
    reduction : 'mean' (over every element, i.e. over the batch of per-sample means), 'sum'
        (of the per-sample means) or 'none' (per-sample means, (batch,) or (runs, batch)).
    detach_teacher : detach the teacher features (default).

    Returns
    -------
    () or (runs,); (batch,) or (runs, batch) for 'none'.
    """
    check_features(student, "student features", runs=runs)
    check_features(teacher, "teacher features", runs=runs)
    check_reduction(reduction)
    hint = regressor(student) if regressor is not None else student
    if hint.shape != teacher.shape:
        raise ValueError(f"the regressed student features {tuple(hint.shape)} must have the "
                         f"teacher features' shape {tuple(teacher.shape)}")
    err = (hint - maybe_detach(teacher, detach_teacher)).pow(2)
    sample_dims = tuple(range(1 + runs - err.dim(), 0))  # every dimension after the batch
    if reduction == "mean":
        return err.mean((-1 - len(sample_dims),) + sample_dims) if runs else err.mean()
    per_sample = err.mean(sample_dims)
    return per_sample.sum(-1) if reduction == "sum" else per_sample
