"""Distillation methods: a registry of small objects over the pure losses of :mod:`cmkd.distill`.

``build(name, hparams, student=..., teacher=..., classes=...)`` makes a method by name with its
hyperparameters validated (a params file says ``methods: {kd: {temperature: 4}}``); ``names()``
lists them; ``get(name)`` returns the class; ``@register`` adds one.  One small file per method.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from cmkd.methods.base import REGISTRY, TEACHER_UPDATES, Method, register
from cmkd.params import ParamError

# the methods register themselves on import
from cmkd.methods import fitnet, kd, nokd, review, rkd, shake  # noqa: E402,F401,I001  isort: skip


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


def build(name: str, hparams: Mapping[str, Any] | None = None, **kwargs) -> Method:
    """Make method ``name`` with ``hparams`` (validated; missing ones take their defaults).

    ``kwargs``: ``student``, ``teacher``, ``classes`` and optionally ``student_inputs``,
    ``teacher_inputs``, ``runs`` (see :class:`cmkd.methods.base.Method`).
    """
    cls = get(name)
    return cls(cls.make_hparams(hparams), **kwargs)


__all__ = ["Method", "REGISTRY", "TEACHER_UPDATES", "build", "get", "names", "register"]
