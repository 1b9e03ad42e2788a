"""Deriving teachers of different gamma by keeping or nullifying channels (MFH Sec. 5.1, B.4).

With a salience vector from Algorithm 1, a *modality-general* teacher nullifies the r% least
salient channels, a *modality-specific* teacher the r% most salient ones, and a *random* teacher
r% channels drawn without replacement (the official synthetic script draws with replacement; see
docs/official_code_audit.md).  The same keep-sets apply to input channels
(:func:`nullify_channels`) and to an intermediate layer's channels (:func:`nullify_layer`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

KINDS = ("general", "specific", "random")


def select_channels(salience: torch.Tensor | np.ndarray, kind: str, *,
                    drop_ratio: float | None = None, n_keep: int | None = None,
                    rng: np.random.Generator | None = None,
                    replace: bool = False) -> np.ndarray:
    """Channels to keep, by salience.

    Parameters
    ----------
    salience : (C,) salience of each channel (larger: more modality-general decisive)
    kind : 'general' keeps the most salient channels (drops the least salient), 'specific' keeps
        the least salient (drops the most salient), 'random' keeps channels drawn without
        replacement (the salience is then ignored; ``replace`` draws with replacement).
    drop_ratio : the fraction r of channels to nullify, in [0, 1); ``round(r * C)`` are dropped.
    n_keep : alternatively, the number of channels to keep, in [1, C].
    rng : numpy Generator, required for 'random'.
    replace : 'random' only: draw the ``n_keep`` channels independently and uniformly, so a
        channel can repeat and fewer than ``n_keep`` distinct channels may be kept (the official
        synthetic script's ``np.random.randint``).  False (default): distinct channels.

    Returns
    -------
    (k,) int64 array of kept channel indices, sorted ascending (with ``replace`` a channel may
    appear more than once). Ties in salience are broken by
    channel index (stable sort).
    """
    p = np.asarray(salience.detach().cpu() if isinstance(salience, torch.Tensor) else salience,
                   dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"salience must be a non-empty (C,) vector, got shape {p.shape}")
    channels = p.size
    if (drop_ratio is None) == (n_keep is None):
        raise ValueError("give exactly one of drop_ratio and n_keep")
    if drop_ratio is not None:
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must lie in [0, 1), got {drop_ratio}")
        n_keep = channels - int(round(drop_ratio * channels))
    if not 1 <= n_keep <= channels:
        raise ValueError(f"n_keep must lie in [1, {channels}], got {n_keep}")
    if kind == "general":
        keep = np.argsort(-p, kind="stable")[:n_keep]
    elif kind == "specific":
        keep = np.argsort(p, kind="stable")[:n_keep]
    elif kind == "random":
        if rng is None:
            raise ValueError("kind 'random' needs rng (a numpy Generator)")
        keep = (rng.integers(0, channels, size=n_keep) if replace
                else rng.choice(channels, size=n_keep, replace=False))
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if replace and kind != "random":
        raise ValueError(f"replace applies to kind 'random' only, got kind {kind!r}")
    return np.sort(keep).astype(np.int64)


def channel_mask(keep, channels: int) -> torch.Tensor:
    """(C,) float mask: 1 on kept channels, 0 elsewhere."""
    keep = torch.as_tensor(np.asarray(keep), dtype=torch.long)
    if keep.numel() and (keep.min() < 0 or keep.max() >= channels):
        raise ValueError(f"kept channels must lie in [0, {channels})")
    mask = torch.zeros(channels)
    mask[keep] = 1.0
    return mask


def nullify_channels(x: torch.Tensor, keep, dim: int = 1) -> torch.Tensor:
    """``x`` with every channel outside ``keep`` set to zero (channels along ``dim``)."""
    mask = channel_mask(keep, x.shape[dim]).to(device=x.device, dtype=x.dtype)
    shape = [1] * x.dim()
    shape[dim] = -1
    return x * mask.view(shape)


def nullify_layer(layer: nn.Module, keep, dim: int = 1):
    """Zero the channels of ``layer``'s output outside ``keep`` on every forward pass.

    Returns the hook handle; ``handle.remove()`` restores the layer.
    """
    return layer.register_forward_hook(lambda m, i, out: nullify_channels(out, keep, dim))


def nullified_logits(model: nn.Module, inputs, layer: str, keep) -> torch.Tensor:
    """Logits of a Backbone (``cmkd.models.base``) with the channels of its feature ``layer``
    outside ``keep`` set to zero (MFH Sec. 5.4: a teacher derived by nullifying channels).

    ``layer`` is a name of ``model.feature_shapes``: ``'pooled'`` (the classifier's input) is
    masked before the classifier; any other name must also be a submodule of ``model`` whose
    output is that feature (``block2`` of the audio CNNs, ``conv2`` of LeNet-5, ``layer3`` of a
    ResNet), masked by a forward hook.

    inputs : the model's input tensors, one per modality; returns (batch, classes).
    """
    shapes = getattr(model, "feature_shapes", None) or {}
    if layer not in shapes:
        raise ValueError(f"layer must be one of the model's features {list(shapes)}, got "
                         f"{layer!r}")
    if layer == "pooled":
        feats = model.features(*inputs)
        return model.classify(nullify_channels(feats["pooled"], keep))
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise ValueError(f"feature {layer!r} is not the output of a submodule of "
                         f"{type(model).__name__}: nullify 'pooled' or a block's output")
    handle = nullify_layer(module, keep)
    try:
        return model(*inputs)
    finally:
        handle.remove()


class NullifiedModel(nn.Module):
    """A Backbone (``cmkd.models.base``) as the teacher MFH derives from it: the channels of its
    feature ``layer`` outside ``keep`` are zero on every forward pass.  Its logits are
    :func:`nullified_logits`'; :meth:`forward_features` returns them with the derived teacher's
    features (``pooled`` masked when ``layer`` is ``'pooled'``, computed from the masked layer
    otherwise), and :meth:`classify` is its head on the pooled features (masking them first
    when ``layer`` is ``'pooled'``), so code reading a model's logits, pooled features and head
    (``cmkd.diagnose``) sees the derived teacher."""

    def __init__(self, model: nn.Module, layer: str, keep):
        super().__init__()
        shapes = getattr(model, "feature_shapes", None) or {}
        if layer not in shapes:
            raise ValueError(f"layer must be one of the model's features {list(shapes)}, got "
                             f"{layer!r}")
        if layer != "pooled" and dict(model.named_modules()).get(layer) is None:
            raise ValueError(f"feature {layer!r} is not the output of a submodule of "
                             f"{type(model).__name__}: nullify 'pooled' or a block's output")
        channel_mask(keep, shapes[layer][0])  # kept channels in range
        self.model, self.layer = model, layer
        self.keep = [int(k) for k in np.asarray(keep).ravel()]
        self.classes, self.modalities = model.classes, model.modalities
        self.feature_shapes = model.feature_shapes

    def features(self, *inputs: torch.Tensor):
        if self.layer == "pooled":
            feats = self.model.features(*inputs)
            feats["pooled"] = nullify_channels(feats["pooled"], self.keep)
            return feats
        handle = nullify_layer(dict(self.model.named_modules())[self.layer], self.keep)
        try:
            return self.model.features(*inputs)
        finally:
            handle.remove()

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.layer == "pooled":
            pooled = nullify_channels(pooled, self.keep)
        return self.model.classify(pooled)

    def forward_features(self, *inputs: torch.Tensor):
        feats = self.features(*inputs)
        return self.classify(feats["pooled"]), feats

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.forward_features(*inputs)[0]


def recovery_rate(salience: torch.Tensor | np.ndarray, truth) -> float:
    """Fraction of the ``|truth|`` most salient channels that are in ``truth``.

    Chance level for a random ranking is ``|truth| / C``.
    """
    truth = np.asarray(truth, dtype=np.int64)
    if truth.size == 0:
        raise ValueError("truth must name at least one channel")
    top = select_channels(salience, "general", n_keep=truth.size)
    return float(np.isin(top, truth).mean())
