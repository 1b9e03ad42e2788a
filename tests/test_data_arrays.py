"""cmkd.data.arrays (ArrayDataset, StackedDataset) through cmkd.engine.make_loader, and the
'mvd' dataset's draws against cmkd.data.mvd.generate_multiclass called by hand."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from cmkd import data
from cmkd.data import mvd
from cmkd.data.arrays import ArrayDataset, StackedDataset
from cmkd.engine import make_loader


def _arrays(n=11, seed=0, dim=3):
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset({"x": torch.randn(n, dim, generator=g),
                         "img": torch.randn(n, 1, 2, 2, generator=g),
                         "label": torch.randint(0, 4, (n,), generator=g),
                         "index": torch.arange(n)})


class Items(Dataset):
    """The same samples as an ArrayDataset, but item by item (no ``tensors``)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.arrays.tensors.items()}


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_array_dataset_items_and_batches():
    ds = _arrays()
    assert len(ds) == 11
    _assert_same(ds[4], {k: v[4] for k, v in ds.tensors.items()})
    idx = [7, 0, 3, 3]
    items = [ds[i] for i in idx]
    _assert_same(ds.__getitems__(idx), {k: torch.stack([it[k] for it in items]) for k in items[0]})
    with pytest.raises(ValueError, match="needs a 'label' tensor, got keys \\['x'\\]"):
        ArrayDataset({"x": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"the same number of samples, got \{'x': 3, 'label': 2\}"):
        ArrayDataset({"x": torch.zeros(3), "label": torch.zeros(2)})


@pytest.mark.parametrize("kind", ["arrays", "items"])
def test_stacked_dataset_items_and_batches(kind):
    runs = [_arrays(seed=s) for s in range(3)]
    stacked = StackedDataset(runs if kind == "arrays" else [Items(r) for r in runs])
    assert (stacked.tensors is None) == (kind == "items")
    assert len(stacked) == 11 and stacked.runs == 3
    for i in (0, 5, 10):
        _assert_same(stacked[i], {k: torch.stack([r[i][k] for r in runs]) for k in runs[0][i]})
    idx = [9, 2, 2, 6]
    batch = stacked.__getitems__(idx)
    assert batch["img"].shape == (3, 4, 1, 2, 2)
    items = [stacked[i] for i in idx]
    _assert_same(batch, {k: torch.stack([it[k] for it in items], 1) for k in items[0]})
    for r, run in enumerate(runs):
        _assert_same({k: v[r] for k, v in batch.items()}, run.__getitems__(idx))


def test_stacked_dataset_refusals():
    with pytest.raises(ValueError, match=r"must have equal lengths \(every run reads the same "
                                         r"sample indices\), got \[11, 12\]"):
        StackedDataset([_arrays(11), _arrays(12)])
    other = ArrayDataset({"y": torch.zeros(11), "label": torch.zeros(11)})
    with pytest.raises(ValueError, match="the stacked datasets hold different keys"):
        StackedDataset([_arrays(11), other])
    with pytest.raises(ValueError, match="needs at least one dataset"):
        StackedDataset([])


@pytest.mark.parametrize("shuffle", [False, True])
def test_stacked_loader_reads_each_run_in_a_single_loaders_order(shuffle):
    runs = [_arrays(seed=s) for s in range(3)]
    stacked = list(make_loader(StackedDataset(runs), 4, shuffle=shuffle, seed=5))
    assert [b["x"].shape for b in stacked] == [(3, 4, 3), (3, 4, 3), (3, 3, 3)]
    for r, run in enumerate(runs):
        # an array-backed loader, and the default collate over item-by-item reads
        for single in (make_loader(run, 4, shuffle=shuffle, seed=5),
                       make_loader(Items(run), 4, shuffle=shuffle, seed=5)):
            single = list(single)
            assert len(single) == len(stacked)
            for sb, b in zip(stacked, single):
                _assert_same({k: v[r] for k, v in sb.items()}, b)
    order = torch.cat([b["index"][0] for b in stacked])
    assert sorted(order.tolist()) == list(range(11))
    assert (order.tolist() != list(range(11))) == shuffle
    other = torch.cat([b["index"][0] for b in make_loader(StackedDataset(runs), 4,
                                                            shuffle=shuffle, seed=6)])
    assert torch.equal(order, other) != shuffle  # the seed alone sets the order


def test_stacked_loader_with_a_batch_sampler():
    runs = [_arrays(seed=s) for s in range(2)]
    sampler = [[3, 1], [0, 2, 4]]
    batches = list(make_loader(StackedDataset(runs), 99, batch_sampler=sampler))
    assert [b["index"].tolist() for b in batches] == [[[3, 1]] * 2, [[0, 2, 4]] * 2]


MVD = dict(overlap=4, classes=3, n_train=30, n_test=20, seed=7)


def _mvd_by_hand(overlap, classes, n_train, n_test, seed, run, n_val=0):
    rng = np.random.default_rng(np.random.SeedSequence([seed, overlap, run]))
    spec = mvd.vary_gamma_spec(overlap)
    train = mvd.generate_multiclass(spec, n_train, rng, classes)
    test = mvd.generate_multiclass(spec, n_test, rng, classes, train.delta)
    out = {"train": train, "test": test}
    if n_val:
        out["val"] = mvd.generate_multiclass(spec, n_val, rng, classes, train.delta)
    return out


@pytest.mark.parametrize("run", [0, 2])
def test_mvd_draws_train_then_test_from_one_generator_per_run(run):
    ref = _mvd_by_hand(**MVD, run=run)
    for split in ("train", "test"):
        ds = data.load("mvd", None, split, **MVD, run=run)
        assert isinstance(ds, ArrayDataset) and len(ds) == MVD[f"n_{split}"]
        np.testing.assert_array_equal(ds.tensors["xa"].numpy(), ref[split].xa)
        np.testing.assert_array_equal(ds.tensors["xb"].numpy(), ref[split].xb)
        np.testing.assert_array_equal(ds.tensors["label"].numpy(), ref[split].y)
        assert ds.tensors["xa"].shape[1] == 25 and ds.tensors["xb"].shape[1] == 50
        assert ds.tensors["label"].dtype == torch.int64
    assert set(ref["train"].y.tolist()) == {0, 1, 2}
    other = data.load("mvd", None, "train", **MVD, run=run + 1)
    assert not torch.equal(other.tensors["xb"], data.load("mvd", None, "train", **MVD,
                                                          run=run).tensors["xb"])


def test_mvd_validation_split():
    empty = data.load("mvd", None, "val", **MVD, run=0)
    assert len(empty) == 0
    assert empty.tensors["xa"].shape == (0, 25) and empty.tensors["xb"].shape == (0, 50)
    assert empty.tensors["label"].dtype == torch.int64
    ref = _mvd_by_hand(**MVD, run=1, n_val=12)
    val = data.load("mvd", None, "val", **MVD, run=1, n_val=12)
    np.testing.assert_array_equal(val.tensors["xb"].numpy(), ref["val"].xb)
    np.testing.assert_array_equal(val.tensors["label"].numpy(), ref["val"].y)
    # drawn after the test split: train and test do not depend on n_val
    for split in ("train", "test"):
        a = data.load("mvd", None, split, **MVD, run=1, n_val=12)
        b = data.load("mvd", None, split, **MVD, run=1)
        assert torch.equal(a.tensors["xb"], b.tensors["xb"])
    with pytest.raises(ValueError, match="option 'run' must be an int >= 0, got -1"):
        data.load("mvd", None, "train", **MVD, run=-1)
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("mvd", None, "dev", **MVD)
