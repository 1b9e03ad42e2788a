"""Small CNNs sized for the embedded ``avdigits`` data (image 1 x 8 x 8, audio 1 x 32 x 32).

They are the reference CNNs of :func:`cmkd.data.avdigits.unimodal_accuracies` (moved here from
``avdigits.small_cnn``): the same layers created in the same order, so a seed gives the same
weights and the same numbers as before.

- image: conv 3x3 (16) -> ReLU -> conv 3x3 (32) -> ReLU -> max-pool 2 -> flatten (512) -> linear.
  Features: ``conv1`` (16 maps), ``conv2`` (32 maps, after the pool), ``pooled`` (512, the
  flattened map).
- audio: three blocks conv 3x3 -> BatchNorm -> ReLU (16, 32, 64 channels), max-pool 2 after the
  first two, then a global max pool (``pooled``, 64) -> linear.  Features: ``block1`` ..
  ``block3``, ``pooled``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from cmkd.models.base import Backbone, check_input, check_option, map_shape
from cmkd.models.registry import register

SIDES = {"image": 8, "audio": 32}


class AVDigitsCNN(Backbone):
    """The avdigits reference CNN of one modality; see the module docstring."""

    def __init__(self, modality: str, classes: int = 10):
        super().__init__()
        check_option("avdigits_cnn", "modality", modality, choices=tuple(SIDES))
        check_option("avdigits_cnn", "classes", classes, low=1)
        self.kind = modality
        if modality == "image":
            self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                       nn.MaxPool2d(2))
            self.classifier = nn.Linear(512, classes)
            self.feature_shapes = {"conv1": map_shape(16), "conv2": map_shape(32),
                                   "pooled": (512,)}
            self._blocks = ("conv1", "conv2")
        else:
            self._blocks = ("block1", "block2", "block3")
            for i, (c_in, c_out) in enumerate(((1, 16), (16, 32), (32, 64)), 1):
                layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
                if i < 3:
                    layers.append(nn.MaxPool2d(2))
                self.add_module(f"block{i}", nn.Sequential(*layers))
            self.classifier = nn.Linear(64, classes)
            self.feature_shapes = {"block1": map_shape(16), "block2": map_shape(32),
                                   "block3": map_shape(64), "pooled": (64,)}
        self.classes, self.modalities = classes, (modality,)

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        s = SIDES[self.kind]
        check_input(x, "avdigits_cnn", self.kind, f"(batch, 1, {s}, {s})", 4, channels=1)
        if tuple(x.shape[2:]) != (s, s):
            raise ValueError(f"model 'avdigits_cnn': input {self.kind!r} must be "
                             f"(batch, 1, {s}, {s}), got shape {tuple(x.shape)}")
        feats = OrderedDict()
        h = x
        for name in self._blocks:
            feats[name] = h = getattr(self, name)(h)
        feats["pooled"] = (h.flatten(1) if self.kind == "image"
                           else F.adaptive_max_pool2d(h, 1).flatten(1))
        return feats

    def blocks(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self._blocks] + [self.classifier]


@register("avdigits_cnn")
def avdigits_cnn(modality: str, classes: int = 10) -> AVDigitsCNN:
    """The small CNN for avdigits' ``modality`` ("image": 1 x 8 x 8, "audio": 1 x 32 x 32)."""
    return AVDigitsCNN(modality, classes)
