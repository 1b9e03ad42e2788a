"""CrisisMMD v2.0, humanitarian task (8 classes), text-image pairs (C2KD).

Items: text: ``text_encoder(tweet_text)`` (a tensor) when an encoder is given, else the raw
string; image: the image as a (3, 224, 224) ImageNet-normalised tensor (RandomResizedCrop +
flip when augmenting, Resize(256) + CenterCrop(224) otherwise), passed through
``image_encoder`` when one is given; label int64 in 0..7 (:data:`CLASSES` order).  Both
encoders run under ``torch.no_grad()``.  Splits: the train / dev / test TSV files.

Encoders (C2KD: BERT-base for the text, MobileNetV2 for the image) are the user's: nothing is
downloaded here.  Each is either a callable or an import path ``'package.module:callable'``
(``callable`` may be dotted: ``'pkg.mod:Encoder.text'``), resolved with importlib when the
dataset is opened (:func:`resolve_encoder`); the path form is what a job or a params file holds
(plain JSON).  The module must be importable (on ``sys.path`` / ``PYTHONPATH``, also in worker
and notebook-kernel processes) and load its weights from local files.

An import path is code that the params file runs: opening the dataset imports the module (which
runs its top level) and the callable then runs on every tweet or image, with the rights of the
process.  Name only modules you trust.  Validation does not run them: :func:`check_encoder` (the
preflight of ``cmkd reproduce`` and of notebook 06) checks the form of the path, that its module
is not refused and that it is found on ``sys.path``, without importing it (nor its parent
packages); ``cmkd reproduce`` then lists the paths it will run before it starts, and the first
job that opens the data imports them.  Paths into, or resolving to functions of, the modules of
:data:`REFUSED_MODULES` (os, subprocess, shutil, sys, builtins, importlib, runpy, pty, socket)
and builtins are refused before anything is called: ``'os:system'`` would run each tweet as a
shell command.  That refusal stops a mistaken or planted path into the standard library; it is
no sandbox for the modules it lets through.  An encoder module, e.g.::

    # my_encoders.py
    import functools

    import torch
    import transformers

    WEIGHTS = "/data/weights/bert-base-uncased"       # a local copy

    @functools.cache                                  # loaded on first use, once per process
    def _bert():
        tok = transformers.AutoTokenizer.from_pretrained(WEIGHTS)
        return tok, transformers.AutoModel.from_pretrained(WEIGHTS).eval()

    def bert_cls(text: str) -> torch.Tensor:          # (768,)
        tok, model = _bert()
        return model(**tok(text, return_tensors="pt", truncation=True)).last_hidden_state[0, 0]

and ``text_encoder='my_encoders:bert_cls'``.  The image encoder takes the (3, H, W) tensor and
returns a vector (MobileNetV2's pooled features: 1280).
"""

from __future__ import annotations

import builtins
import csv
import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from importlib.machinery import PathFinder
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cmkd.data.files import (
    absent_items,
    folder_check,
    image_transform,
    is_file,
    open_root,
    read_csv,
    read_list,
    read_rgb,
)
from cmkd.text import quote, shorten

NAME, PARAM, DIRNAME = "crisismmd", "crisismmd_root", "CrisisMMD_v2.0"
SPLITS = ("train", "val", "test")
TSV = {"train": "train", "val": "dev", "test": "test"}
CLASSES = ("affected_individuals", "infrastructure_and_utility_damage", "injured_or_dead_people",
           "missing_or_found_people", "not_humanitarian", "other_relevant_information",
           "rescue_volunteering_or_donation_effort", "vehicle_damage")
COLUMNS = ("tweet_id", "image_id", "tweet_text", "image", "label")
LAYOUT = """<crisismmd_root>/                 (the CrisisMMD_v2.0 folder)
  crisismmd_datasplit_all/task_humanitarian_text_img_{train,dev,test}.tsv
      tab-separated with header: event_name tweet_id image_id tweet_text image label
      label_text label_image label_text_image; label one of the 8 humanitarian classes
  data_image/<event>/<date>/<id>.jpg    images, at the paths of the 'image' column"""


