"""Distillation methods: a registry of small objects over the pure losses of :mod:`cmkd.distill`.

``build(name, hparams, student=..., teacher=..., classes=...)`` makes a method by name with its
hyperparameters validated; ``names()`` lists them; ``get(name)`` returns the class;
``@register`` adds one.  One small file per method: ``nokd``, ``kd``, ``kd_nullified`` (KD from
a teacher with channels of one layer zeroed, MFH Sec. 5.4), ``fitnet``, ``review``,
``dml``, ``shake``, ``rkd``, ``dkd``, ``dist``, ``nkd``, ``c2kd`` (with its ablations), ``cirkd``
(segmentation; every logit method also takes per-pixel logits, :mod:`cmkd.distill.dense`), the
self-distillation baselines ``dlb``, ``zipf``, ``uskd``, and ``ogm_ge`` (a fusion teacher's
training).  Named presets (:data:`PRESETS`: C2KD's ablations such as ``c2kd_bd`` or
``c2kd_official``, its filters and its bases) build like methods:
``build('c2kd_bd', {'omega': 0.2}, ...)``; :func:`resolve` gives their method and
hyperparameters, :func:`hparams_for` adds a notebook's per-method settings (a params file's
``method_hparams: {kd: {temperature: 4}, c2kd: {omega: 0.1}}``, checked by
:func:`check_method_hparams`).

Methods from outside the package.  A module of yours that defines a :class:`Method` subclass
decorated with ``@register`` (or calls ``register(cls)``) adds it when imported: name the module
in a params file's ``method_modules`` (notebooks 06 and 08; checked for its form by
:func:`check_module`, found on sys.path without importing it by :func:`find_modules`, imported by
:func:`import_modules` when the notebook runs), or install a package that declares it in the entry
point group ``cmkd.methods`` (``mymethod = "my_pkg.my_methods"``: the name is known without
importing anything; the module is imported the first time the method is built).  The job runner
imports a job's method module in its worker processes too (:func:`user_module`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from cmkd.methods.base import REGISTRY, TEACHER_UPDATES, Method, register
from cmkd.params import ParamError
from cmkd.text import quote, shorten

# the methods register themselves on import
from cmkd.methods import (  # noqa: E402,F401,I001  isort: skip
    c2kd, cirkd, dist, dkd, dlb, dml, fitnet, kd, kd_nullified, nkd, nokd, ogm_ge, pseudo_label,
    review, rkd, shake, uskd, zipf)
from cmkd.methods.c2kd import C2KD_PRESETS  # noqa: E402  isort: skip

#: C2KD Table 2's logit-KD rows and the registry method and switches of each: KD, and DKD (Eq. 2)
#: with one of its two terms, the other weighted 0 (TCKD: alpha 1, beta 0; NCKD: alpha 0, beta 8,
#: DKD's default weight of that term)
TABLE2_BASES: dict[str, tuple[str, dict]] = {"kd": ("kd", {}), "tckd": ("dkd", {"beta": 0.0}),
                                             "nckd": ("dkd", {"alpha": 0.0})}

#: preset name -> (method name, hyperparameters): named variants a grid can say by name
#: (C2KD's ablations, :data:`cmkd.methods.c2kd.C2KD_PRESETS`; SHAKE on raw logits; C2KD Table
#: 2's TCKD and NCKD rows and its "+KRC" / "+Random" filters of KD, TCKD and NCKD, e.g.
#: ``kd_krc``, ``nckd_random``: :mod:`cmkd.methods.selection`).  A registered method's own
#: name is not a preset ('c2kd' is the method with its defaults).
PRESETS: dict[str, tuple[str, dict]] = {
    **{name: ("c2kd", dict(hp)) for name, hp in C2KD_PRESETS.items() if name != "c2kd"},
    # SHAKE on the raw logits: the official layer norm x 3.1415 scales the first gradients by
    # pi / sigma(logits) (about 40 at initialisation on the small CNNs) and stalls training
    "shake_raw": ("shake", {"layer_norm": False}),
    **{name: (method, dict(hp)) for name, (method, hp) in TABLE2_BASES.items() if name != method},
    **{f"{name}_{select}": (method, {**hp, "select": select})
       for name, (method, hp) in TABLE2_BASES.items() for select in ("krc", "random")},
}


#: The entry-point group of methods of installed packages: ``name = "package.module"`` (or
#: ``"package.module:Class"``); importing the module registers method ``name``.
ENTRY_POINT_GROUP = "cmkd.methods"


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(REGISTRY)


def _entry_points() -> dict:
    """name -> entry point of the group :data:`ENTRY_POINT_GROUP` (nothing imported)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known(name: str) -> bool:
    """Whether ``name`` is a registered method, a preset or the name of an installed package's
    entry point (:data:`ENTRY_POINT_GROUP`), without importing anything."""
    return name in REGISTRY or name in PRESETS or name in _entry_points()


def _load_entry_point(name: str) -> None:
    """Import the module of entry point ``name`` (its import registers the method; a Method
    subclass it points to is registered if its module did not)."""
    ep = _entry_points().get(name)
    if ep is None:
        return
    obj = ep.load()
    if isinstance(obj, type) and issubclass(obj, Method) and obj.name not in REGISTRY:
        register(obj)


