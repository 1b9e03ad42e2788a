"""Datasets held in memory as tensors, read a whole batch at a time, and stacks of datasets.

* :class:`ArrayDataset`: a split as a dict of tensors of equal length (the embedded sets, the
  synthetic MVD draws); ``__getitems__`` returns a batch dict in one indexing per tensor, so a
  DataLoader (:func:`cmkd.engine.make_loader`) skips item-by-item collation.
* :func:`embedded_arrays`: the arrays of a committed ``.npz`` (avdigits, avmnist_mini, mfeat),
  read once per process.
* :class:`StackedDataset`: the same split of R datasets (one per run of a stack,
  :mod:`cmkd.models.batched`) as one dataset whose batches hold (R, batch, ...) tensors: every
  run sees the same sample indices in the same order, each from its own data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


@lru_cache(maxsize=8)
def _npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def embedded_arrays(path: Path | str, dataset: str, rebuild: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` (cached per path: read once per process);
    FileNotFoundError naming ``dataset`` and how to ``rebuild`` the file when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {dataset!r}: embedded file {path} is missing; "
                                f"rebuild it with {rebuild}")
    return _npz(str(path))


def embedded_cache_clear() -> None:
    """Forget every file :func:`embedded_arrays` read (the next call reads it again)."""
    _npz.cache_clear()


class ArrayDataset(Dataset):
    """A split as tensors: ``tensors[name]`` (n, ...) for each key (modalities and 'label').

    Item i is ``{name: tensor[i]}``; :meth:`__getitems__` gives the batch of a list of indices
    at once (``batched_fetch``)."""

    batched_fetch = True

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        if not tensors or "label" not in tensors:
            raise ValueError(f"an ArrayDataset needs a 'label' tensor, got keys {list(tensors)}")
        sizes = {k: len(v) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every tensor needs the same number of samples, got {sizes}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return len(self.tensors["label"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}


class StackedDataset(Dataset):
    """R datasets of equal length as one: item i is ``{key: (R, ...)}``, a batch
    ``{key: (R, batch, ...)}``.

    Array-backed datasets (``tensors``) are stacked once into (R, n, ...) tensors and batches
    are sliced from them; any other dataset is read item by item and stacked.
    """

    batched_fetch = True

    def __init__(self, datasets: Sequence[Dataset]):
        datasets = list(datasets)
        if not datasets:
            raise ValueError("a StackedDataset needs at least one dataset")
        sizes = [len(d) for d in datasets]
        if len(set(sizes)) != 1:
            raise ValueError(f"the stacked datasets must have equal lengths (every run reads "
                             f"the same sample indices), got {sizes}")
        self.runs, self.n, self.datasets = len(datasets), sizes[0], datasets
        self.tensors = None
        if all(isinstance(getattr(d, "tensors", None), Mapping) for d in datasets):
            keys = [tuple(d.tensors) for d in datasets]
            if len(set(keys)) != 1:
                raise ValueError(f"the stacked datasets hold different keys: {sorted(set(keys))}")
            self.tensors = {k: torch.stack([d.tensors[k] for d in datasets])
                            for k in datasets[0].tensors}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.tensors is not None:
            return {k: v[:, i] for k, v in self.tensors.items()}
        items = [d[i] for d in self.datasets]
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        if self.tensors is not None:
            idx = torch.as_tensor(indices, dtype=torch.long)
            return {k: v.index_select(1, idx) for k, v in self.tensors.items()}
        items = [self[i] for i in indices]
        return {k: torch.stack([it[k] for it in items], 1) for k in items[0]}
