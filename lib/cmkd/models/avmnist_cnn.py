"""The small CNNs of MFH Appendix B.1 (AV-MNIST case study).

The paper says only: "a 6-layer CNN as the audio teacher ... the audio student is a 3-layer CNN ...
the multimodal teacher uses LeNet5 as the image backbone and a 5-layer CNN as the audio
backbone", following Vielzeuf et al. (2018, CentralNet) and Gao et al. (2022); the MFH repository
has no AV-MNIST code.  The shapes below are therefore our reading, documented:

- ``lenet5``: LeCun's LeNet-5 for 28 x 28 images: conv 5x5 (6, padding 2) -> ReLU -> max-pool 2 ->
  conv 5x5 (16) -> ReLU -> max-pool 2 -> fc 120 -> ReLU -> fc 84 -> ReLU -> classifier.
  ``image_size`` sets the input side (the flattened width depends on it).
- ``audio_cnn3`` / ``audio_cnn5`` / ``audio_cnn6``: the CentralNet AV-MNIST CNN family (also
  MultiBench's ``LeNet(1, 6, L - 1)``): L blocks conv -> BatchNorm -> ReLU -> max-pool 2, the first
  conv 5x5 with ``channels`` filters, the next ones 3x3 doubling the channels (6, 12, 24, ...), no
  conv bias; then an adaptive average pool to ``grid`` x ``grid`` cells, flattened (``pooled``,
  channels * 2^(L-1) * grid^2 wide), and the MultiBench head: Linear(pooled, ``hidden`` = 100)
  -> ReLU -> Linear(classes) (``hidden=0``: a single linear layer).  CentralNet flattens the last
  map: for its 112 x 112 spectrograms that map is 1 x 1 at L = 6 (``grid=1``, the default: a
  global average pool, the same thing) but 14 x 14 at L = 3, where ``grid`` = the last map's
  side (input side / 2^L) is CentralNet's flatten and ``grid=1`` keeps only channels * 4
  numbers of the 3-layer student's map.  Inputs need sides >= 2^L * grid (AV-MNIST
  spectrograms are 112 x 112).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option, map_shape
from cmkd.models.registry import register


class LeNet5(Backbone):
    """LeNet-5 on (batch, in_channels, image_size, image_size) images.

    Features: ``conv1`` (6 maps), ``conv2`` (16 maps), ``fc1`` (120), ``pooled`` (84).
    Blocks: conv1, conv2, fc1, fc2, classifier.
    """

    def __init__(self, classes: int = 10, *, in_channels: int = 1, image_size: int = 28,
                 modality: str = "image"):
        super().__init__()
        check_option("lenet5", "classes", classes, low=1)
        check_option("lenet5", "in_channels", in_channels, low=1)
        check_option("lenet5", "image_size", image_size, low=12)
        self.in_channels, self.image_size = in_channels, image_size
        side = (image_size // 2 - 4) // 2
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(),
                                   nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, classes)
        self.classes, self.modalities = classes, (modality,)
        self.feature_shapes = {"conv1": map_shape(6), "conv2": map_shape(16), "fc1": (120,),
                               "pooled": (84,)}

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c, s = self.in_channels, self.image_size
        check_input(x, "lenet5", self.modalities[0], f"(batch, {c}, {s}, {s})", 4, channels=c)
        if tuple(x.shape[2:]) != (s, s):
            raise ValueError(f"model 'lenet5': input {self.modalities[0]!r} must be "
                             f"(batch, {c}, {s}, {s}) (option image_size={s}), got shape "
                             f"{tuple(x.shape)}")
        feats = OrderedDict()
        feats["conv1"] = h = self.conv1(x)
        feats["conv2"] = h = self.conv2(h)
        feats["fc1"] = h = self.fc1(h)
        feats["pooled"] = self.fc2(h)
        return feats

    def blocks(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.fc1, self.fc2, self.classifier]


class AudioCNN(Backbone):
    """The CentralNet / MultiBench AV-MNIST CNN with ``layers`` conv blocks; see the module
    docstring.

    Features: ``block1`` .. ``block{layers}`` maps (after each max-pool) and ``pooled``.
    Blocks: block1 .. block{layers}, classifier (the MLP head).
    """

    def __init__(self, layers: int, classes: int = 10, *, channels: int = 6, hidden: int = 100,
                 in_channels: int = 1, grid: int = 1, modality: str = "audio"):
        super().__init__()
        name = f"audio_cnn{layers}"
        check_option(name, "classes", classes, low=1)
        check_option(name, "channels", channels, low=1)
        check_option(name, "hidden", hidden, low=0)
        check_option(name, "in_channels", in_channels, low=1)
        check_option(name, "grid", grid, low=1)
        self.name, self.layers, self.in_channels, self.grid = name, layers, in_channels, grid
        self.feature_shapes = {}
        c_in = in_channels
        for i in range(layers):
            c_out = channels * 2 ** i
            k = 5 if i == 0 else 3
            block = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                                  nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))
            self.add_module(f"block{i + 1}", block)
            self.feature_shapes[f"block{i + 1}"] = map_shape(c_out)
            c_in = c_out
        width = c_in * grid * grid
        self.feature_shapes["pooled"] = (width,)
        self.classifier = (nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                         nn.Linear(hidden, classes))
                           if hidden else nn.Linear(width, classes))
        self.classes, self.modalities = classes, (modality,)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        check_input(x, self.name, self.modalities[0], f"(batch, {self.in_channels}, H, W)", 4,
                    channels=self.in_channels, min_size=2 ** self.layers * self.grid)
        feats = OrderedDict()
        h = x
        for i in range(1, self.layers + 1):
            feats[f"block{i}"] = h = getattr(self, f"block{i}")(h)
        feats["pooled"] = (h.mean((2, 3)) if self.grid == 1 else
                           nn.functional.adaptive_avg_pool2d(h, self.grid).flatten(1))
        return feats

    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f"block{i}") for i in range(1, self.layers + 1)] + [self.classifier]


@register("lenet5")
def lenet5(classes: int = 10, *, in_channels: int = 1, image_size: int = 28,
           modality: str = "image") -> LeNet5:
    """LeNet-5 (MFH B.1's image backbone for AV-MNIST); see :class:`LeNet5`."""
    return LeNet5(classes, in_channels=in_channels, image_size=image_size, modality=modality)


@register("audio_cnn3")
def audio_cnn3(classes: int = 10, *, channels: int = 6, hidden: int = 100, in_channels: int = 1,
               grid: int = 1, modality: str = "audio") -> AudioCNN:
    """3-layer audio CNN (MFH B.1's AV-MNIST audio student); see :class:`AudioCNN`."""
    return AudioCNN(3, classes, channels=channels, hidden=hidden, in_channels=in_channels,
                    grid=grid, modality=modality)


@register("audio_cnn5")
def audio_cnn5(classes: int = 10, *, channels: int = 6, hidden: int = 100, in_channels: int = 1,
               grid: int = 1, modality: str = "audio") -> AudioCNN:
    """5-layer audio CNN (the audio backbone of MFH B.1's multimodal teacher)."""
    return AudioCNN(5, classes, channels=channels, hidden=hidden, in_channels=in_channels,
                    grid=grid, modality=modality)


@register("audio_cnn6")
def audio_cnn6(classes: int = 10, *, channels: int = 6, hidden: int = 100, in_channels: int = 1,
               grid: int = 1, modality: str = "audio") -> AudioCNN:
    """6-layer audio CNN (MFH B.1's AV-MNIST audio teacher); see :class:`AudioCNN`."""
    return AudioCNN(6, classes, channels=channels, hidden=hidden, in_channels=in_channels,
                    grid=grid, modality=modality)
