"""Decoupled knowledge distillation (Zhao et al., CVPR 2022), C2KD Eq. (2).

KD splits into a target-class part (TCKD: KL between the binary distributions
``[p^t, 1 - p^t]``) and a non-target part (NCKD: KL between the distributions over the ``C - 1``
non-target classes).  DKD Eq. (5): ``KD = TCKD + (1 - p_T^t) NCKD``; DKD reweights them as
``alpha TCKD + beta NCKD`` (defaults alpha 1, beta 8, T 4, linear warm-up over 20 epochs).
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


def non_target_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The logits of the ``C - 1`` non-target classes, in class order.

    logits : (..., batch, C); target : (..., batch) int64 -> (..., batch, C - 1)
    """
    classes = logits.shape[-1]
    if classes < 2:
        raise ValueError("non-target classes need at least 2 classes")
    k = torch.arange(classes - 1, device=logits.device)
    index = k + (k >= target.unsqueeze(-1)).long()  # skip the target
    return logits.gather(-1, index)


def binary_log_probs(logits: torch.Tensor, target: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """``log [p^t, 1 - p^t]`` at temperature T: (..., batch, C) -> (..., batch, 2), stable."""
    z = logits / temperature
    total = torch.logsumexp(z, -1)
    log_pt = z.gather(-1, target.unsqueeze(-1)).squeeze(-1) - total
    log_rest = torch.logsumexp(non_target_logits(z, target), -1) - total
    return torch.stack((log_pt, log_rest), -1)


def _kl_logp(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def tckd_nckd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample TCKD and NCKD, each times T^2 (DKD Eq. 2 - 4).

    Parameters
    ----------
    student_logits, teacher_logits : (..., batch, C); target : (..., batch) int64

    Returns
    -------
    tckd, nckd : (..., batch) tensors
    """
    check_pair(student_logits, teacher_logits, target)
    t2 = temperature**2
    tckd = _kl_logp(binary_log_probs(teacher_logits, target, temperature),
                    binary_log_probs(student_logits, target, temperature)) * t2
    log_q_t = rows.log_softmax(non_target_logits(teacher_logits, target) / temperature)
    log_q_s = rows.log_softmax(non_target_logits(student_logits, target) / temperature)
    nckd = _kl_logp(log_q_t, log_q_s) * t2
    return tckd, nckd


def dkd_warmup(epoch: float, warmup_epochs: float = 20.0) -> float:
    """DKD's linear warm-up factor ``min(epoch / warmup_epochs, 1)`` (1 without warm-up)."""
    if warmup_epochs <= 0:
        return 1.0
    return min(max(epoch, 0.0) / warmup_epochs, 1.0)


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
             warmup: float = 1.0, reduction: str = "mean", detach_teacher: bool = True,
             runs: bool = False) -> torch.Tensor:
    """``warmup * (alpha TCKD + beta NCKD)`` (DKD Eq. 6; defaults alpha 1, beta 8, T 4).

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``temperature=`` (hyperparameters are keyword-only).
    warmup : the factor of :func:`dkd_warmup` for the current epoch.
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample).
    detach_teacher : detach the teacher logits (default).

    Returns
    -------
    () or (runs,); (batch,) or (runs, batch) for 'none'.
    """
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature", flags=("detach_teacher", "runs"))
    check_reduction(reduction)
    tckd, nckd = tckd_nckd(student, maybe_detach(teacher, detach_teacher), target, temperature)
    return warmup * reduce(alpha * tckd + beta * nckd, reduction)
