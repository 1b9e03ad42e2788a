"""pairs: your own paired data, from one file.

The file is a NumPy ``.npz`` (``numpy.savez`` / ``savez_compressed``) or a ``.pt`` / ``.pth``
(``torch.save`` of a dict of tensors) holding:

- ``a``: the first modality, (N, d) vectors or (N, C, H, W) images or spectrograms (a
  spectrogram is (N, 1, F, T)); any real dtype (floats, or integers such as uint8 pixels).
- ``b``: the second modality, the same N items in the same order, (N, e) or (N, C', H', W');
  its kind and size need not match ``a``'s.
- ``y``: (N,) integer class labels 0..K-1 (K = the largest label + 1; every class must have
  items in the train split).  Whole-valued floats are accepted.
- ``split`` (optional): (N,) strings 'train' / 'val' / 'test' or integers 0 / 1 / 2 (store
  strings as a fixed-width array, ``np.array(names, dtype=str)``; object arrays are refused).

Other arrays in the file are ignored.  ``load(path, split)`` (registry name ``pairs``; its
``root`` is the file, the grid parameter ``pairs_root``) gives an
:class:`~cmkd.data.arrays.ArrayDataset` whose items are ``{'a': float32, 'b': float32,
'label': int64}``.

Splits.  With ``split`` in the file, its assignment is used as is (an empty val or test split is
allowed: an empty validation split selects the last epoch) and the options ``val_fraction``,
``test_fraction`` and ``seed`` are ignored.  Without it, each class's items are shuffled with
``seed`` and ``round(test_fraction * n)`` go to test, ``round(val_fraction * n)`` to val and the
rest (at least one) to train: disjoint, covering every item, and the same for the same file and
options.

``standardize`` (default True): every feature of a vector modality (every channel of an image or
spectrogram, over all its pixels) is centred and scaled by its mean and standard deviation over
the train split (a constant one is only centred).

Checks (a :class:`PairsError` naming the file and every problem found): the file's kind, missing
arrays, arrays that are not numbers or not (N, d) / (N, C, H, W), unequal N, labels that are not
integers or are negative, split values other than the three, NaN or infinite values, a class
without train items.

Memory.  A load reads the file's arrays once (a ``.pt`` saved by torch >= 1.6 is memory-mapped),
computes the train statistics in chunks and writes the split's float32 tensors chunk by chunk:
it holds the file's arrays and the split's tensors, never a whole float64 copy; the file's arrays
are released when the load returns (each split is a load of its own).  The shapes and the class
count that grids ask for every job come from :func:`summary`, cached per file (path, size and
modification time).

The cache of trained jobs knows the file by its path and the options, not its content: after
changing a file, write it under a new name (or remove the jobs that used it).
"""

from __future__ import annotations

import functools
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cmkd.data.arrays import ArrayDataset
from cmkd.data.files import DatasetError

NAME = "pairs"
PARAM = "pairs_root"
SPLITS = ("train", "val", "test")
MODALITIES = ("a", "b")
REQUIRED = ("a", "b", "y")
SUFFIXES = (".npz", ".pt", ".pth")
LAYOUT = """\
one .npz file (numpy.savez) or .pt file (torch.save of a dict of tensors) holding
  a      (N, d) vectors or (N, C, H, W) images / spectrograms: the first modality
  b      (N, e) or (N, C', H', W'): the second modality of the same N items, same order
  y      (N,) integer class labels 0..K-1, every class present in the train split
  split  optional, (N,) 'train' / 'val' / 'test' or 0 / 1 / 2 (without it: a seeded,
         stratified split by the options val_fraction, test_fraction, seed)"""
#: bytes of one chunk of items (as float64) when statistics and split tensors are computed
CHUNK_BYTES = 1 << 26


class PairsError(DatasetError):
    """A pairs file that is missing or malformed; the message names the file and the problems."""

    def __init__(self, path, problems):
        super().__init__(NAME, PARAM, path, problems, LAYOUT)

    def __str__(self) -> str:
        return (f"dataset 'pairs': file {self.root!s}: {'; '.join(self.problems)}. Expected "
                f"(parameter '{PARAM}', a job's data_root: the file's path):\n{self.layout}")


