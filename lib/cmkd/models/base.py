"""The contract every registered network keeps: logits plus named intermediate features.

A :class:`Backbone` takes one tensor per modality, in the order of its ``modalities`` tuple, and
gives ``(batch, classes)`` logits.  :meth:`Backbone.forward_features` also returns an ordered dict
of named intermediate outputs (always ending with ``"pooled"``: the classifier's input), so
FitNet, Review, the C2KD proxies, CKA and Algorithm 1 read layers by name instead of reaching into
a network's internals.

``feature_shapes`` announces those outputs before any forward pass, one tuple per name, without the
batch dimension: ``(dim,)`` for vectors, ``(channels, None, None)`` for (batch, C, H, W) maps (and
``(channels, None, None, None)`` for (batch, C, T, H, W) video maps) - the spatial sizes depend on
the input, so they are ``None``; ``feature_shapes[name][0]`` is always the channel count or width,
which is what a regressor or proxy needs to be built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of the registry's networks.

    Subclasses set ``classes``, ``modalities`` and ``feature_shapes`` in ``__init__`` and define
    :meth:`features` and :meth:`blocks`; the classifier (the last block) is ``self.classifier``
    unless :meth:`classify` is overridden.

    Attributes
    ----------
    classes : number of outputs.
    modalities : names of the inputs, in the order :meth:`forward` takes them.
    feature_shapes : ``{name: shape without the batch dimension}``, in the order of
        :meth:`features`; spatial sizes are ``None`` (they depend on the input).
    """

    classes: int
    modalities: tuple[str, ...]
    feature_shapes: dict[str, tuple]

    def features(self, *inputs: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Named intermediate outputs, input to output, ending with ``"pooled"``:
        (batch, dim), the classifier's input."""
        raise NotImplementedError

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The classifier on the pooled features: (batch, dim) -> (batch, classes)."""
        return self.classifier(pooled)

    def forward_features(self, *inputs: torch.Tensor
                         ) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """``(logits: (batch, classes), features)``; see :meth:`features`."""
        self._check_count(inputs)
        feats = self.features(*inputs)
        return self.classify(feats["pooled"]), feats

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Logits: (batch, classes)."""
        return self.forward_features(*inputs)[0]

    def blocks(self) -> list[nn.Module]:
        """The network's stages ordered input -> output, the last being the classifier: what
        "the teacher's top k layers" means (the last k of them)."""
        raise NotImplementedError

    def _check_count(self, inputs: tuple) -> None:
        if len(inputs) != len(self.modalities):
            raise ValueError(f"{type(self).__name__} takes {len(self.modalities)} input(s), one "
                             f"per modality {self.modalities}, got {len(inputs)}")


def check_input(x: torch.Tensor, model: str, modality: str, layout: str, ndim: int | tuple,
                channels: int | None = None, min_size: int | None = None) -> None:
    """Raise ValueError naming the model, the modality and the expected layout when ``x`` does
    not have ``ndim`` dimensions (one of them when a tuple), ``channels`` at dim 1, or spatial
    sizes of at least ``min_size``."""
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"model {model!r}: input {modality!r} must be a tensor {layout}, "
                        f"got {type(x).__name__}")
    ok = x.dim() in ndims and (channels is None or x.shape[1] == channels)
    if ok and min_size is not None:
        ok = all(s >= min_size for s in x.shape[2:])
    if not ok:
        more = f" with spatial sizes >= {min_size}" if min_size else ""
        raise ValueError(f"model {model!r}: input {modality!r} must be {layout}{more}, "
                         f"got shape {tuple(x.shape)}")


def map_shape(channels: int, spatial_dims: int = 2) -> tuple:
    """``feature_shapes`` entry of a feature map: ``(channels, None, ...)``."""
    return (channels,) + (None,) * spatial_dims


def check_option(model: str, option: str, value, *, choices: tuple | None = None,
                 low: int | None = None) -> None:
    """Raise ValueError naming the model, the option and what is allowed when ``value`` is not
    one of ``choices`` or not an integer >= ``low``."""
    if choices is not None and value not in choices:
        raise ValueError(f"model {model!r}: option {option!r} must be one of "
                         f"{', '.join(map(repr, choices))}; got {value!r}")
    if low is not None and (isinstance(value, bool) or not isinstance(value, int)
                            or value < low):
        raise ValueError(f"model {model!r}: option {option!r} must be an integer >= {low}; "
                         f"got {value!r}")
