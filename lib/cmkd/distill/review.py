"""Review KD (Chen et al., CVPR 2021): knowledge review with attention-based fusion (ABF) and the
hierarchical context loss (HCL).

The student's feature maps, from the deepest to the shallowest, pass through ABF modules
(:class:`cmkd.models.auxiliary.ReviewFusion`, the method's module; this file holds the loss): each
projects its stage (1x1 conv + BN), fuses it with the running fused map of the deeper stages
(upsampled) by two per-pixel attention maps, and projects the result to the teacher's channels
(3x3 conv + BN).  Each fused map is compared with the teacher's map of the same stage by HCL: the
mean squared error at full size and after average pooling to 4x4, 2x2 and 1x1, weighted 1, 1/2,
1/4, 1/8 and normalised by the total weight; a pooled level is used only when it is smaller
than the map's height (the official ``hcl``: ``if l >= h: continue``; for a non-square map the
height decides, not the width).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cmkd.distill._shapes import check_reduction, maybe_detach

HCL_LEVELS = (4, 2, 1)


def hcl_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], *,
             reduction: str = "mean", detach_teacher: bool = True) -> torch.Tensor:
    """Hierarchical context loss summed over stages.

    Parameters
    ----------
    student, teacher : lists of (batch, C, H, W) maps, one per stage, equal shapes stage by
        stage (the student's already fused and projected to the teacher's channels).
    reduction : 'mean' only (each level is a mean squared error over all its elements).
    detach_teacher : detach the teacher maps (default).

    Returns
    -------
    0-d tensor.
    """
    check_reduction(reduction, ("mean",))
    if len(student) != len(teacher):
        raise ValueError(f"need one teacher feature map per student feature map, got "
                         f"{len(student)} student and {len(teacher)} teacher maps")
    total = student[0].new_zeros(())
    for k, (fs, ft) in enumerate(zip(student, teacher)):
        if fs.dim() != 4:
            raise ValueError(f"student map {k} must have shape (batch, C, H, W), got "
                             f"{tuple(fs.shape)}")
        if fs.shape != ft.shape:
            raise ValueError(f"teacher map {k} must have the student map's shape "
                             f"{tuple(fs.shape)} (batch, C, H, W), got {tuple(ft.shape)}")
        ft = maybe_detach(ft, detach_teacher)
        height = fs.shape[-2]
        loss, weight, norm = F.mse_loss(fs, ft), 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= height:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size),
                                              F.adaptive_avg_pool2d(ft, size))
            norm += weight
        total = total + loss / norm
    return total


def review_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], *,
                fusion: Callable[[list[torch.Tensor]], list[torch.Tensor]],
                reduction: str = "mean",
                detach_teacher: bool = True) -> torch.Tensor:
    """HCL between the review-fused student maps and the teacher's maps.

    student : the student's (batch, C_s, H, W) maps, shallow to deep; teacher : the teacher's
    (batch, C_t, H, W) maps of the same stages; fusion : the fusion module
    (:class:`cmkd.models.auxiliary.ReviewFusion`, trained with the student).  Returns a 0-d tensor.
    """
    return hcl_loss(fusion(student), teacher, reduction=reduction,
                    detach_teacher=detach_teacher)
