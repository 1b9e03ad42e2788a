"""torchvision ResNets (never pretrained: ``weights=None``, nothing is downloaded) with the stems
the crossmodal papers use.

- Spectrograms: ``in_channels=1`` replaces the stem convolution by Conv2d(1, 64, 7, stride 2,
  padding 3, no bias), as C2KD's official audio network (initialised like torchvision's convs:
  Kaiming normal, fan_out).
- Frames: ``frames=T`` takes a clip (batch, C, T, H, W) (the layout of the C2KD / OGM-GE data
  loaders; a (batch, C, H, W) image is accepted when T = 1).  How the frames enter is
  ``frame_mode``:

  * ``"pool"`` (default; what C2KD's and OGM-GE's official code do, read in huofushuo/C2KD
    ``*/utils/model_res.py`` and GeWu-Lab/OGM-GE_CVPR2022 ``models/basic_model.py``): every frame
    goes through the same 2D network as an image of the batch ((batch * T, C, H, W)), and the
    layer4 maps are average-pooled over frames and space together (their
    ``adaptive_avg_pool3d(., 1)``), which is the mean over frames of the per-frame pooled features.
    The maps reported as features (layer1..layer4) are the per-frame maps averaged over frames,
    so they stay (batch, C, H, W).
  * ``"stack"``: frames are stacked on the channels ((batch, C * T, H, W), channel-major) and the
    stem convolution takes C * T channels (early fusion of the frames; not the papers' choice).

C2KD trains ResNet-18 from scratch for both modalities: 1 frame for AVE and CREMA-D, 3 for
VGGSound.  The official code's "resnet50" is built from BasicBlocks [3, 4, 6, 3], i.e. a ResNet-34:
``resnet34`` reproduces that network, ``resnet50`` is torchvision's true (Bottleneck) ResNet-50.
The official code also initialises BatchNorm weights from N(1, 0.02); here torchvision's
initialisation (ones) is kept.

Features: ``layer1`` .. ``layer4`` maps and ``pooled`` (512 for ResNet-18/34, 2048 for -50).
Blocks: stem (conv1, bn1, relu, maxpool), layer1 .. layer4, classifier.

``r3d18`` is torchvision's 3D ResNet-18 (``torchvision.models.video.r3d_18``): MFH's VGGSound video
network ("the same architecture with 2D convolution replaced by 3D convolution"); its features are
(batch, C, T, H, W) maps.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option, map_shape
from cmkd.models.registry import register

_ARCHS = ("resnet18", "resnet34", "resnet50")


def _torchvision_models():
    """torchvision.models, imported when a ResNet is built (importing torchvision costs seconds,
    which a process that builds none - the command line, a worker training MLPs - saves)."""
    from torchvision import models

    return models
FRAME_MODES = ("pool", "stack")


class ResNet(Backbone):
    """A torchvision ResNet with a spectrogram / multi-frame stem; see the module docstring.

    Parameters
    ----------
    arch : "resnet18", "resnet34" or "resnet50".
    classes : number of outputs.
    in_channels : channels of one frame (3 for RGB, 1 for a spectrogram).
    frames : frames per clip (1: an image or a spectrogram).
    frame_mode : "pool" (frames through the 2D network, averaged at the end; C2KD / OGM-GE) or
        "stack" (frames stacked on channels at the stem).
    modality : the input's name (``modalities == (modality,)``).
    """

    def __init__(self, arch: str, classes: int, *, in_channels: int = 3, frames: int = 1,
                 frame_mode: str = "pool", modality: str = "input"):
        super().__init__()
        check_option("resnet", "arch", arch, choices=_ARCHS)
        check_option(arch, "classes", classes, low=1)
        check_option(arch, "in_channels", in_channels, low=1)
        check_option(arch, "frames", frames, low=1)
        check_option(arch, "frame_mode", frame_mode, choices=FRAME_MODES)
        self.arch, self.in_channels, self.frames, self.frame_mode = (arch, in_channels, frames,
                                                                     frame_mode)
        net = getattr(_torchvision_models(), arch)(weights=None, num_classes=classes)
        stem_in = in_channels * frames if frame_mode == "stack" else in_channels
        if stem_in != 3:
            net.conv1 = nn.Conv2d(stem_in, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        self.classifier = net.fc
        self.classes, self.modalities = classes, (modality,)
        width = net.fc.in_features
        self.feature_shapes = {f"layer{i}": map_shape(width // 8 * 2 ** (i - 1))
                               for i in range(1, 5)}
        self.feature_shapes["pooled"] = (width,)

    def _frames_to_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, C, T, H, W) or (batch, C, H, W) -> the 2D network's input."""
        name, c, t = self.arch, self.in_channels, self.frames
        layout = (f"(batch, {c}, {t}, H, W)" if t > 1
                  else f"(batch, {c}, H, W) or (batch, {c}, 1, H, W)")
        check_input(x, name, self.modalities[0], layout, (4, 5) if t == 1 else 5, channels=c)
        if x.dim() == 4:
            return x
        if x.shape[2] != t:
            raise ValueError(f"model {name!r}: input {self.modalities[0]!r} must be {layout} "
                             f"(frames={t}), got shape {tuple(x.shape)}")
        b = x.shape[0]
        if self.frame_mode == "stack":
            return x.reshape(b, c * t, *x.shape[3:])
        return x.transpose(1, 2).reshape(b * t, c, *x.shape[3:])

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        b = x.shape[0]
        h = self.stem(self._frames_to_batch(x))
        per_frame = self.frame_mode == "pool" and h.shape[0] != b
        feats = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            h = layer(h)
            feats[f"layer{i}"] = h.reshape(b, -1, *h.shape[1:]).mean(1) if per_frame else h
        feats["pooled"] = feats["layer4"].mean((2, 3))
        return feats

    def blocks(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.classifier]


