"""C2KD's proxy head (Eq. 5) as a registered model over another network's features.

The layers are :class:`cmkd.distill.c2kd.ProxyHead`'s (global average pool -> 1x1 conv -> BN ->
LeakyReLU(0.1) -> linear), taken as they are; this wrapper only adds the Backbone contract, so a
method can build a proxy by name from a backbone's ``feature_shapes`` (the official code puts it
on ResNet-18's layer3: ``build("proxy_head", in_channels=256, classes=C)``) and read its hidden
features (``pooled``) like any model's.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cmkd.distill.c2kd import ProxyHead as _ProxyHead
from cmkd.models.base import Backbone, check_input, check_option
from cmkd.models.registry import register


class ProxyHead(Backbone):
    """Proxy head on (batch, C, H, W) feature maps or (batch, C) pooled features.

    Features: ``pooled`` (batch, hidden): the 1x1 conv -> BN -> LeakyReLU output, the
    classifier's input.  Blocks: adapt, classifier.
    """

    def __init__(self, in_channels: int, classes: int, hidden: int | None = None, *,
                 modality: str = "features"):
        super().__init__()
        check_option("proxy_head", "in_channels", in_channels, low=1)
        check_option("proxy_head", "classes", classes, low=1)
        if hidden is not None:
            check_option("proxy_head", "hidden", hidden, low=1)
        head = _ProxyHead(in_channels, classes, hidden)
        self.in_channels = in_channels
        self.adapt, self.classifier = head.adapt, head.fc
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {"pooled": (head.fc.in_features,)}

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
