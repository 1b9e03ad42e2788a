"""Relational knowledge distillation (Park et al., CVPR 2019): distance- and angle-wise losses.

Distance: pairwise Euclidean distances of the embeddings in a batch, each normalised by the mean
distance over distinct pairs, compared with the Huber (smooth L1) loss.  Angle: for every triple
(i, j, k) the cosine of the angle at j between ``e_i - e_j`` and ``e_k - e_j``, compared with the
Huber loss.  The KD libraries weight them 25 and 50.

Every function takes (batch, dim) embeddings, or (runs, batch, dim) with ``runs=True``; the
student's and teacher's dims may differ.  The losses are relations over the batch, so they have
no per-sample value: ``reduction='mean'`` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill._shapes import check_features, check_reduction, maybe_detach


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    d = (e.unsqueeze(-2) - e.unsqueeze(-3)).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    n = e.shape[-2]
    off = ~torch.eye(n, dtype=torch.bool, device=e.device)
    d = d * off
    mean = d.sum((-2, -1), keepdim=True) / (n * (n - 1))
    return d / mean


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(-3) - e.unsqueeze(-2), p=2, dim=-1)  # [j, i] = e_i - e_j
    return diff @ diff.transpose(-2, -1)  # [j, i, k] = cos angle at j


def _check(student: torch.Tensor, teacher: torch.Tensor, runs: bool, reduction: str) -> None:
    check_features(student, "student embeddings", runs=runs, maps=False)
    check_features(teacher, "teacher embeddings", runs=runs, maps=False)
    check_reduction(reduction, ("mean",))
    if student.shape[:-1] != teacher.shape[:-1] or student.shape[-2] < 3:
        raise ValueError(f"student and teacher embeddings need the same leading "
                         f"(batch >= 3) dimensions, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor, *, reduction: str = "mean",
                      detach_teacher: bool = True, runs: bool = False) -> torch.Tensor:
    """Distance-wise RKD: () or (runs,)."""
    _check(student, teacher, runs, reduction)
    ds = _pairwise_distances(student)
    dt = _pairwise_distances(maybe_detach(teacher, detach_teacher))
    return F.smooth_l1_loss(ds, dt, reduction="none").mean((-2, -1))


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor, *, reduction: str = "mean",
                   detach_teacher: bool = True, runs: bool = False) -> torch.Tensor:
    """Angle-wise RKD over all triples: () or (runs,)."""
    _check(student, teacher, runs, reduction)
    a_s, a_t = _angles(student), _angles(maybe_detach(teacher, detach_teacher))
    return F.smooth_l1_loss(a_s, a_t, reduction="none").mean((-3, -2, -1))


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, *, distance_weight: float = 25.0,
             angle_weight: float = 50.0, reduction: str = "mean", detach_teacher: bool = True,
             runs: bool = False) -> torch.Tensor:
    """``distance_weight * distance + angle_weight * angle`` (defaults 25, 50): () or (runs,)."""
    kw = dict(reduction=reduction, detach_teacher=detach_teacher, runs=runs)
    return (distance_weight * rkd_distance_loss(student, teacher, **kw)
            + angle_weight * rkd_angle_loss(student, teacher, **kw))
