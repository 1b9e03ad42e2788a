"""The model registry: find a network by name, build it from keyword options.

``build("resnet18", classes=6, in_channels=1)``; ``names()`` lists what is registered.  Options are
checked against the factory's signature before anything is built, so a misspelt option or model
name fails at once with the allowed names.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
#: name -> factory(seeds, **options) of a model's own stacked form (see :func:`stacked`)
_STACKED: dict[str, Callable[..., nn.Module]] = {}


def _adder(table: dict, name: str, taken: str) -> Callable:
    def deco(factory: Callable) -> Callable:
        if name in table:
            raise ValueError(f"model {name!r} {taken}")
        table[name] = factory
        return factory

    return deco


def register(name: str) -> Callable:
    """Decorator registering a factory (a class or a function returning a
    :class:`cmkd.models.base.Backbone`) under ``name``."""
    return _adder(_REGISTRY, name, "is already registered")


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def options(name: str) -> dict[str, object]:
    """``{option: default}`` of model ``name`` (``inspect.Parameter.empty`` when required)."""
    return {p.name: p.default for p in inspect.signature(_factory(name)).parameters.values()}


def _factory(name: str) -> Callable:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; registered models: "
                         f"{', '.join(names())}")
    return _REGISTRY[name]


def register_stacked(name: str) -> Callable:
    """Decorator registering the stacked form of model ``name``: a factory ``(seeds, **options)``
    returning ``len(seeds)`` runs of it as one module with a leading run dimension (grouped
    layers, e.g. :class:`cmkd.models.batched.BatchedMLP` for ``mlp``)."""
    return _adder(_STACKED, name, "already has a stacked form")


def build(name: str, **opts) -> nn.Module:
    """Build the registered model ``name`` with keyword options (its factory's arguments).

    Raises ValueError naming the model and its allowed options when an option is unknown or a
    required one (such as ``classes``) is missing; values are checked by the model itself.
    """
    return _factory(name)(**_checked(name, opts))


def stacked(name: str, seeds: Sequence[int], **opts) -> nn.Module:
    """``len(seeds)`` independent runs of model ``name`` as one module: inputs (R, batch, ...)
    -> logits (R, batch, classes), every tensor of its state with the runs first.

    Run ``r`` is initialised from ``seeds[r]``.  The model's own stacked form when it has one
    (:func:`register_stacked`: ``mlp`` -> grouped layers), else :class:`cmkd.models.Stacked`
    over ``len(seeds)`` copies, copy ``r`` built after ``torch.manual_seed(seeds[r])`` (the
    global generator is restored after).  Options are checked as :func:`build` checks them.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError(f"model {name!r}: a stack needs at least one seed")
    opts = _checked(name, opts)
    if name in _STACKED:
        return _STACKED[name](seeds, **opts)
    from cmkd.models.stack import Stacked

    copies = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            copies.append(_factory(name)(**opts))
    return Stacked(copies)


def _checked(name: str, opts: dict) -> dict:
    factory = _factory(name)
    sig = inspect.signature(factory)
    allowed = [p.name for p in sig.parameters.values()]
    described = ", ".join(p.name if p.default is inspect.Parameter.empty
                          else f"{p.name}={p.default!r}" for p in sig.parameters.values())
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, allowed, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"model {name!r}: unknown option(s) {', '.join(hints)}; "
                         f"allowed options: {described}")
    missing = [p.name for p in sig.parameters.values()
               if p.default is inspect.Parameter.empty and p.name not in opts]
    if missing:
        raise ValueError(f"model {name!r}: missing required option(s) {', '.join(missing)}; "
                         f"allowed options: {described}")
    return opts
