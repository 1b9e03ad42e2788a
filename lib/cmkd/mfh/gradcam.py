"""Grad-CAM (Selvaraju et al., ICCV 2017) of a registry network, optionally with channels
nullified (MFH Fig. 4: where a regular and a modality-general teacher look).

The map of sample i for class t is ``ReLU(sum_c w_c A_c)`` with ``A`` the feature map of
``layer`` and ``w_c`` the spatial mean of ``d logit_t / d A_c``; it is upsampled (bilinear) to the
input's size and divided by its maximum.  The features come from the Backbone contract
(``model.features``), so no hook reaches into the network except to nullify a block's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmkd.mfh.selection import nullify_channels, nullify_layer


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, *, target: torch.Tensor | None = None,
             keep=None, keep_layer: str = "pooled") -> torch.Tensor:
    """Class activation maps of a single-input Backbone.

    Parameters
    ----------
    model : a Backbone (``features``, ``classify``) in eval mode; x : (B, C, H, W) inputs
    layer : the feature map explained (a name of ``model.feature_shapes`` with spatial dims)
    target : (B,) classes explained; None: the predicted classes (of the nullified model)
    keep, keep_layer : channels of the feature ``keep_layer`` kept (others zeroed), as
        :func:`cmkd.mfh.nullified_logits` derives a teacher; None: the regular model

    Returns
    -------
    (B, H, W) maps in [0, 1] (0 where the map is zero everywhere).
    """
    if layer == "pooled" or layer not in getattr(model, "feature_shapes", {}):
        raise ValueError(f"layer must be a feature map of the model, one of "
                         f"{[k for k in model.feature_shapes if k != 'pooled']}, got {layer!r}")
    handle = None
    if keep is not None and keep_layer != "pooled":
        handle = nullify_layer(dict(model.named_modules())[keep_layer], keep)
    try:
        with torch.enable_grad():
            feats = model.features(x)
            fmap = feats[layer]
            pooled = feats["pooled"]
            if keep is not None and keep_layer == "pooled":
                pooled = nullify_channels(pooled, keep)
            logits = model.classify(pooled)
            t = logits.argmax(1) if target is None else target
            score = logits.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(score, fmap)
    finally:
        if handle is not None:
            handle.remove()
    weights = grad.flatten(2).mean(-1)[..., None, None]  # (B, C, 1, 1)
    cam = F.relu((weights * fmap).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return cam / top
