"""RGB-D teachers of MFH's NYU Depth V2 experiments (Tables 1 right, 3, 6), on the DeepLab V3+
ResNet-18 pieces of :mod:`cmkd.models.deeplab`.  Each keeps the defining property of the network
it stands for; none is a copy of the original code.

- ``deeplabv3plus_sagate_resnet18`` (SA-Gate, Chen et al., ECCV 2020): *separate* RGB and depth
  encoders (their own weights and stems), joined after every stage by a gate: feature separation
  (each stream recalibrated by channel weights computed from both streams' pooled features), then
  aggregation by per-pixel softmax gates over the two streams (``fused = g_rgb * rgb' + g_d *
  d'``); the fused map is fed back into both streams (``(x + fused) / 2``) before the next stage.
  The DeepLab V3+ head runs on the fused stage-4 and stage-1 maps.
- ``deeplabv3plus_cen_resnet18`` (CEN, Wang et al., NeurIPS 2020): *one* set of convolution
  weights for both modalities, with a batch norm per modality, and channel exchanging: after the
  first BN of every residual block, the channels a modality's BN scales least (the
  ``exchange_ratio`` share with the smallest ``|gamma|`` within the half of the channels assigned
  to that modality) are replaced by the other modality's channels.  CEN exchanges where ``|gamma|``
  falls below a threshold after an L1 penalty on those scales has pushed them down; without a
  loss term to hold that penalty here, the ranking by ``|gamma|`` picks a fixed share instead.
  Depth enters through the shared 3-channel stem (the depth map repeated over three channels, as
  CEN feeds HHA images).  The head is shared too (per-modality BN); the output is the average of
  the two streams' logits weighted by a learned softmax pair (CEN's ensemble).
- ``deeplabv3plus_general_resnet18`` (MFH Sec. 5.3's modality-general teacher, after Omnivore,
  Girdhar et al., CVPR 2022): *one* DeepLab V3+ for RGB and depth alike; depth reaches the shared
  3-channel stem through its own learned 1x1 map (Omnivore's modality-specific input projection).
  In training every batch holds both modalities: the samples at even positions are seen as RGB,
  those at odd positions as depth (the loader shuffles, so each scene meets both over the
  epochs, at a unimodal network's cost).  In evaluation, and when it teaches, it sees
  ``eval_modality`` only (depth in MFH Table 3).

All three take ``(rgb, depth)``: rgb (batch, 3, H, W), depth (batch, 1, H, W).  Features as
:class:`cmkd.models.deeplab.DeepLabV3Plus` (``layer1`` .. ``layer4``, ``aspp``, ``decoder``,
``pooled``); ``dense = True``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option, map_shape
from cmkd.models.deeplab import _resnet18_encoder, build_head, decode
from cmkd.models.registry import register

MODALITIES = ("rgb", "depth")


def _check(name: str, rgb: torch.Tensor, depth: torch.Tensor) -> None:
    check_input(rgb, name, "rgb", "(batch, 3, H, W)", 4, channels=3, min_size=16)
    check_input(depth, name, "depth", "(batch, 1, H, W)", 4, channels=1, min_size=16)
    if rgb.shape[0] != depth.shape[0] or rgb.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f"model {name!r}: rgb {tuple(rgb.shape)} and depth "
                         f"{tuple(depth.shape)} must share batch and spatial size")


class _RGBDBase(Backbone):
    dense = True

    def _setup(self, name: str, classes: int, chans: list[int], head_width: int,
               atrous_rates) -> None:
        check_option(name, "classes", classes, low=1)
        check_option(name, "head_width", head_width, low=4)
        self.name, self.classes, self.modalities = name, classes, MODALITIES
        self.aspp, self.low_proj, self.fuse, self.classifier = build_head(
            chans, head_width, classes, atrous_rates)
        self.feature_shapes = {f"layer{i + 1}": map_shape(c) for i, c in enumerate(chans)}
        self.feature_shapes.update(aspp=map_shape(head_width), decoder=map_shape(head_width),
                                   pooled=(head_width,))

    def forward_features(self, rgb: torch.Tensor, depth: torch.Tensor):
        self._check_count((rgb, depth))
        feats = self.features(rgb, depth)
        logits = self.classifier(feats["decoder"])
        return F.interpolate(logits, size=rgb.shape[-2:], mode="bilinear",
                             align_corners=False), feats

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"model {self.name!r} classifies pixels, not pooled features: use "
                        f"forward / forward_features")


# ----------------------------------------------------------------------------- SA-Gate
class SAGate(nn.Module):
    """Separation (cross-modal channel recalibration) and aggregation (per-pixel softmax gates)
    of two streams with ``channels`` channels each; returns (rgb', depth', fused)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.recalibrate = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                         nn.Linear(hidden, 2 * channels))
        self.gate = nn.Conv2d(2 * channels, 2, 1)

    def forward(self, r: torch.Tensor, d: torch.Tensor):
        both = torch.cat([r, d], 1)
        w = torch.sigmoid(self.recalibrate(both.mean((2, 3))))[..., None, None]
        wr, wd = w.chunk(2, 1)
        r, d = r + r * wr, d + d * wd      # each stream refined by what both streams carry
        g = torch.softmax(self.gate(torch.cat([r, d], 1)), 1)
        return r, d, g[:, :1] * r + g[:, 1:] * d


