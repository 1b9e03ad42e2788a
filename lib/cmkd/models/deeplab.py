"""DeepLab V3+ (Chen et al., ECCV 2018) with ResNet-18 and MobileNetV2 encoders: the segmentation
networks of C2KD Table 4 (pairs RN18/RN18, RN18/MNV2, MNV2/RN18) and MFH Tables 1, 3, 6.

Built from torchvision pieces, never downloading anything:

- encoder: torchvision's ``BasicBlock`` stacked as ResNet-18 ([2, 2, 2, 2]; at ``width=64`` its
  parameters have the names and shapes of ``torchvision.models.resnet18``) or
  ``torchvision.models.mobilenet_v2(weights=None, width_mult=...)``'s ``features``.  The last
  stage runs at stride 1 with dilation 2 (output stride 16, as DeepLab V3+ trains).
- ASPP: ``torchvision.models.segmentation.deeplabv3.ASPP`` (rates 6, 12, 18 at output stride
  16) on the encoder's last map.
- decoder (V3+, written here): the stride-4 low-level map through a 1x1 conv -> BN -> ReLU
  (48 channels at full width), concatenated with the upsampled ASPP output, two 3x3 conv -> BN ->
  ReLU, a 1x1 classifier, bilinear upsampling to the input size.
- depth input: ``in_channels=1`` replaces the stem convolution (its own stem; Kaiming init).

Widths: ``width`` (ResNet: channels of the first stage, 64 = ResNet-18) or ``width_mult``
(MobileNetV2) and ``head_width`` (ASPP and decoder channels, 256 in the paper) shrink the
network for the CPU profiles.  ``weights``: the path of a user-supplied ImageNet state dict
(torchvision's ``resnet18`` / ``mobilenet_v2`` checkpoint) loaded into the encoder (classifier
keys dropped; for a 1-channel stem the RGB stem kernel is averaged over its input channels);
nothing is downloaded.

Forward: logits (batch, classes, H, W) at the input resolution.  Features: ``layer1`` ..
``layer4`` (encoder maps at strides 4, 8, 16, 16), ``aspp``, ``decoder`` (the classifier's input,
stride 4) and ``pooled`` (the decoder map averaged over space, so the Backbone contract holds).
Blocks: stem, layer1 .. layer4, aspp, decoder, classifier.  ``dense = True`` marks a network whose
logits are per pixel (methods build per-pixel proxies for it).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option, map_shape
from cmkd.models.registry import register

ENCODERS = ("resnet18", "mobilenet_v2")


def _resnet18_encoder(in_channels: int, width: int) -> tuple[nn.Module, list[nn.Module], list]:
    """Stem and four stages of ResNet-18 from torchvision's BasicBlock, first-stage width
    ``width``; the last stage at stride 1, dilation 2.  Returns (stem, stages, channels)."""
    from torchvision.models.resnet import BasicBlock, conv1x1

    conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=nn.BatchNorm2d(width),
                                     relu=nn.ReLU(inplace=True),
                                     maxpool=nn.MaxPool2d(3, stride=2, padding=1)))
    stages, chans, inplanes = [], [], width
    for i, stride in enumerate((1, 2, 2, 1)):
        planes = width * 2 ** i
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        stage = nn.Sequential(BasicBlock(inplanes, planes, stride, down),
                              BasicBlock(planes, planes))
        stages.append(stage)
        chans.append(planes)
        inplanes = planes
    # layer4: stride 2 -> 1 (built with stride 1 above, but its downsample must change channels
    # only), every 3x3 conv dilated by 2 (torchvision's BasicBlock refuses dilation > 1 when
    # built, so it is set on the built convolutions)
    for m in stages[3].modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            m.dilation, m.padding = (2, 2), (2, 2)
    for m in [conv1, *[m for s in stages for m in s.modules() if isinstance(m, nn.Conv2d)]]:
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return stem, stages, chans


def _mobilenet_v2_encoder(in_channels: int, width_mult: float
                          ) -> tuple[nn.Module, list[nn.Module], list]:
    """torchvision MobileNetV2 ``features`` cut into a stem and four stages at strides 4, 8, 16,
    16 (the stride-2 block of the last stage set to stride 1, its depthwise convs dilated 2)."""
    from torchvision.models import mobilenet_v2

    feats = mobilenet_v2(weights=None, width_mult=width_mult).features
    if in_channels != 3:
        old = feats[0][0]
        feats[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, stride=2, padding=1,
                                bias=False)
        nn.init.kaiming_normal_(feats[0][0].weight, mode="fan_out")
    # features: 0 stem (s2), 1 (s2 total), 2-3 (s4), 4-6 (s8), 7-13 (s16), 14-18 (s32 -> s16)
    stem = feats[:2]
    cuts = [(2, 4), (4, 7), (7, 14), (14, 18)]
    stages = [feats[a:b] for a, b in cuts]
    for m in stages[3].modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            m.stride, m.dilation, m.padding = (1, 1), (2, 2), (2, 2)
    chans = [stage[-1].out_channels for stage in stages]
    return stem, stages, chans


def build_head(chans: list[int], head_width: int, classes: int, atrous_rates
               ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """DeepLab V3+'s head on an encoder of stage channels ``chans``: (ASPP on the last stage,
    the stride-4 projection, the two-conv decoder, the 1x1 classifier)."""
    from torchvision.models.segmentation.deeplabv3 import ASPP

    aspp = ASPP(chans[3], list(atrous_rates), head_width)
    low = max(4, head_width * 48 // 256)
    low_proj = nn.Sequential(nn.Conv2d(chans[0], low, 1, bias=False), nn.BatchNorm2d(low),
                             nn.ReLU(inplace=True))
    fuse = nn.Sequential(
        nn.Conv2d(head_width + low, head_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(head_width), nn.ReLU(inplace=True),
        nn.Conv2d(head_width, head_width, 3, padding=1, bias=False),
        nn.BatchNorm2d(head_width), nn.ReLU(inplace=True))
    return aspp, low_proj, fuse, nn.Conv2d(head_width, classes, 1)


def decode(net: nn.Module, feats: dict) -> None:
    """The V3+ decoder of ``net`` (its ``aspp``, ``low_proj``, ``fuse``) on ``feats`` (with
    ``layer1`` and ``layer4``): adds ``aspp``, ``decoder`` and ``pooled``."""
    a = net.aspp(feats["layer4"])
    feats["aspp"] = a
    low = net.low_proj(feats["layer1"])
    a = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
    d = net.fuse(torch.cat([a, low], 1))
    feats["decoder"] = d
    feats["pooled"] = d.mean((2, 3))


class DeepLabV3Plus(Backbone):
    """DeepLab V3+ on one modality; see the module docstring.

    Parameters
    ----------
    encoder : 'resnet18' or 'mobilenet_v2'.
    classes : number of classes (per-pixel outputs).
    in_channels : 3 (RGB) or 1 (depth: its own stem).
    width : ResNet-18's first-stage width (64: the real network).
    width_mult : MobileNetV2's width multiplier (1.0: the real network).
    head_width : channels of ASPP and the decoder (256 in DeepLab V3+).
    atrous_rates : ASPP dilation rates (6, 12, 18 at output stride 16).
    weights : optional path of an ImageNet state dict for the encoder (never downloaded).
    modality : the input's name.
    """

    dense = True

    def __init__(self, encoder: str, classes: int, *, in_channels: int = 3, width: int = 64,
                 width_mult: float = 1.0, head_width: int = 256,
                 atrous_rates: tuple[int, ...] = (6, 12, 18), weights: str | None = None,
                 modality: str = "input"):
        super().__init__()
        name = f"deeplabv3plus_{encoder}"
        check_option("deeplabv3plus", "encoder", encoder, choices=ENCODERS)
        check_option(name, "classes", classes, low=1)
        check_option(name, "in_channels", in_channels, low=1)
        check_option(name, "width", width, low=1)
        check_option(name, "head_width", head_width, low=4)
        if not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"model {name!r}: option 'width_mult' must be > 0, got "
                             f"{width_mult!r}")
        self.name, self.in_channels = name, in_channels
        if encoder == "resnet18":
            self.stem, stages, chans = _resnet18_encoder(in_channels, width)
        else:
            self.stem, stages, chans = _mobilenet_v2_encoder(in_channels, float(width_mult))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.aspp, self.low_proj, self.fuse, self.classifier = build_head(
            chans, head_width, classes, atrous_rates)
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {f"layer{i + 1}": map_shape(c) for i, c in enumerate(chans)}
        self.feature_shapes.update(aspp=map_shape(head_width), decoder=map_shape(head_width),
                                   pooled=(head_width,))
        if weights is not None:
            self.load_encoder_weights(weights)

    def load_encoder_weights(self, path: str) -> None:
        """Load a torchvision ImageNet checkpoint (resnet18 or mobilenet_v2) into the encoder;
        a ValueError names the keys that do not fit (a width other than the real network's)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model {self.name!r}: weights file {str(path)!r} not found "
                                    f"(a torchvision ImageNet state dict; nothing is downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        mine = self._encoder_state_names()
        out, missing = {}, []
        for ours, theirs in mine.items():
            if theirs not in state:
                missing.append(theirs)
                continue
            w = state[theirs]
            target = self.state_dict()[ours]
            if w.dim() == 4 and target.dim() == 4 and w.shape[1] == 3 and target.shape[1] != 3:
                w = w.mean(1, keepdim=True).expand(-1, target.shape[1], -1, -1).clone()
            if w.shape != target.shape:
                raise ValueError(f"model {self.name!r}: weights {theirs!r} have shape "
                                 f"{tuple(w.shape)}, the encoder needs {tuple(target.shape)} "
                                 f"(ImageNet weights fit the full-width network only)")
            out[ours] = w
        if missing:
            raise ValueError(f"model {self.name!r}: weights file lacks {len(missing)} encoder "
                             f"key(s), e.g. {missing[:3]}")
        self.load_state_dict(out, strict=False)

    def _encoder_state_names(self) -> dict[str, str]:
        """Our encoder state keys -> the torchvision checkpoint's keys."""
        names = {}
        resnet = self.name.endswith("resnet18")
        for key in self.state_dict():
            part, _, rest = key.partition(".")
            if part not in ("stem", "layer1", "layer2", "layer3", "layer4"):
                continue
            if resnet:
                names[key] = rest if part == "stem" else key
            else:  # slices of torchvision's ``features`` keep its indices
                names[key] = f"features.{rest}"
        return names

    def forward_features(self, x: torch.Tensor):
        self._check_count((x,))
        feats = self.features(x)
        logits = self.classifier(feats["decoder"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                             align_corners=False), feats

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        check_input(x, self.name, self.modalities[0], f"(batch, {self.in_channels}, H, W)", 4,
                    channels=self.in_channels, min_size=16)
        feats = OrderedDict()
        h = self.stem(x)
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            h = layer(h)
            feats[f"layer{i}"] = h
        decode(self, feats)
        return feats

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"model {self.name!r} classifies pixels, not pooled features: use "
                        f"forward / forward_features")

    def blocks(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.aspp,
                nn.ModuleList([self.low_proj, self.fuse]), self.classifier]


@register("deeplabv3plus_resnet18")
def deeplabv3plus_resnet18(classes: int, *, in_channels: int = 3, width: int = 64,
                           head_width: int = 256, atrous_rates: tuple = (6, 12, 18),
                           weights: str | None = None, modality: str = "input"
                           ) -> DeepLabV3Plus:
    """DeepLab V3+ with a ResNet-18 encoder (C2KD Table 4 'RN18'); see :class:`DeepLabV3Plus`."""
    return DeepLabV3Plus("resnet18", classes, in_channels=in_channels, width=width,
                         head_width=head_width, atrous_rates=tuple(atrous_rates),
                         weights=weights, modality=modality)


@register("deeplabv3plus_mobilenet_v2")
def deeplabv3plus_mobilenet_v2(classes: int, *, in_channels: int = 3, width_mult: float = 1.0,
                               head_width: int = 256, atrous_rates: tuple = (6, 12, 18),
                               weights: str | None = None, modality: str = "input"
                               ) -> DeepLabV3Plus:
    """DeepLab V3+ with a MobileNetV2 encoder (C2KD Table 4 'MNV2'); see
    :class:`DeepLabV3Plus`."""
    return DeepLabV3Plus("mobilenet_v2", classes, in_channels=in_channels,
                         width_mult=width_mult, head_width=head_width,
                         atrous_rates=tuple(atrous_rates), weights=weights, modality=modality)