def check_module(name) -> None:
    """A ``method_modules`` item, checked for its form only (nothing found or imported): a dotted
    module path (``'my_pkg.my_methods'``) outside the modules that run commands or code
    (:data:`cmkd.data.crisismmd.REFUSED_MODULES`: os, subprocess, builtins, ...); ValueError
    otherwise."""
    from cmkd.data.crisismmd import REFUSED_MODULES

    if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
        raise ValueError(f"{quote(name)} is not a module import path (e.g. 'my_pkg.my_methods')")
    top = name.split(".")[0]
    if top in REFUSED_MODULES:
        *first, last = sorted(m for m in REFUSED_MODULES if not m.startswith("_"))
        raise ValueError(f"{quote(name)} refused: its module is {top!r}; a method module is "
                         f"code of yours that registers methods, not {', '.join(first)} or "
                         f"{last}")


def find_modules(modules: Iterable[str], param: str = "method_modules") -> None:
    """Check that every module of ``modules`` is well formed (:func:`check_module`) and found
    on sys.path, without importing it (the preflight of a params file); a ParamError naming
    ``param`` otherwise."""
    from cmkd.data.crisismmd import _module_found

    for name in modules:
        try:
            check_module(name)
        except ValueError as err:
            raise ParamError(param, str(err)) from None
        if not _module_found(name):
            raise ParamError(param, f"cannot find module {quote(name)}: is it on sys.path "
                                    f"(PYTHONPATH, or the notebook's folder)?")


def import_modules(modules: Iterable[str], param: str = "method_modules") -> None:
    """Import the user's method modules (this runs them: they register their methods), each
    checked first (:func:`check_module`); a ParamError naming ``param`` when one is refused or
    cannot be imported."""
    for name in modules:
        try:
            check_module(name)
        except ValueError as err:
            raise ParamError(param, str(err)) from None
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or an error raised while importing it
            raise ParamError(param, f"cannot import module {quote(name)} ({type(err).__name__}: "
                                    f"{shorten(str(err))}); is it on sys.path (PYTHONPATH)?"
                             ) from err


def user_module(name: str) -> str | None:
    """The module that defines method (or preset) ``name`` when it is not part of cmkd (a user
    module, or an installed package's): what a worker process imports before it builds the
    method.  None for cmkd's own methods."""
    cls = REGISTRY.get(resolve(name)[0])
    module = getattr(cls, "__module__", "cmkd")
    return None if module == "cmkd" or module.startswith("cmkd.") else module


def check_names(names: Iterable[str], param: str, modules: Iterable[str] = ()) -> None:
    """Every name of ``names`` is a method or preset (:func:`known`); with ``modules`` (the
    params file's ``method_modules``, not imported yet), other names are left to
    :func:`activate`.  A ParamError naming ``param`` otherwise."""
    if list(modules):
        return
    for name in names:
        if not known(name):
            try:
                get(name)
            except ParamError as err:
                raise ParamError(param, f"{err.message} (a method of your own: name the module "
                                        f"that registers it in method_modules)") from None


def activate(modules: Iterable[str], method_hparams: Mapping[str, Any],
             names: Iterable[str] = (), param: str = "methods") -> None:
    """What a notebook does before it builds its jobs: import the params file's method
    ``modules`` (:func:`import_modules`), then check that every name of ``names`` (``param``)
    and of ``method_hparams`` is a method or preset now, and the hyperparameters
    (:func:`check_method_hparams`).  ParamError naming the parameter otherwise."""
    modules = list(modules)
    import_modules(modules)
    after = f" (after importing method_modules {', '.join(modules)})" if modules else ""
    for name in names:
        try:
            resolve(name)
        except ParamError as err:
            raise ParamError(param, err.message + after) from None
    try:
        check_method_hparams(method_hparams)
    except ParamError as err:
        raise ParamError("method_hparams", str(err) + after) from None


def get(name: str) -> type[Method]:
    """The Method class registered as ``name`` (an installed package's entry point of that name
    is imported first); a ParamError naming the known ones otherwise."""
    if name not in REGISTRY:
        _load_entry_point(name)
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


def check_method_hparams(overrides: Mapping[str, Any], defer_unknown: bool = False) -> None:
    """Validate a params file's ``method_hparams``: each name a method or preset, each value a
    mapping its method's ``Hparams`` accept (a ParamError naming the method and the parameter
    otherwise).  ``defer_unknown``: names not registered yet (methods of the user's modules,
    imported later; :func:`check_names` decides whether they may be) are checked for their shape
    only, their hyperparameters by :func:`activate` once registered."""
    for name, values in overrides.items():  # every entry's shape first: a preset's check
        if not (defer_unknown and name not in REGISTRY and name not in PRESETS):
            resolve(name)                    # reads its method's entry too
        if not isinstance(values, Mapping):
            raise ParamError(None, f"{name!r}: expected a mapping of hyperparameter names to "
                                   f"values, got {values!r}")
    for name in overrides:
        if defer_unknown and name not in REGISTRY and name not in PRESETS:
            continue
        method, values = hparams_for(name, overrides)
        get(method).make_hparams(values)


def check_method_hparams_deferred(overrides: Mapping[str, Any]) -> None:
    """A Config field's validator: :func:`check_method_hparams` with the names not registered
    yet left to the Config's ``check`` (:func:`check_names`) and to :func:`activate`."""
    check_method_hparams(overrides, defer_unknown=True)


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


__all__ = ["C2KD_PRESETS", "ENTRY_POINT_GROUP", "Method", "PRESETS", "REGISTRY",
           "TABLE2_BASES", "TEACHER_UPDATES", "activate", "build", "check_method_hparams",
           "check_method_hparams_deferred", "check_module", "check_names", "find_modules", "get",
           "hparams_for", "import_modules", "known", "names", "register", "resolve",
           "user_module"]
