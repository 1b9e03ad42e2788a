"""The shape, target and reduction checks every loss of the package makes before computing.

Logits are (batch, classes); with ``runs=True`` (the batched-MLP fast path, R independent models
trained at once) (runs, batch, classes).  Anything else is refused with a ValueError naming the
argument and the expected shape, never guessed.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def _layout(runs: bool) -> str:
    return "(runs, batch, classes)" if runs else "(batch, classes)"


def check_logits(student: torch.Tensor, teacher: torch.Tensor | None = None,
                 target: torch.Tensor | None = None, *, runs: bool = False,
                 class_dim: int = -1, student_name: str = "student",
                 teacher_name: str = "teacher") -> None:
    """Raise ValueError unless the logits have the declared layout.

    student : (batch, classes), or (runs, batch, classes) with ``runs=True``.
    teacher : the student's shape.  target : int64 class indices, (batch,) or (runs, batch),
    each in [0, classes).  ``class_dim=0`` declares class-major logits, (classes, batch) or
    (classes, runs, batch).
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
    if target is not None:
        check_target(target, student, class_dim=class_dim)


def check_target(target: torch.Tensor, logits: torch.Tensor, *, class_dim: int = -1) -> None:
    """Raise ValueError unless ``target`` holds integer class indices of the logits' shape
    without the class dimension, each in [0, classes)."""
    classes = logits.shape[class_dim]
    rest = logits.shape[:-1] if class_dim == -1 else logits.shape[1:]
    if target.shape != rest:
        raise ValueError(f"target must have shape {tuple(rest)} (the logits without the class "
                         f"dimension), got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold int64 class indices, got dtype {target.dtype}")
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
