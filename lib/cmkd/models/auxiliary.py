"""The modules distillation methods train beside the student (the losses that read them are in
:mod:`cmkd.distill`): FitNet's hint regressor and Review KD's attention-based fusion.  C2KD's
proxies and SHAKE's shadow head are :class:`cmkd.models.proxy.ProxyHead`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hint_regressor(student_dim: int, teacher_dim: int, spatial: bool = False) -> nn.Module:
    """FitNets' regressor (Romero et al., ICLR 2015) from a student layer to the teacher's hint
    layer: a linear map for (batch, dim) features, a 1x1 convolution followed by batch norm for
    (batch, channels, H, W) feature maps."""
    if spatial:
        return nn.Sequential(nn.Conv2d(student_dim, teacher_dim, 1, bias=False),
                             nn.BatchNorm2d(teacher_dim))
    return nn.Linear(student_dim, teacher_dim)


class ABF(nn.Module):
    """Review KD's attention-based fusion (Chen et al., CVPR 2021) of one student stage with the
    fused map of the deeper stages: project (1x1 conv + BN), fuse with the upsampled deeper map
    by two per-pixel attention maps, project to the teacher's channels (3x3 conv + BN)."""

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
    """Knowledge review over the student's stages (listed shallow to deep): one :class:`ABF`
    per stage, applied deep to shallow; gives one map per stage in the teacher's channels."""

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
