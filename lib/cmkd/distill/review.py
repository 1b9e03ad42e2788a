"""Review KD (Chen et al., CVPR 2021): knowledge review with attention-based fusion (ABF) and the
hierarchical context loss (HCL).

The student's feature maps, from the deepest to the shallowest, pass through ABF modules: each
projects its stage (1x1 conv + BN), fuses it with the running fused map of the deeper stages
(upsampled) by two per-pixel attention maps, and projects the result to the teacher's channels
(3x3 conv + BN).  Each fused map is compared with the teacher's map of the same stage by HCL: the
mean squared error at full size and after average pooling to 4x4, 2x2 and 1x1, weighted 1, 1/2,
1/4, 1/8 and normalised by the total weight; a pooled level is used only when it is smaller
than the map's height (the official ``hcl``: ``if l >= h: continue``; for a non-square map the
height decides, not the width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


class ABF(nn.Module):
    """Attention-based fusion of one student stage with the fused map of the deeper stages."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                     nn.BatchNorm2d(mid_channels))
        self.output = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1,
                                              bias=False), nn.BatchNorm2d(out_channels))
        self.attention = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid())
                          if fuse else None)

    def forward(self, x: torch.Tensor, deeper: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output in the teacher's channels, fused map passed to the next stage)."""
        x = self.project(x)
        if self.attention is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            att = self.attention(torch.cat((x, deeper), 1))
            x = x * att[:, :1] + deeper * att[:, 1:2]
        return self.output(x), x


class ReviewFusion(nn.Module):
    """Knowledge review over the student's stages (listed shallow to deep)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int],
                 mid_channels: int):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError("need as many teacher stages as student stages")
        n = len(student_channels)
        self.abfs = nn.ModuleList(
            ABF(s, mid_channels, t, fuse=i < n - 1)
            for i, (s, t) in enumerate(zip(student_channels, teacher_channels)))

    def forward(self, student_features: list[torch.Tensor]) -> list[torch.Tensor]:
        out, deeper = [], None
        for abf, f in zip(reversed(self.abfs), reversed(student_features)):
            y, deeper = abf(f, deeper)
            out.insert(0, y)
        return out


def review_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], *,
                fusion: ReviewFusion, reduction: str = "mean",
                detach_teacher: bool = True) -> torch.Tensor:
    """HCL between the review-fused student maps and the teacher's maps.

    student : the student's (batch, C_s, H, W) maps, shallow to deep; teacher : the teacher's
    (batch, C_t, H, W) maps of the same stages; fusion : the :class:`ReviewFusion` (trained with
    the student).  Returns a 0-d tensor.
    """
    return hcl_loss(fusion(student), teacher, reduction=reduction,
                    detach_teacher=detach_teacher)