@register("resnet18")
def resnet18(classes: int, *, in_channels: int = 3, frames: int = 1, frame_mode: str = "pool",
             modality: str = "input") -> ResNet:
    """torchvision ResNet-18 (C2KD's backbone for audio and visual); see :class:`ResNet`."""
    return ResNet("resnet18", classes, in_channels=in_channels, frames=frames,
                  frame_mode=frame_mode, modality=modality)


@register("resnet34")
def resnet34(classes: int, *, in_channels: int = 3, frames: int = 1, frame_mode: str = "pool",
             modality: str = "input") -> ResNet:
    """torchvision ResNet-34: the network C2KD's official code calls "resnet50"."""
    return ResNet("resnet34", classes, in_channels=in_channels, frames=frames,
                  frame_mode=frame_mode, modality=modality)


@register("resnet50")
def resnet50(classes: int, *, in_channels: int = 3, frames: int = 1, frame_mode: str = "pool",
             modality: str = "input") -> ResNet:
    """torchvision ResNet-50 (Bottleneck blocks; MFH's VGGSound ResNet-50); see :class:`ResNet`."""
    return ResNet("resnet50", classes, in_channels=in_channels, frames=frames,
                  frame_mode=frame_mode, modality=modality)


class R3D18(Backbone):
    """torchvision's 3D ResNet-18 on (batch, in_channels, T, H, W) clips.

    Features: ``layer1`` .. ``layer4`` (batch, C, T', H', W') maps and ``pooled`` (512).
    Blocks: stem, layer1 .. layer4, classifier.
    """

    def __init__(self, classes: int, *, in_channels: int = 3, modality: str = "video"):
        super().__init__()
        check_option("r3d18", "classes", classes, low=1)
        check_option("r3d18", "in_channels", in_channels, low=1)
        net = _torchvision_models().video.r3d_18(weights=None, num_classes=classes)
        if in_channels != 3:
            net.stem[0] = nn.Conv3d(in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2),
                                    padding=(1, 3, 3), bias=False)
            nn.init.kaiming_normal_(net.stem[0].weight, mode="fan_out", nonlinearity="relu")
        self.in_channels = in_channels
        self.stem = net.stem
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        self.classifier = net.fc
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {f"layer{i}": map_shape(64 * 2 ** (i - 1), 3) for i in range(1, 5)}
        self.feature_shapes["pooled"] = (512,)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        check_input(x, "r3d18", self.modalities[0], f"(batch, {self.in_channels}, T, H, W)", 5,
                    channels=self.in_channels)
        h = self.stem(x)
        feats = OrderedDict()
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            h = layer(h)
            feats[f"layer{i}"] = h
        feats["pooled"] = h.mean((2, 3, 4))
        return feats

    def blocks(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4, self.classifier]


@register("r3d18")
def r3d18(classes: int, *, in_channels: int = 3, modality: str = "video") -> R3D18:
    """torchvision 3D ResNet-18 for clips (MFH's VGGSound video network); see :class:`R3D18`."""
    return R3D18(classes, in_channels=in_channels, modality=modality)
