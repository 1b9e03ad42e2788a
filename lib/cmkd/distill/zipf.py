"""Zipf's label smoothing (Liang et al., ECCV 2022), a self-KD baseline of C2KD Table 6.

The model's own ranking of the non-target classes (largest logit first) defines a soft label that
follows Zipf's law, ``q^i proportional to rank_i^-power``; the loss is the KL divergence from it
to the model's distribution over the non-target classes, added to the cross entropy.  (The
paper ranks by the outputs of the last and of intermediate layers; here the model's own logits,
detached, give the ranking.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill._shapes import check_logits, check_reduction, check_target, reduce
from cmkd.distill.dkd import non_target_logits


def zipf_soft_labels(logits: torch.Tensor, target: torch.Tensor,
                     power: float = 1.0) -> torch.Tensor:
    """Zipf distribution over the non-target classes: (..., batch, C) -> (..., batch, C - 1).

    Rank 1 is the largest non-target logit; ties are broken by class order.
    """
    z = non_target_logits(logits.detach(), target)
    order = z.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        -1, order, torch.arange(1, z.shape[-1] + 1, device=z.device).expand_as(order))
    weights = ranks.to(z.dtype).pow(-power)
    return weights / weights.sum(-1, keepdim=True)


def zipf_loss(student: torch.Tensor, target: torch.Tensor, *, power: float = 1.0,
              reduction: str = "mean", runs: bool = False) -> torch.Tensor:
    """KL(Zipf soft label || softmax over the non-target logits).

    A self-distillation loss: the student is its own teacher, so there is no teacher argument.

    Parameters
    ----------
    student : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``power=`` (hyperparameters are keyword-only).
    power : the Zipf exponent (1 in the paper).
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample).

    Returns
    -------
    () or (runs,); (batch,) or (runs, batch) for 'none'.
    """
    check_logits(student, runs=runs)
    check_target(target, student, meant="power")
    check_reduction(reduction)
    q = zipf_soft_labels(student, target, power)
    log_p = F.log_softmax(non_target_logits(student, target), -1)
    return reduce((q * (q.log() - log_p)).sum(-1), reduction)
