"""MLPs for the synthetic data: :class:`MLP` (one model, registered as ``mlp``) and small MLPs
for R independent runs at once (``Batched*``: every tensor carries a leading run dimension).

Inputs are (R, n, D); run r has its own weights, initialised like ``nn.Linear`` from its own seed
(:func:`cmkd.train.init_linear_batched`), so a sweep over settings and seeds trains as one
tensor program and each run's gradient is its own (the loss is a sum over runs).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option
from cmkd.models.registry import register
from cmkd.train import init_linear_batched


class BatchedLinear(nn.Module):
    """R linear maps: (R, n, in) -> (R, n, out)."""

    def __init__(self, in_features: int, out_features: int, seeds: list[int], bias: bool = True):
        super().__init__()
        w, b = init_linear_batched([in_features] * len(seeds), in_features, out_features, seeds)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class BatchedBatchNorm(nn.Module):
    """Batch norm per run and channel over the samples: (R, n, C) -> (R, n, C)."""

    def __init__(self, runs: int, channels: int):
        super().__init__()
        self.runs, self.channels = runs, channels
        self.bn = nn.BatchNorm1d(runs * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, n, c = x.shape
        y = self.bn(x.permute(1, 0, 2).reshape(n, r * c))
        return y.reshape(n, r, c).permute(1, 0, 2)


class BatchedMLP(nn.Sequential):
    """Linear -> ReLU -> ... -> Linear for R runs; ``features(x)`` gives the last hidden layer.

    Parameters
    ----------
    in_features : input width; hidden : widths of the hidden layers; classes : outputs
    seeds : one base seed per run (layer l of run r is initialised from ``seeds[r] + l``)

    Attributes
    ----------
    n_runs, classes : runs R and outputs.
    feature_shapes : ``{'pooled': (hidden[-1],)}``, what :meth:`forward_features` returns per
        run, so the methods built with ``runs=True`` (:mod:`cmkd.methods`) read it by name.
    """

    def __init__(self, in_features: int, hidden: list[int], classes: int, seeds: list[int]):
        widths = [in_features, *hidden, classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(BatchedLinear(a, b, [s + i for s in seeds]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.n_runs, self.classes = len(seeds), classes
        self.feature_shapes = {"pooled": (widths[-2],)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer (after its ReLU): (R, n, D) -> (R, n, hidden[-1])."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer applied to :meth:`features`."""
        return self[-1](features)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(logits (R, n, classes), {'pooled': features (R, n, hidden[-1])})``: the
        Backbone contract with a leading run dimension, so the methods built with
        ``runs=True`` read the same feature name ('pooled') as on ordinary models."""
        f = self.features(x)
        return self.head(f), {"pooled": f}


class BatchedProxyHead(nn.Sequential):
    """C2KD's proxy head (Eq. 5) for R runs on (R, n, C) pooled features: 1x1 conv (a linear map
    without bias on pooled features) -> BN -> LeakyReLU(0.1) -> linear."""

    def __init__(self, in_features: int, hidden: int, classes: int, seeds: list[int]):
        super().__init__(BatchedLinear(in_features, hidden, seeds, bias=False),
                         BatchedBatchNorm(len(seeds), hidden), nn.LeakyReLU(0.1),
                         BatchedLinear(hidden, classes, [s + 1 for s in seeds]))


class MLP(Backbone):
    """One MLP (no run dimension) on (batch, in_features) vectors: Linear -> ReLU -> ... ->
    Linear, the unbatched counterpart of :class:`BatchedMLP` for the synthetic MVD data.

    Features: ``hidden1`` .. ``hidden{n-1}`` (after each ReLU) and ``pooled`` (the last hidden
    layer, or the input itself when ``hidden`` is empty: a logistic regression).
    Blocks: one (Linear, ReLU) per hidden layer, then the classifier.
    """

    def __init__(self, in_features: int, classes: int, hidden: tuple[int, ...] = (64, 64), *,
                 modality: str = "input"):
        super().__init__()
        check_option("mlp", "in_features", in_features, low=1)
        check_option("mlp", "classes", classes, low=1)
        hidden = tuple(hidden)
        for h in hidden:
            check_option("mlp", "hidden", h, low=1)
        self.in_features = in_features
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU())
                                    for a, b in zip(widths, widths[1:]))
        self.classifier = nn.Linear(widths[-1], classes)
        self.classes, self.modalities = classes, (modality,)
        names = [f"hidden{i}" for i in range(1, len(hidden))] + ["pooled"]
        self.feature_shapes = {n: (w,) for n, w in zip(names, widths[-len(names):])}

    def features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        check_input(x, "mlp", self.modalities[0], f"(batch, {self.in_features})", 2,
                    channels=self.in_features)
        feats = OrderedDict()
        for i, layer in enumerate(self.hidden, 1):
            x = layer(x)
            if i < len(self.hidden):
                feats[f"hidden{i}"] = x
        feats["pooled"] = x
        return feats

    def blocks(self) -> list[nn.Module]:
        return [*self.hidden, self.classifier]


@register("mlp")
def mlp(in_features: int, classes: int, hidden: tuple[int, ...] = (64, 64), *,
        modality: str = "input") -> MLP:
    """An MLP on vectors (synthetic MVD data); see :class:`MLP`."""
    return MLP(in_features, classes, hidden, modality=modality)