class SAGateDeepLab(_RGBDBase):
    """DeepLab V3+ on two ResNet-18 encoders (RGB, depth) joined by SA-Gates after every stage;
    see the module docstring."""

    def __init__(self, classes: int, *, width: int = 64, head_width: int = 256,
                 atrous_rates: tuple = (6, 12, 18)):
        super().__init__()
        name = "deeplabv3plus_sagate_resnet18"
        check_option(name, "width", width, low=1)
        self.rgb_stem, rgb_stages, chans = _resnet18_encoder(3, width)
        self.depth_stem, depth_stages, _ = _resnet18_encoder(1, width)
        self.rgb_layers, self.depth_layers = nn.ModuleList(rgb_stages), nn.ModuleList(
            depth_stages)
        self.gates = nn.ModuleList(SAGate(c) for c in chans)
        self._setup(name, classes, chans, head_width, atrous_rates)

    def features(self, rgb: torch.Tensor, depth: torch.Tensor) -> OrderedDict:
        _check(self.name, rgb, depth)
        feats = OrderedDict()
        r, d = self.rgb_stem(rgb), self.depth_stem(depth)
        for i, (lr, ld, gate) in enumerate(zip(self.rgb_layers, self.depth_layers, self.gates)):
            r, d, fused = gate(lr(r), ld(d))
            feats[f"layer{i + 1}"] = fused
            r, d = (r + fused) / 2, (d + fused) / 2
        decode(self, feats)
        return feats

    def blocks(self) -> list[nn.Module]:
        return [nn.ModuleList([self.rgb_stem, self.depth_stem]),
                *[nn.ModuleList([a, b, g]) for a, b, g in zip(self.rgb_layers,
                                                              self.depth_layers, self.gates)],
                self.aspp, nn.ModuleList([self.low_proj, self.fuse]), self.classifier]


