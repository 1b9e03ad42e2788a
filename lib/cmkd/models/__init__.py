"""Models: a registry of networks that return logits and named intermediate features.

``build(name, **options)`` makes a registered network, ``names()`` lists them, ``@register(name)``
adds one.  Every registered network is a :class:`Backbone` (:mod:`cmkd.models.base`):
``forward(*inputs)`` gives (batch, classes) logits; ``forward_features`` also gives named features
ending with ``"pooled"``; ``feature_shapes``, ``classes``, ``modalities``, ``blocks()``.

Registered: ``resnet18`` / ``resnet34`` / ``resnet50`` (torchvision, spectrogram and multi-frame
stems) and ``r3d18`` (:mod:`~cmkd.models.resnet`); ``lenet5``, ``audio_cnn3`` / ``audio_cnn5`` /
``audio_cnn6`` (MFH Appendix B.1, :mod:`~cmkd.models.avmnist_cnn`); ``avdigits_cnn``
(:mod:`~cmkd.models.avdigits_cnn`); ``fusion_concat`` / ``fusion_film`` / ``fusion_ogm_ge``
(C2KD Table 7, with :func:`ogm_ge_coefficients` and :func:`ogm_ge_modulate_`,
:mod:`~cmkd.models.fusion`); ``mlp`` (:mod:`~cmkd.models.mlp`); ``proxy_head``
(:mod:`~cmkd.models.proxy`).

The batched MLPs (``Batched*``, a leading run dimension, notebook 08's fast path) are plain
modules outside the registry.
"""
from cmkd.models import avdigits_cnn, avmnist_cnn, fusion, proxy, resnet  # noqa: F401 (register)
from cmkd.models.base import Backbone
from cmkd.models.fusion import LateFusion, ogm_ge_coefficients, ogm_ge_modulate_
from cmkd.models.mlp import MLP, BatchedBatchNorm, BatchedLinear, BatchedMLP, BatchedProxyHead
from cmkd.models.registry import build, names, options, register

__all__ = ["MLP", "Backbone", "BatchedBatchNorm", "BatchedLinear", "BatchedMLP",
           "BatchedProxyHead", "LateFusion", "build", "names", "ogm_ge_coefficients",
           "ogm_ge_modulate_", "options", "register"]
