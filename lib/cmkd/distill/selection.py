"""Which samples a distillation term sees: C2KD's on-the-fly selection filter (Eq. 3-4 and
the alternatives of Fig. 4), the same number of samples kept at random (Table 2's "+Random"),
and the mean of a per-sample term over the kept samples.

A module of its own, importing no loss: KD, DKD and C2KD all filter with it, and a job's code
(:mod:`cmkd.jobs.keys`) then depends on these few functions, not on every loss of C2KD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill import _softmax as rows
from cmkd.metrics.krc import kendall_tau

FILTERS = ("krc", "cosine", "pearson", "gradcos", "none")


@torch.no_grad()
def filter_scores(teacher_logits: torch.Tensor, student_logits: torch.Tensor, kind: str = "krc",
                  target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample agreement of the two sides: (..., batch, C) -> (..., batch).

    kind : 'krc' Kendall's tau-a of the logits (Eq. 3); 'cosine' cosine similarity of the logits;
        'pearson' Pearson correlation of the logits; 'gradcos' cosine between the gradients of
        the distillation loss KL(p_T || p_S) and of the task loss CE(p_S, y) with respect to the
        student's logits, ``p_S - p_T`` and ``p_S - onehot(y)`` (the paper takes gradients with
        respect to the parameters; per sample, the logits are where both losses meet the
        network, so this is the per-sample quantity that can be had in one pass; needs target).
    """
    if kind == "krc":
        return kendall_tau(teacher_logits, student_logits, "a")
    if kind == "cosine":
        return F.cosine_similarity(teacher_logits, student_logits, dim=-1)
    if kind == "pearson":
        t = teacher_logits - teacher_logits.mean(-1, keepdim=True)
        s = student_logits - student_logits.mean(-1, keepdim=True)
        return F.cosine_similarity(t, s, dim=-1)
    if kind == "gradcos":
        if target is None:
            raise ValueError("the 'gradcos' filter needs the target labels")
        ps, pt = rows.softmax(student_logits), rows.softmax(teacher_logits)
        onehot = F.one_hot(target, ps.shape[-1]).to(ps.dtype)
        return F.cosine_similarity(ps - pt, ps - onehot, dim=-1)
    raise ValueError(f"filter must be one of {FILTERS}, got {kind!r}")


@torch.no_grad()
def ofsd_mask(teacher_logits: torch.Tensor, student_logits: torch.Tensor, omega: float = 0.0,
              kind: str = "krc", target: torch.Tensor | None = None) -> torch.Tensor:
    """OFSD's eta (Eq. 4): True where ``score > omega`` (strict); NaN scores fail.  'none' keeps
    every sample.  (..., batch, C) -> (..., batch) bool."""
    if kind == "none":
        return torch.ones(teacher_logits.shape[:-1], dtype=torch.bool,
                          device=teacher_logits.device)
    return filter_scores(teacher_logits, student_logits, kind, target) > omega


@torch.no_grad()
def random_mask(keep: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """C2KD Table 2's "+Random": as many samples kept per batch as ``keep`` holds (True
    entries along the last dimension, per leading index), at positions drawn uniformly at
    random (from ``generator``, a CPU generator, when given).  (..., batch) bool -> same shape;
    ``random_mask(m).sum(-1) == m.sum(-1)``."""
    count = keep.sum(-1, keepdim=True)
    noise = torch.rand(keep.shape, generator=generator).to(keep.device)
    ranks = noise.argsort(-1).argsort(-1)  # a uniformly random permutation of 0..batch-1
    return ranks < count


def masked_mean(values: torch.Tensor, mask: torch.Tensor, average: str = "selected"
                ) -> torch.Tensor:
    """The per-sample ``values`` (..., batch) where ``mask`` (..., batch; bool) holds, averaged
    over the kept samples ('selected'; 0 when none is kept) or over the whole batch ('batch':
    the dropped ones count as 0).  -> (...)"""
    m = mask.to(values.dtype)
    if average == "batch":
        return (m * values).mean(-1)
    return (m * values).sum(-1) / m.sum(-1).clamp_min(1.0)
