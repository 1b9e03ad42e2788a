"""USKD: universal self-knowledge distillation (Yang et al., ICCV 2023, "From knowledge
distillation to self-knowledge distillation: a unified approach with normalized loss and
customized soft labels"), a self-KD baseline of C2KD Table 6.

USKD applies NKD's normalized loss with soft labels the student makes for itself, as the official
code (yzd-v/cls_KD, ``USKDLoss``) computes them:

* target soft label ``p~^t = (p^t)^2 + 1 - mean_batch((p^t)^2)`` (detached), loss
  ``-p~^t log p^t`` weighted ``alpha`` (1);
* non-target soft labels from Zipf's law: every one of the C classes gets the rank of its score
  (rank 1 the largest), the target keeping its rank slot; the non-target classes take
  ``rank^-power`` renormalised over them, loss ``-sum_{i != t} z^i log q^i`` with ``q`` the
  softmax over the non-target logits, weighted ``beta`` (0.1);
* the weak logit: an extra linear head on intermediate features (built by the method, passed as
  ``weak``) is trained on the labels smoothed by 0.1, weighted ``mu`` (0.005), and its
  probabilities enter the ranking score
  ``softmax(weak) / (1 - softmax(weak)^t + 1e-6) + log p / (1 - log p^t + 1e-6)``.
  (The official code divides the student's log-probabilities, not its probabilities - it
  reuses the variable after the log-softmax; this is kept.)  Without ``weak`` the ranking is
  the student's own logits (the official score with the weak term dropped orders classes as
  the student's log-probabilities do) and there is no weak-supervision term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill._shapes import check_logits, check_reduction, check_target, reduce
from cmkd.distill.dkd import non_target_logits


def zipf_labels_all_ranks(scores: torch.Tensor, target: torch.Tensor,
                          power: float = 1.0) -> torch.Tensor:
    """USKD's non-target soft labels: (..., batch, C) scores -> (..., batch, C - 1).

    The C classes are ranked by ``scores`` (rank 1 the largest, ties by class order), the target
    included; each non-target class gets ``rank^-power``, renormalised over the non-target
    classes.
    """
    order = scores.detach().argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        -1, order, torch.arange(1, scores.shape[-1] + 1, device=scores.device).expand_as(order))
    weights = non_target_logits(ranks.to(scores.dtype), target).pow(-power)
    return weights / weights.sum(-1, keepdim=True)


def uskd_loss(student: torch.Tensor, target: torch.Tensor, *, weak: torch.Tensor | None = None,
              alpha: float = 1.0, beta: float = 0.1, mu: float = 0.005, power: float = 1.0,
              reduction: str = "mean", runs: bool = False) -> torch.Tensor:
    """The USKD loss (official defaults alpha 1, beta 0.1, mu 0.005).

    A self-distillation loss: the student is its own teacher, so there is no teacher argument.

    Parameters
    ----------
    student : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``alpha=`` (hyperparameters are keyword-only).
    weak : (batch, classes) logits of the weak head, optional (same shape as ``student``).
    alpha, beta, mu : weights of the target, non-target and weak-supervision terms.
    power : the Zipf exponent (1 in the official code).
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample; the target soft label
        still uses the batch mean of ``(p^t)^2``).

    Returns
    -------
    () or (runs,); (batch,) or (runs, batch) for 'none'.
    """
    check_logits(student, weak, runs=runs, teacher_name="weak")
    check_target(target, student, meant="alpha")
    check_reduction(reduction)
    idx = target.unsqueeze(-1)
    log_p = F.log_softmax(student, -1)
    log_pt = log_p.gather(-1, idx).squeeze(-1)
    pt2 = log_pt.detach().exp() ** 2
    soft_target = pt2 + 1 - pt2.mean(-1, keepdim=True)
    per_sample = alpha * (-soft_target * log_pt)
    if weak is None:
        scores = student.detach()
    else:
        w = torch.softmax(weak.detach(), -1)
        w_t = w.gather(-1, idx)
        lp = log_p.detach()
        scores = w / (1 - w_t + 1e-6) + lp / (1 - lp.gather(-1, idx) + 1e-6)
    z = zipf_labels_all_ranks(scores, target, power)
    log_q = F.log_softmax(non_target_logits(student, target), -1)
    per_sample = per_sample + beta * (-(z * log_q).sum(-1))
    if weak is not None:
        classes = student.shape[-1]
        smooth = 0.9 * F.one_hot(target, classes).to(weak.dtype) + 0.1 / classes
        per_sample = per_sample + mu * (-(smooth * F.log_softmax(weak, -1)).sum(-1))
    return reduce(per_sample, reduction)