# ----------------------------------------------------------------------------- CEN
class ModalBatchNorm(nn.Module):
    """A batch norm per modality over a batch that stacks the modalities (first half RGB, second
    half depth); with ``exchange``, CEN's channel exchanging after it (module docstring)."""

    def __init__(self, channels: int, exchange: bool = False, exchange_ratio: float = 0.25):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in MODALITIES)
        self.exchange, self.ratio = exchange, exchange_ratio
        half = channels // 2
        # the channels whose scales decide each modality's exchange (CEN: disjoint halves)
        self.register_buffer("owned", torch.stack([torch.arange(channels) < half,
                                                   torch.arange(channels) >= half]),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [bn(p) for bn, p in zip(self.bns, x.chunk(len(self.bns), 0))]
        if self.exchange and self.ratio > 0:
            a, b = parts
            out = []
            for k, (mine, other) in enumerate(((a, b), (b, a))):
                swap = self._weakest(k)
                out.append(torch.where(swap[None, :, None, None], other, mine))
            parts = out
        return torch.cat(parts, 0)

    def _weakest(self, k: int) -> torch.Tensor:
        """Channels of modality ``k`` replaced by the other's: within its owned half, the
        ``ratio`` share with the smallest |gamma| of its BN."""
        owned = self.owned[k]
        n = int(self.ratio * int(owned.sum()))
        swap = torch.zeros_like(owned)
        if n == 0:
            return swap
        scale = self.bns[k].weight.detach().abs().masked_fill(~owned, float("inf"))
        swap[scale.topk(n, largest=False).indices] = True
        return swap


def _modal_bn(module: nn.Module, exchange_ratio: float) -> None:
    """Replace every BatchNorm2d of ``module`` by a :class:`ModalBatchNorm` in place (exchanging
    after the first BN of each residual block)."""
    from torchvision.models.resnet import BasicBlock

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            exchange = isinstance(module, BasicBlock) and name == "bn1"
            setattr(module, name, ModalBatchNorm(child.num_features, exchange, exchange_ratio))
        else:
            _modal_bn(child, exchange_ratio)


class CENDeepLab(_RGBDBase):
    """One DeepLab V3+ ResNet-18 shared by RGB and depth except its batch norms, with channel
    exchanging; see the module docstring."""

    def __init__(self, classes: int, *, width: int = 64, head_width: int = 256,
                 atrous_rates: tuple = (6, 12, 18), exchange_ratio: float = 0.25):
        super().__init__()
        name = "deeplabv3plus_cen_resnet18"
        check_option(name, "width", width, low=1)
        if not 0 <= exchange_ratio <= 1:
            raise ValueError(f"model {name!r}: option 'exchange_ratio' must be in [0, 1], got "
                             f"{exchange_ratio!r}")
        self.stem, stages, chans = _resnet18_encoder(3, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._setup(name, classes, chans, head_width, atrous_rates)
        self.ensemble = nn.Parameter(torch.zeros(len(MODALITIES)))
        for m in (self.stem, *stages, self.aspp, self.low_proj, self.fuse):
            _modal_bn(m, exchange_ratio)

    def features(self, rgb: torch.Tensor, depth: torch.Tensor) -> OrderedDict:
        _check(self.name, rgb, depth)
        h = self.stem(torch.cat([rgb, depth.expand(-1, 3, -1, -1)], 0))
        both = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            h = layer(h)
            both[f"layer{i}"] = h
        decode(self, both)
        both.pop("pooled")
        w = torch.softmax(self.ensemble, 0)
        feats = OrderedDict((k, (lambda a, b: w[0] * a + w[1] * b)(*v.chunk(2, 0)))
                            for k, v in both.items())
        feats["streams"] = both["decoder"]     # (2 x batch) decoder maps, for the classifier
        feats["pooled"] = feats["decoder"].mean((2, 3))
        return feats

    def forward_features(self, rgb: torch.Tensor, depth: torch.Tensor):
        self._check_count((rgb, depth))
        feats = self.features(rgb, depth)
        a, b = self.classifier(feats.pop("streams")).chunk(2, 0)
        w = torch.softmax(self.ensemble, 0)
        logits = w[0] * a + w[1] * b          # CEN's ensemble of the two streams' predictions
        return F.interpolate(logits, size=rgb.shape[-2:], mode="bilinear",
                             align_corners=False), feats

    def blocks(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.aspp,
                nn.ModuleList([self.low_proj, self.fuse]), self.classifier]


# ----------------------------------------------------------------------------- general
class GeneralDeepLab(_RGBDBase):
    """One DeepLab V3+ ResNet-18 trained on RGB and depth batches alike (MFH Table 3's
    modality-general teacher); see the module docstring."""

    def __init__(self, classes: int, *, width: int = 64, head_width: int = 256,
                 atrous_rates: tuple = (6, 12, 18), eval_modality: str = "depth"):
        super().__init__()
        name = "deeplabv3plus_general_resnet18"
        check_option(name, "width", width, low=1)
        check_option(name, "eval_modality", eval_modality, choices=MODALITIES)
        self.eval_modality = eval_modality
        self.depth_in = nn.Conv2d(1, 3, 1)     # depth's own input projection (Omnivore)
        self.stem, stages, chans = _resnet18_encoder(3, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._setup(name, classes, chans, head_width, atrous_rates)

    def mixed_input(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """The network's 3-channel input: in training RGB at even positions, depth at odd ones;
        in evaluation ``eval_modality`` everywhere."""
        d = self.depth_in(depth)
        if not self.training:
            return rgb if self.eval_modality == "rgb" else d
        odd = (torch.arange(rgb.shape[0], device=rgb.device) % 2 == 1)[:, None, None, None]
        return torch.where(odd, d, rgb)

    def features(self, rgb: torch.Tensor, depth: torch.Tensor) -> OrderedDict:
        _check(self.name, rgb, depth)
        h = self.stem(self.mixed_input(rgb, depth))
        feats = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            h = layer(h)
            feats[f"layer{i}"] = h
        decode(self, feats)
        return feats

    def blocks(self) -> list[nn.Module]:
        return [nn.ModuleList([self.depth_in, self.stem]), self.layer1, self.layer2,
                self.layer3, self.layer4, self.aspp, nn.ModuleList([self.low_proj, self.fuse]),
                self.classifier]


@register("deeplabv3plus_sagate_resnet18")
def deeplabv3plus_sagate_resnet18(classes: int, *, width: int = 64, head_width: int = 256,
                                  atrous_rates: tuple = (6, 12, 18)) -> SAGateDeepLab:
    """SA-Gate-like RGB-D DeepLab V3+ (MFH Table 6); see :class:`SAGateDeepLab`."""
    return SAGateDeepLab(classes, width=width, head_width=head_width,
                         atrous_rates=tuple(atrous_rates))


@register("deeplabv3plus_cen_resnet18")
def deeplabv3plus_cen_resnet18(classes: int, *, width: int = 64, head_width: int = 256,
                               atrous_rates: tuple = (6, 12, 18), exchange_ratio: float = 0.25
                               ) -> CENDeepLab:
    """CEN-like RGB-D DeepLab V3+ (MFH Table 6); see :class:`CENDeepLab`."""
    return CENDeepLab(classes, width=width, head_width=head_width,
                      atrous_rates=tuple(atrous_rates), exchange_ratio=exchange_ratio)


@register("deeplabv3plus_general_resnet18")
def deeplabv3plus_general_resnet18(classes: int, *, width: int = 64, head_width: int = 256,
                                   atrous_rates: tuple = (6, 12, 18),
                                   eval_modality: str = "depth") -> GeneralDeepLab:
    """Modality-general RGB/D DeepLab V3+ (MFH Table 3); see :class:`GeneralDeepLab`."""
    return GeneralDeepLab(classes, width=width, head_width=head_width,
                          atrous_rates=tuple(atrous_rates), eval_modality=eval_modality)
