"""CIRKD (Yang et al., CVPR 2022, "Cross-Image Relational Knowledge Distillation for Semantic
Segmentation"; C2KD Table 4's segmentation baseline): the student mimics the teacher's
*relations between pixels of different images*, not only each pixel's own prediction.

Pixel embeddings are L2-normalised over channels.  Three relational terms:

- mini-batch pixel-to-pixel (:func:`minibatch_pixel_loss`): for every ordered pair of images
  (a, b) of the batch, the similarity of each pixel i of a to all pixels j of b,
  ``S_ab[i, j] = f_a,i . f_b,j / tau``, row-softmaxed; the KL from the teacher's rows to the
  student's, averaged over the rows and over the B^2 pairs (the official
  ``CriterionMiniBatchCrossImagePair``; tau = 0.1).  Student and teacher may differ in width:
  each side relates its own embeddings.
- memory pixel-to-pixel and pixel-to-region (:func:`anchor_relation_loss`): each labelled
  student pixel (projected to the teacher's width) and the same teacher pixel are compared with
  a bank of *teacher* embeddings from earlier batches (pixels, or regions = the mean embedding
  of one class in one image, :func:`region_embeddings`); the KL between the teacher's and the
  student's softmax over the bank, at temperature tau (then a KD temperature, 1).

The method (:class:`cmkd.methods.cirkd.CIRKD`) adds the per-pixel KD and keeps the banks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill import _softmax as rows
from cmkd.metrics.task import IGNORE_INDEX


def _kl_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) of each row (last dimension)."""
    log_q = rows.log_softmax(student_logits)
    log_p = rows.log_softmax(teacher_logits)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def minibatch_pixel_loss(student: torch.Tensor, teacher: torch.Tensor, *,
                         temperature: float = 0.1, detach_teacher: bool = True) -> torch.Tensor:
    """Mini-batch cross-image pixel-to-pixel relation KD.

    student : (batch, Cs, h, w) feature maps; teacher : (batch, Ct, h, w) (same batch and size).
    Returns the KL averaged over the pixels of each image and over all B^2 image pairs.
    """
    if student.dim() != 4 or teacher.dim() != 4 or student.shape[0] != teacher.shape[0] \
            or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(f"student and teacher features must be (batch, C, h, w) maps of the "
                         f"same batch and size, got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if detach_teacher:
        teacher = teacher.detach()
    s = F.normalize(student.flatten(2), dim=1).transpose(1, 2)  # (B, n, C)
    t = F.normalize(teacher.flatten(2), dim=1).transpose(1, 2)
    s_sim = torch.einsum("aic,bjc->abij", s, s) / temperature   # (B, B, n, n)
    t_sim = torch.einsum("aic,bjc->abij", t, t) / temperature
    return _kl_rows(s_sim, t_sim).mean()


def anchor_relation_loss(student: torch.Tensor, teacher: torch.Tensor, anchors: torch.Tensor,
                         *, temperature: float = 0.1, kd_temperature: float = 1.0,
                         detach_teacher: bool = True) -> torch.Tensor:
    """Relation KD against a bank of teacher embeddings.

    student, teacher : (n, D) pixel embeddings (the student projected to the teacher's width D);
    anchors : (m, D) teacher embeddings (pixels or regions of earlier batches).
    ``KD_T^2 * mean_i KL(softmax(t_i . A / (tau KD_T)) || softmax(s_i . A / (tau KD_T)))``,
    embeddings and anchors L2-normalised.
    """
    if student.dim() != 2 or student.shape != teacher.shape or anchors.dim() != 2 \
            or anchors.shape[1] != student.shape[1]:
        raise ValueError(f"expected student and teacher (n, D) and anchors (m, D), got "
                         f"{tuple(student.shape)}, {tuple(teacher.shape)}, "
                         f"{tuple(anchors.shape)}")
    if temperature <= 0 or kd_temperature <= 0:
        raise ValueError(f"temperatures must be > 0, got {temperature}, {kd_temperature}")
    if detach_teacher:
        teacher = teacher.detach()
    a = F.normalize(anchors.detach(), dim=1)
    scale = temperature * kd_temperature
    s = F.normalize(student, dim=1) @ a.T / scale
    t = F.normalize(teacher, dim=1) @ a.T / scale
    return _kl_rows(s, t).mean() * kd_temperature ** 2


def labels_at(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(batch, H, W) labels at a feature map's (h, w) by nearest-neighbour sampling."""
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def region_embeddings(features: torch.Tensor, target: torch.Tensor, classes: int,
                      ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The mean embedding of each class present in each image: features (batch, C, h, w),
    target (batch, h, w) -> (regions, C), regions ordered by image then class."""
    b, c = features.shape[:2]
    y = target.flatten(1)
    valid = (y != ignore_index) & (y >= 0) & (y < classes)
    onehot = F.one_hot(torch.where(valid, y, 0), classes).to(features.dtype)
    onehot = onehot * valid[..., None].to(features.dtype)            # (b, n, K)
    sums = torch.einsum("bcn,bnk->bkc", features.flatten(2), onehot)  # (b, K, C)
    counts = onehot.sum(1)                                            # (b, K)
    present = counts > 0
    return (sums[present] / counts[present][:, None])


__all__ = ["anchor_relation_loss", "labels_at", "minibatch_pixel_loss", "region_embeddings"]
