"""NKD: normalized knowledge distillation (Yang et al., ICCV 2023, "From knowledge distillation
to self-knowledge distillation: a unified approach with normalized loss and customized soft
labels").

``L = -p_T^t log p_S^t - gamma * T^2 * sum_{i != t} q_T^i log q_S^i``, where ``q`` is the
distribution over the non-target classes at temperature T (the non-target probabilities
normalised to sum to 1).  Defaults gamma = 1.5, T = 1.
"""

from __future__ import annotations

import torch

from cmkd.distill import _softmax as rows
from cmkd.distill._shapes import (
    check_logits,
    check_pair,
    check_reduction,
    check_target,
    maybe_detach,
    reduce,
)
from cmkd.distill.dkd import non_target_logits


def nkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample target term ``-p_T^t log p_S^t`` and non-target cross entropy
    ``-T^2 sum q_T log q_S``: (..., batch, C) -> two (..., batch) tensors.  The teacher is used
    as given: callers detach it (:func:`nkd_loss` does unless told otherwise)."""
    check_pair(student_logits, teacher_logits, target)
    idx = target.unsqueeze(-1)
    log_ps_t = rows.log_softmax(student_logits).gather(-1, idx).squeeze(-1)
    pt_t = rows.softmax(teacher_logits).gather(-1, idx).squeeze(-1)
    target_term = -pt_t * log_ps_t
    log_qs = rows.log_softmax(non_target_logits(student_logits, target) / temperature)
    qt = rows.softmax(non_target_logits(teacher_logits, target) / temperature)
    non_target = -(qt * log_qs).sum(-1) * temperature**2
    return target_term, non_target


def nkd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
             gamma: float = 1.5, temperature: float = 1.0, reduction: str = "mean",
             detach_teacher: bool = True, runs: bool = False) -> torch.Tensor:
    """The NKD loss (defaults gamma 1.5, T 1).

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``temperature=`` (hyperparameters are keyword-only).
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample).
    detach_teacher : detach the teacher logits (default: the soft labels are constants, as in
        the official code).

    Returns
    -------
    () or (runs,); (batch,) or (runs, batch) for 'none'.
    """
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature", flags=("detach_teacher", "runs"))
    check_reduction(reduction)
    target_term, non_target = nkd_parts(student, maybe_detach(teacher, detach_teacher), target,
                                        temperature)
    return reduce(target_term + gamma * non_target, reduction)
