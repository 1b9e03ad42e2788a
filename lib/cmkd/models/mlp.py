"""MLPs on vectors (the synthetic MVD data, encoder features): :class:`MLP`, registered as
``mlp``; its stacked form for R runs at once is :class:`cmkd.models.batched.BatchedMLP`
(``cmkd.models.stacked("mlp", seeds, ...)``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cmkd.models.base import Backbone, check_input, check_option
from cmkd.models.batched import BatchedMLP
from cmkd.models.registry import register, register_stacked


class MLP(Backbone):
    """One MLP on (batch, in_features) vectors: Linear -> ReLU -> ... -> Linear.

    Features: ``hidden1`` .. ``hidden{n-1}`` (after each ReLU) and ``pooled`` (the last hidden
    layer, or the input itself when ``hidden`` is empty: a logistic regression).
    Blocks: one (Linear, ReLU) per hidden layer, then the classifier.
    """

    def __init__(self, in_features: int, classes: int, hidden: tuple[int, ...] = (64, 64), *,
                 modality: str = "input"):
        super().__init__()
        _check(in_features, classes, hidden)
        hidden = tuple(hidden)
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


def _check(in_features: int, classes: int, hidden: Sequence[int]) -> None:
    check_option("mlp", "in_features", in_features, low=1)
    check_option("mlp", "classes", classes, low=1)
    for h in hidden:
        check_option("mlp", "hidden", h, low=1)


@register("mlp")
def mlp(in_features: int, classes: int, hidden: tuple[int, ...] = (64, 64), *,
        modality: str = "input") -> MLP:
    """An MLP on vectors (synthetic MVD data); see :class:`MLP`."""
    return MLP(in_features, classes, hidden, modality=modality)


@register_stacked("mlp")
def stacked_mlp(seeds: Sequence[int], in_features: int, classes: int,
                hidden: tuple[int, ...] = (64, 64), *, modality: str = "input") -> BatchedMLP:
    """R = len(seeds) MLPs as grouped layers (:class:`cmkd.models.batched.BatchedMLP`); its
    only feature is ``pooled`` (the last hidden layer)."""
    _check(in_features, classes, hidden)
    return BatchedMLP(in_features, list(hidden), classes, seeds, modality=modality)
