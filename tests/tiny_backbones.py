"""Tiny models and data for the engine and method tests, following the cmkd.models Backbone
contract (forward, forward_features -> (logits, {..., 'pooled'}), feature_shapes, classes,
modalities, blocks()) without depending on cmkd.models."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from cmkd.methods.base import Method
from cmkd.params import spec


class TinyNet(nn.Module):
    """x (batch, dim) -> Linear-BN-ReLU (block 'body') -> Linear-ReLU-Dropout (block 'mid',
    feature 'pooled') -> Linear (block 'head')."""

    def __init__(self, dim: int, classes: int, hidden: int = 8, modality: str = "x",
                 dropout: float = 0.0):
        super().__init__()
        self.modalities = (modality,)
        self.classes = classes
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, classes)
        self.feature_shapes = {"body": (hidden,), "pooled": (hidden,)}

    def forward_features(self, x):
        body = self.body(x)
        pooled = self.mid(body)
        return self.head(pooled), {"body": body, "pooled": pooled}

    def forward(self, x):
        return self.forward_features(x)[0]

    def blocks(self):
        return [self.body, self.mid, self.head]


class TinyConvNet(nn.Module):
    """x (batch, 1, side, side) -> Conv-BN-ReLU (block and feature 'conv1', (c1, side, side))
    -> strided Conv-ReLU ('conv2', (c2, side / 2, side / 2)) -> global average ('pooled', (c2,))
    -> Linear (block 'head'): 4-d feature maps for the feature-based methods."""

    def __init__(self, classes: int, channels: tuple[int, int] = (4, 6), modality: str = "x"):
        super().__init__()
        c1, c2 = channels
        self.modalities = (modality,)
        self.classes = classes
        self.conv1 = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(c2, classes)
        self.feature_shapes = {"conv1": (c1, None, None), "conv2": (c2, None, None),
                               "pooled": (c2,)}

    def forward_features(self, x):
        conv1 = self.conv1(x)
        conv2 = self.conv2(conv1)
        pooled = conv2.mean((2, 3))
        return self.head(pooled), {"conv1": conv1, "conv2": conv2, "pooled": pooled}

    def forward(self, x):
        return self.forward_features(x)[0]

    def blocks(self):
        return [self.conv1, self.conv2, self.head]


class DictDataset(Dataset):
    """Item i: {name: tensor[i]} for every tensor (one of them 'label')."""

    def __init__(self, **tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self):
        return len(self.tensors["label"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


def two_views(n: int, seed: int, classes: int = 3, dim: int = 4) -> DictDataset:
    """Gaussian clusters seen through two modalities 'a' and 'b' (different random maps of the
    same class means, independent noise); labels 0..classes-1."""
    g = torch.Generator().manual_seed(1234)  # the class means: the same for every split
    means = torch.randn(classes, dim, generator=g) * 3
    map_a, map_b = torch.randn(dim, dim, generator=g), torch.randn(dim, dim, generator=g)
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % classes
    a = (means[label] + 0.5 * torch.randn(n, dim, generator=g)) @ map_a
    b = (means[label] + 0.5 * torch.randn(n, dim, generator=g)) @ map_b
    return DictDataset(a=a, b=b, label=label)


class TwoWay(Method):
    """A test method that trains its teacher too (all of it or its top blocks)."""

    name = "test_two_way"

    @dataclass(frozen=True)
    class Hparams:
        teacher_update: str = field(default="all", metadata=spec(
            "which teacher parameters train", choices=("frozen", "top_k", "all")))
        teacher_top_k: int = field(default=1, metadata=spec("top blocks", low=1))

    def step(self, batch, epoch):
        s, t = self.student_forward(batch), self.teacher_forward(batch)
        ce_s = self.supervised_loss(s, batch["label"])
        ce_t = self.supervised_loss(t, batch["label"])
        return {"total": ce_s + ce_t, "ce_s": ce_s.detach(), "ce_t": ce_t.detach()}


def two_images(n: int, seed: int, classes: int = 3, sides: tuple[int, int] = (8, 6)
               ) -> DictDataset:
    """:func:`two_views` seen as one-channel images: 'a' (n, 1, sides[0], sides[0]) and 'b'
    (n, 1, sides[1], sides[1]), each a fixed random linear image of its view."""
    views = two_views(n, seed, classes)
    g = torch.Generator().manual_seed(4321)
    out = {}
    for key, side in zip(("a", "b"), sides):
        x = views.tensors[key]
        out[key] = (x @ torch.randn(x.shape[1], side * side, generator=g)).view(n, 1, side, side)
    return DictDataset(**out, label=views.tensors["label"])