def tsv_name(split: str) -> str:
    """The list file of a split, relative to the dataset folder."""
    return f"crisismmd_datasplit_all/task_humanitarian_text_img_{TSV[split]}.tsv"


def _rows(path: Path, label_column: str) -> list[dict]:
    rows = read_csv(path, header=True, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = set(rows[0]) if rows else set()
    missing = [c for c in (*COLUMNS, label_column) if c not in header]
    if missing:
        raise ValueError(f"{path.name}: columns {missing} are missing from the header")
    bad = sorted({r[label_column] for r in rows} - set(CLASSES))
    if bad:
        raise ValueError(f"{path.name}: labels outside the 8 humanitarian classes: "
                         f"{', '.join(quote(b) for b in bad[:3])}")
    return rows


REFUSED_MODULES = frozenset({"builtins", "os", "posix", "nt", "subprocess", "_posixsubprocess",
                             "shutil", "sys", "importlib", "runpy", "pty", "socket", "_socket"})
"""Modules whose functions cannot be encoders: called on each tweet or image they would run the
data as a command or as code (``'os:system'``, ``'builtins:eval'``).  An import path in one of
them, or one that resolves to a function of one of them or to a builtin, is refused before
anything is called."""


def _split(encoder, option: str) -> tuple[str, str]:
    """(module, attribute) of an import path 'package.module:callable', checked for its form
    only; ValueError naming ``option`` otherwise."""
    if not isinstance(encoder, str):
        raise ValueError(f"crisismmd option {option!r} must be None, a callable or an import "
                         f"path 'package.module:callable', got {type(encoder).__name__}")
    module_name, sep, attr = encoder.partition(":")
    if not (sep and all(p.isidentifier() for p in module_name.split("."))
            and all(p.isidentifier() for p in attr.split("."))):
        raise ValueError(f"crisismmd option {option!r}: {quote(encoder)} is not an import path "
                         f"of the form 'package.module:callable'")
    return module_name, attr


def _refuse(encoder: str, option: str, what: str) -> ValueError:
    *first, last = sorted(m for m in REFUSED_MODULES if not m.startswith("_"))
    modules = f"{', '.join(first)} or {last}"
    return ValueError(f"crisismmd option {option!r}: {quote(encoder)} refused: {what}. An "
                      f"encoder is called on every tweet or image, and a builtin or a function "
                      f"of {modules} would run them as commands or code; name a function of a "
                      f"module of your own")


def _module_found(name: str) -> bool:
    """Whether module ``name`` can be imported, found by the import system's finders without
    running it or its parent packages (``importlib.util.find_spec('a.b')`` would import
    ``a``): each package's folder is searched for the next part of the name."""
    if name in sys.modules:
        return True
    parts = name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for k in range(1, len(parts)):
            if spec is None or spec.submodule_search_locations is None:
                return False
            full = ".".join(parts[:k + 1])
            if full in sys.modules:
                spec = sys.modules[full].__spec__
            else:
                spec = PathFinder.find_spec(full, list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return False
    return spec is not None


def check_encoder(encoder, option: str) -> None:
    """Validate an encoder without running any of its code (the preflight of a params file):
    None and callables pass; a string must be an import path 'package.module:callable' whose
    module is not one of :data:`REFUSED_MODULES` and is found on ``sys.path`` (not imported:
    importing a module runs it, which is left to :func:`resolve_encoder` when the data are
    opened).  ValueError naming ``option`` and the path otherwise."""
    if encoder is None or callable(encoder):
        return
    module_name, _ = _split(encoder, option)
    top = module_name.split(".")[0]
    if top in REFUSED_MODULES:
        raise _refuse(encoder, option, f"its module is {top!r}")
    if not _module_found(module_name):
        raise ValueError(f"crisismmd option {option!r}: cannot import module "
                         f"{quote(module_name)} of {quote(encoder)}: no such module found; is it "
                         f"on sys.path (PYTHONPATH)?")


def _refused_origin(obj) -> str | None:
    """'module.name' when ``obj`` is a builtin or a function of :data:`REFUSED_MODULES` (also
    through functools.partial and bound methods), else None."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    obj = getattr(obj, "__func__", obj)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    if any(obj is value for value in vars(builtins).values()):
        return f"builtins.{name}"
    for owner in (obj, getattr(obj, "__self__", None)):
        module = owner.__name__ if isinstance(owner, types.ModuleType) else \
            getattr(owner, "__module__", None)
        if isinstance(module, str) and module.split(".")[0] in REFUSED_MODULES:
            return f"{module}.{name}"
    return None


def resolve_encoder(encoder, option: str) -> Callable | None:
    """``encoder`` as a callable: None and callables as they are; a string
    ``'package.module:callable'`` checked by :func:`check_encoder`, then imported with importlib
    (which runs the module: this is where the params file's code runs).  ValueError naming
    ``option`` and the path when the string is malformed, names a refused module, its module
    cannot be imported, it has no such attribute, the attribute is a builtin or a function of
    :data:`REFUSED_MODULES` (checked before it is called), or it is not callable."""
    if encoder is None or callable(encoder):
        return encoder
    check_encoder(encoder, option)
    module_name, attr = _split(encoder, option)
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or an error raised while importing it
        raise ValueError(f"crisismmd option {option!r}: cannot import module "
                         f"{quote(module_name)} of {quote(encoder)} ({type(err).__name__}: "
                         f"{shorten(str(err))}); is it on sys.path (PYTHONPATH)?") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"crisismmd option {option!r}: {quote(encoder)}: module "
                             f"{quote(module_name)} has no attribute {quote(attr)}")
        obj = getattr(obj, part)
    refused = _refused_origin(obj)
    if refused is not None:
        raise _refuse(encoder, option, f"it resolves to {refused}")
    if not callable(obj):
        raise ValueError(f"crisismmd option {option!r}: {quote(encoder)} is not callable (a "
                         f"{type(obj).__name__})")
    return obj


@folder_check
def check(root: Path, label_column: str = "label", image_root=None) -> list[str]:
    problems = []
    for split in SPLITS:
        name = tsv_name(split)
        rows = read_list(root, name, lambda path: _rows(path, label_column), problems)
        if rows is None:
            continue
        base = root if image_root is None else Path(image_root)
        absent = [r["image"] for r in rows if not is_file(base / r["image"])]
        problems += absent_items(absent, f"images named by {Path(name).name} are missing")
    return problems


class CrisisMMD(Dataset):
    modalities = ("text", "image")

    def __init__(self, root, split="train", text_encoder: Callable | str | None = None,
                 image_encoder: Callable | str | None = None, image_size=224, augment=None,
                 label_column="label", image_root=None):
        self.root = open_root(sys.modules[__name__], root, split, label_column, image_root)
        self.image_root = self.root if image_root is None else Path(image_root)
        self.rows = _rows(self.root / tsv_name(split), label_column)
        self.label_column = label_column
        self.text_encoder = resolve_encoder(text_encoder, "text_encoder")
        self.image_encoder = resolve_encoder(image_encoder, "image_encoder")
        self.transform = image_transform(split == "train", image_size, augment,
                                         crop_from=int(round(image_size * 256 / 224)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        text = row["tweet_text"]
        image = self.transform(read_rgb(self.image_root / row["image"]))
        with torch.no_grad():
            if self.text_encoder is not None:
                text = self.text_encoder(text)
            if self.image_encoder is not None:
                image = self.image_encoder(image)
        label = torch.tensor(CLASSES.index(row[self.label_column]))
        return {"text": text, "image": image, "label": label}


def load(root, split="train", text_encoder: Callable | str | None = None,
         image_encoder: Callable | str | None = None, image_size: int = 224,
         augment: bool | None = None, label_column: str = "label",
         image_root: str | None = None) -> CrisisMMD:
    """CrisisMMD humanitarian split.  text_encoder(str) -> tensor, image_encoder(tensor) ->
    tensor: pluggable pretrained models (C2KD: BERT-base, MobileNetV2), given as callables or
    import paths 'package.module:callable' (see the module docstring), or None; image_size 224
    [V]; label_column 'label' [I]; image_root: folder the TSV 'image' paths are relative to
    (None: the dataset root) [I]; augment None: train only."""
    return CrisisMMD(root, split, text_encoder, image_encoder, image_size, augment, label_column,
                     image_root)
