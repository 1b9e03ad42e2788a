"""The shape, target and reduction checks every loss of the package makes before computing.

Logits are (batch, classes); with ``runs=True`` (the batched-MLP fast path, R independent models
trained at once) (runs, batch, classes).  Anything else is refused with a ValueError naming the
argument and the expected shape, never guessed.  Every loss that takes a ``target`` checks it
with :func:`check_target`, whether it reads it or not; a number in its place (a hyperparameter
passed positionally) is refused with the keyword it was probably meant for.  Reductions are
checked by :func:`check_reduction`, which explains torch's 'batchmean'.
"""

from __future__ import annotations

import numbers

import torch

REDUCTIONS = ("mean", "sum", "none")


def _layout(runs: bool) -> str:
    return "(runs, batch, classes)" if runs else "(batch, classes)"


def check_logits(student: torch.Tensor, teacher: torch.Tensor | None = None, *,
                 runs: bool = False, class_dim: int = -1, student_name: str = "student",
                 teacher_name: str = "teacher") -> None:
    """Raise ValueError unless the logits have the declared layout.

    student : (batch, classes), or (runs, batch, classes) with ``runs=True``.
    teacher : the student's shape.  ``class_dim=0`` declares class-major logits,
    (classes, batch) or (classes, runs, batch).  The target is checked by :func:`check_target`.
    """
    ndim = 3 if runs else 2
    expected = _layout(runs)
    if class_dim == 0:
        expected = "(classes, runs, batch)" if runs else "(classes, batch)"
    elif class_dim != -1:
        raise ValueError(f"class_dim must be -1 or 0, got {class_dim}")
    if student.dim() != ndim:
        hint = ("; pass runs=True for a leading run dimension" if student.dim() == 3 and not runs
                else "")
        raise ValueError(f"{student_name} logits must have shape {expected}, got "
                         f"{tuple(student.shape)}{hint}")
    if teacher is not None and teacher.shape != student.shape:
        raise ValueError(f"{teacher_name} logits must have the {student_name}'s shape "
                         f"{tuple(student.shape)} {expected}, got {tuple(teacher.shape)}")


def check_target(target: object, logits: torch.Tensor, *, meant: str, required: bool = True,
                 flags: tuple[str, ...] = ("runs",), weights: str | None = None,
                 class_dim: int = -1) -> None:
    """The target check of every loss that takes one (used or not): raise unless ``target`` is
    a tensor of integer class indices with the logits' shape without the class dimension, each
    in [0, classes), or None where ``required`` is False (KD, DIST, DLB read no labels).

    Hyperparameters are keyword-only, so a value in the target's place is a positional
    mistake: ``kd_loss(s, t, 4.0)``.  It is refused with a message naming ``target``, what it
    got and the keyword the caller probably meant: ``meant`` (the loss's temperature, or its
    first float hyperparameter) for a number or a 0-d tensor, the boolean ``flags`` for a bool,
    ``weights`` (a per-sample float keyword, DIST's) for a float tensor of the target's shape.

    Raises TypeError for something that is not a tensor (a number, a bool, a list, or None where
    a target is required), ValueError for a tensor of the wrong shape, dtype or values.
    """
    classes = logits.shape[class_dim]
    rest = tuple(logits.shape[:-1] if class_dim == -1 else logits.shape[1:])
    what = f"a tensor of int64 class indices of shape {rest}"
    if target is None:
        if required:
            raise TypeError(f"target is required: {what}, got None")
        return
    if isinstance(target, bool):
        hint = " or ".join(f"{f}={target}" for f in flags)
        raise TypeError(f"target must be {what}, got the bool {target}; flags are keyword-only: "
                        f"did you mean {hint}?")
    if isinstance(target, numbers.Number):
        raise TypeError(f"target must be {what}, got the {type(target).__name__} {target}; "
                        f"hyperparameters are keyword-only: did you mean {meant}={target}?")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be {what}, got {type(target).__name__}")
    if target.dim() == 0:
        raise ValueError(f"target must have shape {rest} (the logits without the class "
                         f"dimension), got a 0-d tensor; hyperparameters are keyword-only: "
                         f"did you mean {meant}={target.item()}?")
    if tuple(target.shape) != rest:
        raise ValueError(f"target must have shape {rest} (the logits without the class "
                         f"dimension), got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        hint = (f"; per-sample weights go in {weights}=" if weights is not None
                and target.dtype.is_floating_point else "")
        raise ValueError(f"target must hold int64 class indices, got dtype {target.dtype}"
                         f"{hint}")
    if target.numel() and bool(((target < 0) | (target >= classes)).any()):
        raise ValueError(f"target values must lie in [0, {classes}) (the classes), got values "
                         f"from {int(target.min())} to {int(target.max())}")


def check_features(features: torch.Tensor, name: str, *, runs: bool = False,
                   maps: bool = True) -> None:
    """Raise ValueError unless ``features`` are (batch, dim) vectors or, when ``maps``,
    (batch, C, H, W) maps; a leading run dimension only with ``runs=True``.  A 3-d
    (batch, C, T) sequence map is refused: flatten it (or pool it) first."""
    lead = "runs, " if runs else ""
    allowed = {2 + runs: f"({lead}batch, dim)"}
    if maps:
        allowed[4 + runs] = f"({lead}batch, C, H, W)"
    if features.dim() not in allowed:
        hint = ""
        if features.dim() == 3 and not runs:
            hint = ("; a (batch, C, T) map must be flattened to (batch, C * T) first, and "
                    "(runs, batch, dim) needs runs=True")
        raise ValueError(f"{name} must have shape {' or '.join(allowed.values())}, got "
                         f"{tuple(features.shape)}{hint}")


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    """Raise ValueError unless ``reduction`` is one of ``allowed``.  torch's 'batchmean' gets
    its own message: it is 'mean' here (the KL averaged over samples), and torch's 'mean'
    (``KLDivLoss()``'s default, MFH's official code) is KD's 'elementwise_mean'."""
    if reduction == "batchmean":
        where = ("the option 'elementwise_mean'" if "elementwise_mean" in allowed
                 else "kd_loss's option 'elementwise_mean'")
        raise ValueError("reduction='batchmean' is torch's name for what is 'mean' here (for a "
                         "KL, the KL divergence averaged over samples): use reduction='mean'.  "
                         "torch's 'mean', the default of torch.nn.KLDivLoss() in MFH's official "
                         f"code (the KL divided by the number of classes too), is {where}")
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """(..., batch) per-sample values -> batch 'mean' or 'sum' (...), or 'none' as they are."""
    if reduction == "mean":
        return per_sample.mean(-1)
    if reduction == "sum":
        return per_sample.sum(-1)
    return per_sample


def maybe_detach(teacher: torch.Tensor, detach_teacher: bool) -> torch.Tensor:
    return teacher.detach() if detach_teacher else teacher


def check_pair(student: torch.Tensor, teacher: torch.Tensor,
               target: torch.Tensor | None = None) -> None:
    """The lenient check of the building blocks (``tckd_nckd``, ``nkd_parts``, ...), which take
    (..., batch, classes) logits: equal shapes and a target without the class dimension."""
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher logits must have the same shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if target is not None and target.shape != student.shape[:-1]:
        raise ValueError(f"target must have shape {tuple(student.shape[:-1])} (the logits "
                         f"without the class dimension), got {tuple(target.shape)}")