# ----------------------------------------------------------------------------- reading
def resolve(root) -> Path:
    """``root`` as the path of an existing .npz / .pt file (PairsError otherwise)."""
    if root is None or str(root) == "":
        raise PairsError("(none)", ["no file given; pass the path of your .npz or .pt file as "
                                    "root"])
    path = Path(root).expanduser()
    if path.is_dir():
        raise PairsError(path, ["is a folder; give the path of the file itself"])
    if not path.is_file():
        raise PairsError(path, ["no such file"])
    if path.suffix.lower() not in SUFFIXES:
        raise PairsError(path, [f"unknown file kind {path.suffix!r}; expected one of "
                                f"{', '.join(SUFFIXES)}"])
    return path


def _read(path: Path) -> dict[str, np.ndarray]:
    """The file's arrays a, b, y, split (those present), as stored."""
    names = (*REQUIRED, "split")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in names if k in f.files}
        except ValueError as err:
            if "allow_pickle" in str(err):
                raise PairsError(path, ["an array is stored as Python objects (dtype object); "
                                        "store numbers as numeric arrays and split as "
                                        "np.array(names, dtype=str) or integers 0 / 1 / 2"]
                                 ) from None
            raise PairsError(path, [f"not readable as .npz ({err})"]) from err
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise PairsError(path, [f"not readable as .npz ({type(err).__name__}: {err})"]
                             ) from err
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:         # a file of the legacy format cannot be mapped
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PairsError(path, [f"not readable by torch.load(weights_only=True) "
                                f"({type(err).__name__}: {str(err).splitlines()[0]}); save a "
                                "dict of tensors (and split as a list of strings or a tensor "
                                "of 0 / 1 / 2)"]) from err
    if not isinstance(obj, Mapping):
        raise PairsError(path, [f"holds a {type(obj).__name__}; save a dict "
                                "{'a': ..., 'b': ..., 'y': ...}"])
    out = {}
    for k in names:
        if k in obj:
            v = obj[k]
            out[k] = v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return out


def _held(raw: Mapping, path: Path) -> None:
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise PairsError(path, [f"missing array(s) {', '.join(map(repr, missing))} (a, b and "
                                f"y are required; found: {', '.join(map(repr, raw)) or 'none'})"])


def _modality_problems(name: str, x: np.ndarray) -> list[str]:
    if x.dtype.kind not in "fiub":
        return [f"array {name!r} must hold real numbers, got dtype {x.dtype}"]
    if x.ndim not in (2, 4) or 0 in x.shape[1:]:
        hint = {1: f" (one feature per item: {name}[:, None])",
                3: f" (one channel: {name}[:, None])"}.get(x.ndim, "")
        return [f"array {name!r} must be (N, d) vectors or (N, C, H, W) images or spectrograms, "
                f"got shape {x.shape}{hint}"]
    return []


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    """``y`` as int64, or PairsError for labels that are not non-negative integers."""
    if y.ndim != 1:
        raise PairsError(path, [f"labels 'y' must be one integer per item, shape (N,), got "
                                f"shape {y.shape}"])
    if y.dtype.kind in "iu":
        labels = y.astype(np.int64)
    elif y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise PairsError(path, [f"labels 'y' must be integers 0..K-1, got the non-integer "
                                    f"value {y[i].item()!r} (item {i})"])
        labels = y.astype(np.int64)
    else:
        raise PairsError(path, [f"labels 'y' must be integers 0..K-1, got dtype {y.dtype}"])
    if labels.size and labels.min() < 0:
        i = int(np.flatnonzero(labels < 0)[0])
        raise PairsError(path, [f"labels 'y' must be integers 0..K-1, got the negative value "
                                f"{labels[i]} (item {i})"])
    return labels


def _split_codes(split: np.ndarray, path: Path) -> np.ndarray:
    """The stored split as codes 0 (train), 1 (val), 2 (test)."""
    allowed = "'train', 'val', 'test' (or 0, 1, 2)"
    if split.ndim != 1:
        raise PairsError(path, [f"'split' must be one value per item, shape (N,), got shape "
                                f"{split.shape}"])
    if split.dtype.kind in "US":
        values = split.astype(str)
        codes = np.full(len(values), -1, dtype=np.int64)
        for code, name in enumerate(SPLITS):
            codes[values == name] = code
        bad = np.flatnonzero(codes < 0)
        if len(bad):
            raise PairsError(path, [f"split value {str(values[bad[0]])!r} (item {bad[0]}) is not "
                                    f"one of {allowed}"])
        return codes
    if split.dtype.kind in "iu":
        codes = split.astype(np.int64)
        bad = np.flatnonzero((codes < 0) | (codes > 2))
        if len(bad):
            raise PairsError(path, [f"split value {codes[bad[0]]} (item {bad[0]}) is not one of "
                                    f"{allowed}"])
        return codes
    raise PairsError(path, [f"'split' must hold {allowed}, got dtype {split.dtype}"])


