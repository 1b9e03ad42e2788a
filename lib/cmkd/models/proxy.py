"""C2KD's proxy head (Eq. 5): global average pool -> 1x1 conv -> BN -> LeakyReLU(0.1) -> linear,
over another network's features; SHAKE's shadow head has the same structure (C2KD says its
proxies follow SHAKE's).

:class:`ProxyHead` is a registered model (``build("proxy_head", in_channels=256, classes=C)``: the
official code puts it on ResNet-18's layer3) that takes (batch, C, H, W) maps or (batch, C) pooled
features and exposes its hidden features as ``pooled``.  :class:`BatchedProxyHead` is its stacked
form for R runs on (R, n, C) pooled features (``cmkd.models.stacked("proxy_head", seeds, ...)``,
:mod:`cmkd.models.batched`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option
from cmkd.models.batched import BatchedBatchNorm, BatchedLinear
from cmkd.models.registry import register, register_stacked


class ProxyHead(Backbone):
    """Proxy (or shadow) head on (batch, C, H, W) feature maps or (batch, C) pooled features.

    Features: ``pooled`` (batch, hidden): the 1x1 conv -> BN -> LeakyReLU output, the
    classifier's input.  Blocks: adapt, classifier.  ``hidden`` defaults to ``in_channels``.
    """

    def __init__(self, in_channels: int, classes: int, hidden: int | None = None, *,
                 modality: str = "features"):
        super().__init__()
        check_option("proxy_head", "in_channels", in_channels, low=1)
        check_option("proxy_head", "classes", classes, low=1)
        if hidden is not None:
            check_option("proxy_head", "hidden", hidden, low=1)
        hidden = hidden or in_channels
        self.in_channels = in_channels
        self.adapt = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False),
                                   nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1))
        self.classifier = nn.Linear(hidden, classes)
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {"pooled": (hidden,)}

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c = self.in_channels
        check_input(x, "proxy_head", self.modalities[0], f"(batch, {c}, H, W) or (batch, {c})",
                    (2, 4), channels=c)
        if x.dim() == 4:
            x = x.mean((2, 3))
        return OrderedDict(pooled=self.adapt(x[:, :, None, None]).flatten(1))

    def blocks(self) -> list[nn.Module]:
        return [self.adapt, self.classifier]


@register("proxy_head")
def proxy_head(in_channels: int, classes: int, hidden: int | None = None, *,
               modality: str = "features") -> ProxyHead:
    """C2KD's proxy head over ``in_channels`` features; see :class:`ProxyHead`."""
    return ProxyHead(in_channels, classes, hidden, modality=modality)


class BatchedProxyHead(nn.Sequential):
    """:class:`ProxyHead` for R runs on (R, n, C) pooled features: a linear map without bias
    (the 1x1 conv on pooled features) -> BN -> LeakyReLU(0.1) -> linear; run r's layers are
    seeded from ``seeds[r]`` (the output layer from ``seeds[r] + 1``)."""

    def __init__(self, in_features: int, hidden: int, classes: int, seeds: Sequence[int]):
        super().__init__(BatchedLinear(in_features, hidden, seeds, bias=False),
                         BatchedBatchNorm(len(seeds), hidden), nn.LeakyReLU(0.1),
                         BatchedLinear(hidden, classes, [s + 1 for s in seeds]))


@register_stacked("proxy_head")
def stacked_proxy_head(seeds: Sequence[int], in_channels: int, classes: int,
                       hidden: int | None = None, *, modality: str = "features"
                       ) -> BatchedProxyHead:
    """R = len(seeds) proxy heads on pooled features (:class:`BatchedProxyHead`)."""
    check_option("proxy_head", "in_channels", in_channels, low=1)
    check_option("proxy_head", "classes", classes, low=1)
    return BatchedProxyHead(in_channels, hidden or in_channels, classes, seeds)


class DenseProxyHead(Backbone):
    """The proxy (shadow) head of a segmentation network, per pixel: 1x1 conv -> BN ->
    LeakyReLU(0.1) -> 1x1 conv classifier on a (batch, C, h, w) map, giving (batch, classes, h,
    w) logits (:class:`ProxyHead` without the global pooling: C2KD's proxies and SHAKE's shadow
    head on a dense network such as :class:`cmkd.models.deeplab.DeepLabV3Plus`, whose method
    upsamples them to the label size).  Features: ``hidden`` (the map) and ``pooled``."""

    dense = True

    def __init__(self, in_channels: int, classes: int, hidden: int | None = None, *,
                 modality: str = "features"):
        super().__init__()
        check_option("dense_proxy_head", "in_channels", in_channels, low=1)
        check_option("dense_proxy_head", "classes", classes, low=1)
        hidden = hidden or in_channels
        self.in_channels = in_channels
        self.adapt = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False),
                                   nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1))
        self.classifier = nn.Conv2d(hidden, classes, 1)
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {"hidden": (hidden, None, None), "pooled": (hidden,)}

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        check_input(x, "dense_proxy_head", self.modalities[0],
                    f"(batch, {self.in_channels}, h, w)", 4, channels=self.in_channels)
        h = self.adapt(x)
        return OrderedDict(hidden=h, pooled=h.mean((2, 3)))

    def forward_features(self, x: torch.Tensor):
        feats = self.features(x)
        return self.classifier(feats["hidden"]), feats

    def blocks(self) -> list[nn.Module]:
        return [self.adapt, self.classifier]


@register("dense_proxy_head")
def dense_proxy_head(in_channels: int, classes: int, hidden: int | None = None, *,
                     modality: str = "features") -> DenseProxyHead:
    """Per-pixel proxy head over ``in_channels`` maps; see :class:`DenseProxyHead`."""
    return DenseProxyHead(in_channels, classes, hidden, modality=modality)
