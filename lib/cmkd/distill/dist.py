"""DIST (Huang et al., NeurIPS 2022): distillation from a stronger teacher by correlation.

``L = T^2 (beta * inter + gamma * intra)``: the inter-class relation is ``1 - pearson`` between
student and teacher probabilities of each sample (over classes), averaged over samples; the
intra-class relation is ``1 - pearson`` of each class's probabilities over the batch, averaged over
classes.  Probabilities at temperature T.  The paper's defaults: beta = gamma = 1 (2 on
ImageNet), T = 1 (4 on ImageNet); the C2KD comparisons keep the method's defaults.
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
)


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1, weights: torch.Tensor | None = None,
            eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (optionally with 0/1 or positive
    ``weights`` of the same shape), ``eps`` guarding constant inputs."""
    if weights is None:
        weights = torch.ones_like(a)
    wsum = weights.sum(dim, keepdim=True).clamp_min(eps)
    am = a - (weights * a).sum(dim, keepdim=True) / wsum
    bm = b - (weights * b).sum(dim, keepdim=True) / wsum
    cov = (weights * am * bm).sum(dim)
    var = (weights * am * am).sum(dim) * (weights * bm * bm).sum(dim)
    return cov / (var.sqrt() + eps)


def dist_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None = None,
              *, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0,
              weights: torch.Tensor | None = None, reduction: str = "mean",
              detach_teacher: bool = True, runs: bool = False) -> torch.Tensor:
    """DIST loss ``T^2 (beta * inter + gamma * intra)``.

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : None, or (batch,) / (runs, batch) int64 class indices: unused (DIST needs no
        labels), accepted so every logit loss is called alike, but checked when given; a number
        in its place is refused (the temperature is keyword-only), and a float tensor too (the
        per-sample weights go in ``weights=``).
    weights : (batch,) or (runs, batch), optional
        Per-sample 0/1 weights (a sample filter such as C2KD's OFSD); the inter-class term is
        then averaged over the kept samples and the intra-class correlation computed over them
        (0 when none is kept).
    reduction : 'mean' only: the intra-class relation is a correlation over the batch, so the
        loss has no per-sample value.
    detach_teacher : detach the teacher logits (default).

    Returns
    -------
    () or (runs,).
    """
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature", required=False,
                 flags=("detach_teacher", "runs"), weights="weights")
    check_reduction(reduction, ("mean",))
    if weights is not None and weights.shape != student.shape[:-1]:
        raise ValueError(f"weights must have shape {tuple(student.shape[:-1])} (one per sample), "
                         f"got {tuple(weights.shape)}")
    return dist_terms(student, maybe_detach(teacher, detach_teacher), beta=beta, gamma=gamma,
                      temperature=temperature, weights=weights)


def dist_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float = 1.0,
               gamma: float = 1.0, temperature: float = 1.0,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """The building block of :func:`dist_loss` on (..., batch, C) logits -> (...), teacher used
    as given (C2KD's crossmodal term calls it on non-target logits)."""
    check_pair(student_logits, teacher_logits)
    ps = rows.softmax(student_logits / temperature)
    pt = rows.softmax(teacher_logits / temperature)
    inter_each = 1 - pearson(ps, pt, -1)  # (..., batch)
    if weights is None:
        inter = inter_each.mean(-1)
        intra = (1 - pearson(ps, pt, -2)).mean(-1)
    else:
        w = weights.to(ps.dtype)
        kept = w.sum(-1)
        inter = (w * inter_each).sum(-1) / kept.clamp_min(1)
        wc = w.unsqueeze(-1).expand_as(ps)
        intra = (1 - pearson(ps, pt, -2, wc)).mean(-1) * (kept > 1)
    return temperature**2 * (beta * inter + gamma * intra)