def _chunk_items(x: np.ndarray) -> int:
    """Items per chunk: about :data:`CHUNK_BYTES` once a chunk is widened to float64."""
    return max(1, CHUNK_BYTES // (8 * max(1, math.prod(x.shape[1:]))))


def _first_not_finite(x: np.ndarray) -> int | None:
    """The first item of ``x`` holding a NaN or an infinity, read in chunks (None: none)."""
    if x.dtype.kind != "f":
        return None
    step = _chunk_items(x)
    for start in range(0, len(x), step):
        chunk = x[start:start + step].reshape(min(step, len(x) - start), -1)
        bad = ~np.isfinite(chunk).all(axis=1)
        if bad.any():
            return start + int(np.flatnonzero(bad)[0])
    return None


def stratified_split(labels: np.ndarray, val_fraction: float = 0.15,
                     test_fraction: float = 0.15, seed: int = 0) -> dict[str, np.ndarray]:
    """Per class, its items shuffled by ``seed``: ``round(test_fraction * n)`` to test,
    ``round(val_fraction * n)`` to val, the rest (at least one) to train.  Sorted item indices
    per split; disjoint and covering every item."""
    _check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels) if labels.size else np.zeros(0, dtype=np.int64)
    parts: dict[str, list] = {s: [] for s in SPLITS}
    start = 0
    for n in counts:
        idx = rng.permutation(order[start:start + n])
        start += n
        n_test, n_val = math.floor(test_fraction * n + 0.5), math.floor(val_fraction * n + 0.5)
        while n and n_test + n_val > n - 1:      # keep one training item per class
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {s: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64)
            for s, v in parts.items()}


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"dataset 'pairs': {name} must be a number in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"dataset 'pairs': val_fraction + test_fraction must be below 1 (the "
                         f"rest trains), got {val_fraction} + {test_fraction}")


def _open(root, val_fraction: float, test_fraction: float, seed: int):
    """(path, arrays a and b as stored, labels int64, item indices per split, whether the file
    stores its split), checked."""
    path = resolve(root)
    raw = _read(path)
    _held(raw, path)
    problems = [p for m in MODALITIES for p in _modality_problems(m, raw[m])]
    if problems:
        raise PairsError(path, problems)
    sizes = {k: len(v) if v.ndim else 0 for k, v in raw.items()}
    if len(set(sizes.values())) != 1:
        raise PairsError(path, ["the arrays hold different numbers of items N: " + ", ".join(
            f"{k} {n}" for k, n in sizes.items()) + " (one row per item, in the same order)"])
    if not sizes["y"]:
        raise PairsError(path, ["the arrays hold no items (N = 0)"])
    labels = _labels(raw["y"], path)
    codes = _split_codes(raw["split"], path) if "split" in raw else None
    problems = []
    for m in MODALITIES:
        bad = _first_not_finite(raw[m])
        if bad is not None:
            problems.append(f"array {m!r} holds NaN or infinite values (first in item {bad}); "
                            "replace or drop those items")
    if problems:
        raise PairsError(path, problems)
    if codes is None:
        _check_fractions(val_fraction, test_fraction)
        rows = stratified_split(labels, val_fraction, test_fraction, seed)
    else:
        rows = {s: np.flatnonzero(codes == i) for i, s in enumerate(SPLITS)}
    k = int(labels.max()) + 1
    absent = sorted(set(range(k)) - set(np.unique(labels[rows["train"]]).tolist()))
    if absent:
        shown = ", ".join(map(str, absent[:10])) + (", ..." if len(absent) > 10 else "")
        which = f"class {shown} has" if len(absent) == 1 else f"classes {shown} have"
        raise PairsError(path, [f"{which} no item in the train split (labels "
                                f"are 0..K-1 with K = {k}, the largest label + 1; every class "
                                "needs training items)"])
    return path, {m: raw[m] for m in MODALITIES}, labels, rows, codes is not None


