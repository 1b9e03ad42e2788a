"""Parameters: one loader and validator for every notebook's parameters.

Each experiment module declares a frozen dataclass ``Config`` whose fields are the notebook's
parameters (the notebook's ``parameters`` cell holds the smoke defaults).  Field metadata, made
with :func:`spec`, say what a value may be.  :func:`load_params` reads a YAML file under params/ and
:func:`from_mapping` checks names, types and ranges before any compute, raising
:class:`ParamError` with a message that names the file, the parameter and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cmkd.text import TextError, quote, read_utf8, shorten

#: Notebook parameters that every notebook has and that are not experiment settings.
RESERVED = ("profile",)
#: Seeds lie in [0, SEED_MAX] (torch.manual_seed and NumPy take at most 64 bits; a base seed
#: plus a run number must still fit).
SEED_MAX = 2**63 - 1


class ParamError(ValueError):
    """A parameter (or a params file) that cannot be used."""

    def __init__(self, name: str | None, message: str, source: str | None = None):
        self.name, self.message, self.source = name, message, source
        super().__init__(str(self))

    def __reduce__(self):
        # pickled with its three fields (a job's error travels back from a worker process)
        return type(self), (self.name, self.message, self.source), self.__dict__

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"parameter '{shorten(self.name)}': " if self.name else ""
        return f"{where}{what}{self.message}"


def spec(doc: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, choices: tuple | None = None,
         min_items: int = 0, unique: bool = True, seed: bool = False, at_most: str | None = None,
         validate: Callable[[Any], Any] | None = None) -> dict:
    """Field metadata: documentation and the allowed values (checked per item for lists).

    ``unique``: a list may not hold an item twice (a dataset or a gamma listed twice would run
    and count twice); False for a list whose items may repeat (layers paired by position).
    ``seed``: the value (each item of a list) is a seed, in [0, :data:`SEED_MAX`]; parameters
    named ``seed``, ``seeds`` or ``*_seed`` are seeds without saying so.
    ``at_most``: the name of another parameter whose value this one must not exceed (checked
    when both are given).
    ``validate`` is called on the (converted) value after the other checks; a ValueError or
    RuntimeError it raises becomes a :class:`ParamError` naming the parameter (for example
    :func:`cmkd.runtime.device_available`: a device this machine lacks is refused before compute).
    """
    return {"doc": doc, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": choices, "min_items": min_items, "unique": unique, "seed": seed,
            "at_most": at_most, "validate": validate}


def is_seed(name: str, meta: Mapping) -> bool:
    """Whether parameter ``name`` with metadata ``meta`` holds seeds."""
    return bool(meta.get("seed")) or name in ("seed", "seeds") or name.endswith("_seed")


def check_each(name: str, values, convert: Callable[[Any], Any]) -> None:
    """For a Config's ``check()``: call ``convert`` on every item of parameter ``name`` (a
    function raising ValueError on a value it cannot use, such as ``mvd.gamma_to_overlap``) and
    turn its ValueError into a :class:`ParamError` naming the parameter."""
    for value in values:
        try:
            convert(value)
        except ValueError as err:
            raise ParamError(name, str(err)) from None


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is dict or origin is dict:
        return "mapping"
    if origin is list:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def _coerce_scalar(value: Any, tp: type, name: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParamError(name, f"{quote(value)} is not a finite number (NaN and "
                                       "infinities are not allowed)")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a programming error in a Config
        raise TypeError(f"unsupported parameter type {tp!r} for {name}")
    raise ParamError(name, f"expected {tp.__name__}, got {quote(value)} "
                           f"({type(value).__name__})")


def _check_range(value: Any, meta: Mapping, name: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ParamError(name, f"{quote(value)} is not allowed; choose one of {allowed}")
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
    if too_low or too_high:
        left = "(" if meta.get("low_open") else "["
        right = ")" if meta.get("high_open") else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ParamError(name, f"{quote(value)} is out of range; allowed: "
                               f"{left}{lo}, {hi}{right}")


def _plain(value: Any, name: str) -> Any:
    """``value`` as plain data (mappings with string keys, lists, finite numbers, strings,
    booleans, None), or a ParamError naming where it is not."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamError(name, f"{quote(value)} is not a finite number (NaN and infinities "
                                   "are not allowed)")
        return value
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ParamError(name, f"keys must be names (strings), got {quote(bad[0])}")
        return {k: _plain(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    raise ParamError(name, f"expected plain data (numbers, strings, lists, mappings), got "
                           f"{type(value).__name__} {quote(value)}")


def _convert(value: Any, tp, meta: Mapping, name: str) -> Any:
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, Mapping):
            raise ParamError(name, f"expected a mapping, got {quote(value)}")
        converted = _plain(value, name)
        _run_validator(converted, meta, name)
        return converted
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamError(name, f"expected a list of {item_tp.__name__}, got "
                                   f"{quote(value)}")
        if len(value) < meta.get("min_items", 0):
            raise ParamError(name, f"needs at least {meta['min_items']} item(s), got {len(value)}")
        items = [_coerce_scalar(v, item_tp, name) for v in value]
        for v in items:
            _check_range(v, meta, name)
            _check_seed(v, meta, name)
            _run_validator(v, meta, name)
        if meta.get("unique", True):
            _check_unique(items, name)
        return items
    converted = _coerce_scalar(value, tp, name)
    _check_range(converted, meta, name)
    _check_seed(converted, meta, name)
    _run_validator(converted, meta, name)
    return converted


def _check_unique(items: list, name: str) -> None:
    seen = set()
    for v in items:
        if v in seen:
            raise ParamError(name, f"{quote(v)} is listed twice; list each item once")
        seen.add(v)


def _check_seed(value: Any, meta: Mapping, name: str) -> None:
    if is_seed(name, meta) and isinstance(value, int) and not 0 <= value <= SEED_MAX:
        raise ParamError(name, f"{quote(value)} is out of range; a seed lies in [0, 2**63 - 1]")


def _run_validator(value: Any, meta: Mapping, name: str) -> None:
    validate = meta.get("validate")
    if validate is None:
        return
    try:
        validate(value)
    except (ValueError, RuntimeError) as err:
        raise ParamError(name, str(err)) from None


@functools.cache
def _hints(config_cls) -> dict[str, Any]:
    """The resolved type hints of a Config class (resolving string annotations compiles each
    one, so it is done once per class)."""
    return typing.get_type_hints(config_cls)


def fields(config_cls) -> dict[str, dataclasses.Field]:
    """The parameters of a Config class, by name."""
    return {f.name: f for f in dataclasses.fields(config_cls)}


def from_mapping(config_cls, values: Mapping[str, Any], source: str = "<parameters>",
                 partial: bool = False):
    """Validate ``values`` and build ``config_cls`` from them.

    Parameters
    ----------
    config_cls : a dataclass whose fields carry :func:`spec` metadata.
    values : mapping of parameter name to value (reserved names such as 'profile' are ignored;
        a parameter whose field has a default may be left out).
    source : where the values come from, for error messages (a params file path).
    partial : if True, missing names are allowed and only the given ones are checked; the
        result is then the dict of checked values rather than a Config.
    """
    if not isinstance(values, Mapping):
        raise ParamError(None, f"expected a mapping of parameter names to values, got "
                               f"{type(values).__name__}", source)
    known = fields(config_cls)
    hints = _hints(config_cls)
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in RESERVED:
            continue
        if name not in known:
            close = difflib.get_close_matches(shorten(str(name)), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            allowed = ", ".join(sorted(known))
            raise ParamError(name, f"unknown parameter{hint}; known parameters: {allowed}", source)
        try:
            out[name] = _convert(value, hints[name], known[name].metadata, name)
        except ParamError as err:
            raise ParamError(err.name, err.message, source) from None
    for name, value in out.items():
        bound = known[name].metadata.get("at_most")
        if bound is not None and bound in out and value > out[bound]:
            raise ParamError(name, f"{quote(value)} must not exceed {bound} ({quote(out[bound])})",
                             source)
    # a field with a default (a later addition, such as method_modules) may be left out
    missing = [n for n, f in known.items() if n not in out and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if partial:
        return out
    if missing:
        raise ParamError(None, f"missing parameter(s): {', '.join(missing)}", source)
    config = config_cls(**out)
    check = getattr(config, "check", None)
    if check is not None:
        try:
            check()
        except ParamError as err:
            raise ParamError(err.name, err.message, source) from None
    return config


def from_namespace(config_cls, namespace: Mapping[str, Any], source: str = "notebook parameters"):
    """Build a Config from a namespace holding its fields (a notebook's ``globals()``)."""
    return from_mapping(config_cls, {n: namespace[n] for n in fields(config_cls) if n in namespace},
                        source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last
    value silently, so a params file could say one thing and run another)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ParamError(str(key), f"given twice (lines {seen[key]} and "
                                           f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a params file into a dict, with a clear error for a missing or malformed file, a
    file that is not UTF-8 text (its line named) or a key given twice."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(None, "params file not found", str(path))
    try:
        data = yaml.load(read_utf8(path, ""), Loader=_UniqueKeyLoader) or {}
    except TextError as err:
        raise ParamError(None, f"line {err.line}, column {err.column}: {err.reason}",
                         str(path)) from None
    except ParamError as err:
        raise ParamError(err.name, err.message, str(path)) from None
    except yaml.YAMLError as err:
        raise ParamError(None, f"not valid YAML: {err}", str(path)) from None
    if not isinstance(data, dict):
        raise ParamError(None, "a params file must be a mapping of parameter names to values",
                         str(path))
    return data


def load_params(path: str | Path, config_cls, display_path: str | None = None):
    """Read and validate a params file; returns the Config."""
    return from_mapping(config_cls, read_yaml(path), display_path or str(path))


def describe(config_cls) -> str:
    """One line per parameter: name, type, what it means and what is allowed."""
    hints = _hints(config_cls)
    lines = []
    for name, f in fields(config_cls).items():
        meta = f.metadata
        extra = []
        if meta.get("choices"):
            extra.append("one of " + ", ".join(repr(c) for c in meta["choices"]))
        if meta.get("low") is not None or meta.get("high") is not None:
            extra.append(f"range [{meta.get('low')}, {meta.get('high')}]")
        if meta.get("at_most"):
            extra.append(f"at most {meta['at_most']}")
        suffix = f" ({'; '.join(extra)})" if extra else ""
        lines.append(f"{name}: {_type_name(hints[name])} - {meta.get('doc', '')}{suffix}")
    return "\n".join(lines)
