"""Distillation methods: a registry of small objects over the pure losses of :mod:`cmkd.distill`.

``build(name, hparams, student=..., teacher=..., classes=...)`` makes a method by name with its
hyperparameters validated; ``names()`` lists them; ``get(name)`` returns the class;
``@register`` adds one.  One small file per method: ``nokd``, ``kd``, ``fitnet``, ``review``,
``dml``, ``shake``, ``rkd``, ``dkd``, ``dist``, ``nkd``, ``c2kd`` (with its ablations), ``cirkd``
(segmentation; every logit method also takes per-pixel logits, :mod:`cmkd.distill.dense`), the
self-distillation baselines ``dlb``, ``zipf``, ``uskd``, and ``ogm_ge`` (a fusion teacher's
training).  Named presets (:data:`PRESETS`: C2KD's ablations such as ``c2kd_bd`` or
``c2kd_official``, its filters and its bases) build like methods:
``build('c2kd_bd', {'omega': 0.2}, ...)``; :func:`resolve` gives their method and
hyperparameters, :func:`hparams_for` adds a notebook's per-method settings (a params file's
``method_hparams: {kd: {temperature: 4}, c2kd: {omega: 0.1}}``, checked by
:func:`check_method_hparams`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from cmkd.methods.base import REGISTRY, TEACHER_UPDATES, Method, register
from cmkd.params import ParamError

# the methods register themselves on import
from cmkd.methods import (  # noqa: E402,F401,I001  isort: skip
    c2kd, cirkd, dist, dkd, dlb, dml, fitnet, kd, nkd, nokd, ogm_ge, review, rkd, shake, uskd,
    zipf)
from cmkd.methods.c2kd import C2KD_PRESETS  # noqa: E402  isort: skip

#: preset name -> (method name, hyperparameters): named variants a grid can say by name
#: (C2KD's ablations, :data:`cmkd.methods.c2kd.C2KD_PRESETS`; SHAKE on raw logits; DKD's two
#: terms alone, C2KD Table 2's TCKD and NCKD rows).  A
#: registered method's own name is not a preset ('c2kd' is the method with its defaults).
PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("c2kd", dict(hp)) for name, hp in C2KD_PRESETS.items() if name != "c2kd"},
    # SHAKE on the raw logits: the official layer norm x 3.1415 scales the first gradients by
    # pi / sigma(logits) (about 40 at initialisation on the small CNNs) and stalls training
    "shake_raw": ("shake", {"layer_norm": False}),
    # C2KD Table 2's decoupled rows: DKD (Eq. 2) with one of its two terms, the other weighted 0
    # (TCKD: alpha 1, beta 0; NCKD: alpha 0, beta 8, DKD's default weight of that term)
    "tckd": ("dkd", {"beta": 0.0}),
    "nckd": ("dkd", {"alpha": 0.0}),
}


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(REGISTRY)


def get(name: str) -> type[Method]:
    """The Method class registered as ``name``; a ParamError naming the known ones otherwise."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParamError("method", f"unknown method {name!r}{hint}; known methods: "
                                   f"{', '.join(names())}")
    return REGISTRY[name]


def resolve(name: str, hparams: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """``(method name, hyperparameters)`` of a method or a preset (:data:`PRESETS`): a
    preset's hyperparameters under ``hparams`` (which win)."""
    if name in PRESETS and name not in REGISTRY:
        method, preset = PRESETS[name]
        return method, {**preset, **dict(hparams or {})}
    get(name)
    return name, dict(hparams or {})


def hparams_for(name: str, overrides: Mapping[str, Mapping] | None = None,
                row: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """``(registry method, hyperparameters)`` of method or preset ``name``, in this order of
    precedence (later wins): the registry's defaults, ``overrides[method]`` (a notebook's setting
    for every preset of that method, e.g. C2KD's omega), the preset's own switches,
    ``overrides[name]`` (for this preset only) and ``row`` (what a table row itself varies, e.g.
    Fig. 4's threshold).  Nothing is validated here: building the method (or a Job) does it."""
    overrides = overrides or {}
    method, preset = resolve(name)
    values = {**dict(overrides.get(method, {})), **preset}
    if name != method:
        values.update(overrides.get(name, {}))
    values.update(row or {})
    return method, values


def check_method_hparams(overrides: Mapping[str, Any]) -> None:
    """Validate a params file's ``method_hparams``: each name a method or preset, each value a
    mapping its method's ``Hparams`` accept (a ParamError naming the method and the parameter
    otherwise)."""
    for name, values in overrides.items():  # every entry's shape first: a preset's check
        resolve(name)                        # reads its method's entry too
        if not isinstance(values, Mapping):
            raise ParamError(None, f"{name!r}: expected a mapping of hyperparameter names to "
                                   f"values, got {values!r}")
    for name in overrides:
        method, values = hparams_for(name, overrides)
        get(method).make_hparams(values)


def build(name: str, hparams: Mapping[str, Any] | None = None, **kwargs) -> Method:
    """Make method (or preset, :data:`PRESETS`) ``name`` with ``hparams`` (validated; missing
    ones take their defaults).

    ``kwargs``: ``student``, ``teacher``, ``classes`` and optionally ``student_inputs``,
    ``teacher_inputs``, ``runs``, ``seeds`` (see :class:`cmkd.methods.base.Method`).
    """
    if hparams is not None and not isinstance(hparams, Mapping):
        raise ParamError(None, f"hyperparameters must be a mapping of names to values, got "
                               f"{type(hparams).__name__}", f"method {name!r}")
    method, values = resolve(name, hparams)
    cls = get(method)
    return cls(cls.make_hparams(values), **kwargs)


__all__ = ["C2KD_PRESETS", "Method", "PRESETS", "REGISTRY", "TEACHER_UPDATES", "build",
           "check_method_hparams", "get", "hparams_for", "names", "register", "resolve"]