def _axes(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reduction axes, broadcast shape) of the statistics: per feature or per channel."""
    return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


def _chunks(x: np.ndarray, rows: np.ndarray):
    step = _chunk_items(x)
    for start in range(0, len(rows), step):
        yield start, x[rows[start:start + step]]


def moments(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (population; 1 where it is 0) of the items ``rows`` of ``x``
    per feature (vectors) or per channel (images), in float64, read in chunks (two passes)."""
    axes, shape = _axes(x)
    count = len(rows) * (1 if x.ndim == 2 else x.shape[2] * x.shape[3])
    total = np.zeros(x.shape[1], dtype=np.float64)
    for _, chunk in _chunks(x, rows):
        total += chunk.sum(axis=axes, dtype=np.float64)
    mean = total / max(count, 1)
    squares = np.zeros_like(mean)
    for _, chunk in _chunks(x, rows):
        squares += ((chunk - mean.reshape(shape)) ** 2).sum(axis=axes)
    std = np.sqrt(squares / max(count, 1))
    return mean.reshape(shape), np.where(std > 0, std, 1.0).reshape(shape)


def _take(x: np.ndarray, rows: np.ndarray, stats=None) -> np.ndarray:
    """The items ``rows`` of ``x`` as one float32 array, written chunk by chunk (standardised by
    ``stats`` = (mean, std) when given)."""
    out = np.empty((len(rows), *x.shape[1:]), dtype=np.float32)
    for start, chunk in _chunks(x, rows):
        if stats is not None:
            chunk = (chunk - stats[0]) / stats[1]
        out[start:start + len(chunk)] = chunk
    return out


# ----------------------------------------------------------------------------- the dataset
@functools.lru_cache(maxsize=16)
def _summary(path: str, stamp: tuple) -> dict:
    _, arrays, labels, rows, given = _open(path, 0.15, 0.15, 0)
    return {"shapes": {m: tuple(arrays[m].shape[1:]) for m in MODALITIES},
            "classes": int(labels.max()) + 1, "items": len(labels), "split_given": given}


def summary(root) -> dict:
    """What a pairs file holds, checked (PairsError otherwise): ``shapes`` (modality -> the
    shape of one item), ``classes`` (K), ``items`` (N), ``split_given`` (whether it stores its
    split).  Cached per file path, size and modification time."""
    path = resolve(root).resolve()
    st = path.stat()
    return _summary(str(path), (st.st_size, st.st_mtime_ns))


def classes(root) -> int:
    """K, the number of classes of the file ``root`` (the largest label + 1)."""
    return summary(root)["classes"]


def shapes(root) -> dict[str, tuple[int, ...]]:
    """Modality ('a', 'b') -> the shape of one item of the file ``root``."""
    return summary(root)["shapes"]


def check(root) -> list[str]:
    """The problems of the file ``root`` (empty when it is usable), as a job's check lists
    them."""
    try:
        summary(root)
    except PairsError as err:
        return err.problems
    return []


def arrays(root, split: str = "train", val_fraction: float = 0.15, test_fraction: float = 0.15,
           seed: int = 0, standardize: bool = True) -> dict[str, torch.Tensor]:
    """Whole-split tensors: 'a' and 'b' (n, ...) float32 and 'label' (n,) int64."""
    if split not in SPLITS:
        raise ValueError(f"dataset 'pairs': split must be one of {SPLITS}, got {split!r}")
    if not isinstance(standardize, bool):
        raise ValueError(f"dataset 'pairs': standardize must be True or False, got "
                         f"{standardize!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"dataset 'pairs': seed must be an int >= 0, got {seed!r}")
    _, raw, labels, rows, _ = _open(root, val_fraction, test_fraction, seed)
    out = {}
    for m in MODALITIES:
        x = raw.pop(m)
        stats = moments(x, rows["train"]) if standardize else None
        out[m] = torch.from_numpy(_take(x, rows[split], stats))
        del x
    out["label"] = torch.from_numpy(labels[rows[split]])
    return out


class Pairs(ArrayDataset):
    """One split of a pairs file; item i is ``{'a': ..., 'b': ..., 'label': int64}``
    (``tensors`` holds the whole split, :class:`cmkd.data.arrays.ArrayDataset`)."""

    modalities = MODALITIES

    def __init__(self, root, split: str = "train", val_fraction: float = 0.15,
                 test_fraction: float = 0.15, seed: int = 0, standardize: bool = True):
        super().__init__(arrays(root, split, val_fraction, test_fraction, seed, standardize))
        self.path, self.split = resolve(root), split


def load(root, split: str = "train", val_fraction: float = 0.15, test_fraction: float = 0.15,
         seed: int = 0, standardize: bool = True) -> Pairs:
    """Registry entry: one split of the pairs file ``root`` (see the module docstring)."""
    return Pairs(root, split, val_fraction, test_fraction, seed, standardize)
