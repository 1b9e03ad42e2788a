"""Models: a registry of networks that return logits and named intermediate features.

``build(name, **options)`` makes a registered network, ``names()`` lists them, ``@register(name)``
adds one.  Every registered network is a :class:`Backbone` (:mod:`cmkd.models.base`):
``forward(*inputs)`` gives (batch, classes) logits; ``forward_features`` also gives named features
ending with ``"pooled"``; ``feature_shapes``, ``classes``, ``modalities``, ``blocks()``.

Registered: ``deeplabv3plus_resnet18`` / ``deeplabv3plus_mobilenet_v2`` (segmentation,
:mod:`~cmkd.models.deeplab`; the RGB-D teachers ``deeplabv3plus_sagate_resnet18`` /
``deeplabv3plus_cen_resnet18`` / ``deeplabv3plus_general_resnet18``, :mod:`~cmkd.models.rgbd`);
``resnet18`` / ``resnet34`` / ``resnet50``
(torchvision, spectrogram and multi-frame
stems) and ``r3d18`` (:mod:`~cmkd.models.resnet`); ``lenet5``, ``audio_cnn3`` / ``audio_cnn5`` /
``audio_cnn6`` (MFH Appendix B.1, :mod:`~cmkd.models.avmnist_cnn`); ``avdigits_cnn``
(:mod:`~cmkd.models.avdigits_cnn`); ``fusion_concat`` / ``fusion_film`` / ``fusion_ogm_ge``
(C2KD Table 7, with :func:`ogm_ge_coefficients` and :func:`ogm_ge_modulate_`,
:mod:`~cmkd.models.fusion`); ``mlp`` (:mod:`~cmkd.models.mlp`); ``proxy_head``
(:mod:`~cmkd.models.proxy`: C2KD's proxies, SHAKE's shadow head).

Stacks of runs: ``stacked(name, seeds, **options)`` builds R independent runs of a registered
network as one module with a leading run dimension, trained at once by :func:`cmkd.engine.fit`:
grouped layers where the model has them (``mlp`` -> :class:`BatchedMLP`,
:mod:`~cmkd.models.batched`), ``torch.func`` otherwise (:class:`Stacked`,
:mod:`~cmkd.models.stack`).

The modules methods train beside the student: :mod:`~cmkd.models.proxy` (:class:`ProxyHead`,
:class:`BatchedProxyHead`) and :mod:`~cmkd.models.auxiliary` (FitNet's hint regressor, Review's
fusion).
"""
from cmkd.models import (  # noqa: F401
    avdigits_cnn,
    avmnist_cnn,
    deeplab,
    fusion,
    mlp,
    proxy,
    resnet,
    rgbd,  # noqa: F401
)
from cmkd.models.auxiliary import ReviewFusion, hint_regressor
from cmkd.models.base import Backbone
from cmkd.models.batched import (
    BatchedBatchNorm,
    BatchedLinear,
    BatchedMLP,
    init_linear_batched,
    linear_logits,
    merge_runs,
    run_count,
    run_state,
)
from cmkd.models.fusion import LateFusion, ogm_ge_coefficients, ogm_ge_modulate_
from cmkd.models.mlp import MLP
from cmkd.models.proxy import BatchedProxyHead, ProxyHead
from cmkd.models.registry import build, names, options, register, register_stacked, stacked
from cmkd.models.stack import Stacked

__all__ = ["MLP", "Backbone", "BatchedBatchNorm", "BatchedLinear", "BatchedMLP",
           "BatchedProxyHead", "LateFusion", "ProxyHead", "ReviewFusion", "Stacked", "build",
           "hint_regressor", "init_linear_batched", "linear_logits", "merge_runs", "names",
           "ogm_ge_coefficients", "ogm_ge_modulate_", "options", "register", "register_stacked",
           "run_count", "run_state", "stacked"]
