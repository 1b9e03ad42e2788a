"""Your own paired data: the `pairs` file format (round trips, splits, standardisation, every
check's message), its grid spec, `cmkd.data.register`, and a tiny job on a pairs file."""
import numpy as np
import pytest
import torch

from cmkd import data
from cmkd.data import pairs, specs
from cmkd.params import ParamError

SPLITS = ("train", "val", "test")


def vectors(n_per_class=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    a = rng.normal(size=(len(y), 5)) * 3 + 7 + y[:, None]
    b = rng.normal(size=(len(y), 4)) - y[:, None]
    return {"a": a, "b": b.astype(np.float16), "y": y}


def images(n_per_class=10, classes=2, seed=1):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    a = rng.normal(size=(len(y), 3)).astype(np.float32)
    b = rng.integers(0, 256, size=(len(y), 2, 8, 10)).astype(np.uint8)     # uint8 "pixels"
    return {"a": a, "b": b, "y": y}


def save(path, arrays):
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: v if isinstance(v, list) else torch.from_numpy(np.asarray(v))
                    for k, v in arrays.items()}, path)
    return path


def load_all(path, **options):
    return {s: data.load("pairs", path, s, **options) for s in SPLITS}


# ----------------------------------------------------------------------------- round trips
def test_vectors_without_split_round_trip(tmp_path):
    arrays = vectors()
    path = save(tmp_path / "v.npz", arrays)
    sets = load_all(path)
    assert sum(len(s) for s in sets.values()) == 60
    for ds in sets.values():
        t = ds.tensors
        assert set(t) == {"a", "b", "label"} and ds.modalities == ("a", "b")
        assert t["a"].dtype == t["b"].dtype == torch.float32 and t["label"].dtype == torch.int64
        assert t["a"].shape[1:] == (5,) and t["b"].shape[1:] == (4,)
        item = ds[0]
        assert set(item) == {"a", "b", "label"} and item["a"].shape == (5,)
    train = sets["train"].tensors
    torch.testing.assert_close(train["a"].mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(train["a"].std(0, unbiased=False), torch.ones(5), atol=1e-4,
                               rtol=0)
    # unstandardised: the stored values, as float32, of the items of the split
    raw = load_all(path, standardize=False)
    rows = pairs.stratified_split(arrays["y"])
    for s in SPLITS:
        np.testing.assert_allclose(raw[s].tensors["a"].numpy(), arrays["a"][rows[s]],
                                   rtol=1e-6)
        np.testing.assert_array_equal(raw[s].tensors["label"].numpy(), arrays["y"][rows[s]])
    assert data.classes("pairs", path) == 3
    assert pairs.summary(path) == {"shapes": {"a": (5,), "b": (4,)}, "classes": 3,
                                   "items": 60, "split_given": False}


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
@pytest.mark.parametrize("codes", ["strings", "ints"])
def test_images_with_a_stored_split_round_trip(tmp_path, suffix, codes):
    arrays = images()
    split = np.array(["train", "val", "test", "train", "train"] * 4)
    arrays["split"] = (split if codes == "strings"
                       else np.array([SPLITS.index(s) for s in split]))
    if suffix == ".pt" and codes == "strings":
        arrays["split"] = split.tolist()           # torch.save: a list of strings
    path = save(tmp_path / f"i{suffix}", arrays)
    sets = load_all(path, val_fraction=0.5)        # ignored: the file has its split
    for s in SPLITS:
        rows = np.flatnonzero(split == s)
        assert len(sets[s]) == len(rows)
        np.testing.assert_array_equal(sets[s].tensors["label"].numpy(), arrays["y"][rows])
    b = sets["train"].tensors["b"]
    assert b.shape[1:] == (2, 8, 10) and b.dtype == torch.float32
    # one mean / std per channel over the train split
    torch.testing.assert_close(b.mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.std((0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4,
                               rtol=0)
    raw = data.load("pairs", path, "val", standardize=False).tensors["b"]
    np.testing.assert_array_equal(raw.numpy(), arrays["b"][split == "val"].astype(np.float32))
    assert pairs.summary(path)["split_given"] and data.classes("pairs", path) == 2


def test_stratified_splits_are_disjoint_cover_n_and_follow_the_seed(tmp_path):
    y = np.repeat(np.arange(4), [40, 21, 7, 2])
    parts = pairs.stratified_split(y, 0.15, 0.15, seed=3)
    everything = np.concatenate([parts[s] for s in SPLITS])
    assert sorted(everything.tolist()) == list(range(len(y)))        # disjoint, covering N
    for c, n in enumerate((40, 21, 7, 2)):
        counts = [int((y[parts[s]] == c).sum()) for s in SPLITS]
        assert sum(counts) == n and counts[0] >= 1
    assert [int((y[parts["test"]] == 0).sum()), int((y[parts["val"]] == 0).sum())] == [6, 6]
    again = pairs.stratified_split(y, 0.15, 0.15, seed=3)
    other = pairs.stratified_split(y, 0.15, 0.15, seed=4)
    assert all(np.array_equal(parts[s], again[s]) for s in SPLITS)
    assert not all(np.array_equal(parts[s], other[s]) for s in SPLITS)
    # through the loader: the same file and options give the same split
    path = save(tmp_path / "v.npz", vectors())
    first = data.load("pairs", path, "test", seed=5).tensors["a"]
    torch.testing.assert_close(first, data.load("pairs", path, "test", seed=5).tensors["a"])
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be below 1"):
        data.load("pairs", path, "train", val_fraction=0.5, test_fraction=0.5)


# ----------------------------------------------------------------------------- checks
def _drop(arrays, key):
    return {k: v for k, v in arrays.items() if k != key}


def _with(arrays, **change):
    return {**arrays, **change}


V = vectors()
BAD = {
    "missing": (_drop(_drop(V, "b"), "y"), "missing array(s) 'b', 'y'"),
    "mismatched N": (_with(V, b=V["b"][:-1]), "different numbers of items N: a 60, b 59, y 60"),
    "non-integer labels": (_with(V, y=V["y"] + np.r_[0.5, np.zeros(59)]),
                           "labels 'y' must be integers 0..K-1, got the non-integer value 0.5 "
                           "(item 0)"),
    "negative labels": (_with(V, y=V["y"] - (np.arange(60) == 7)),
                        "got the negative value -1 (item 7)"),
    "split value": (_with(V, split=np.array(["train"] * 59 + ["dev"])),
                    "split value 'dev' (item 59) is not one of 'train', 'val', 'test' (or 0, 1, "
                    "2)"),
    "split code": (_with(V, split=np.r_[np.zeros(59, int), 3]), "split value 3 (item 59)"),
    "class missing from train": (_with(V, split=np.where(V["y"] == 2, "test", "train")),
                                 "class 2 has no item in the train split"),
    "absent class": (_with(V, y=np.where(V["y"] == 1, 3, V["y"])),
                     "class 1 has no item in the train split"),
    "NaN": (_with(V, a=np.where(np.arange(60)[:, None] == 9, np.nan, V["a"])),
            "array 'a' holds NaN or infinite values (first in item 9)"),
    "inf": (_with(V, b=np.where(np.arange(60)[:, None] == 4, np.inf, V["b"])),
            "array 'b' holds NaN or infinite values (first in item 4)"),
    "shape": (_with(V, a=V["a"][:, :, None]), "array 'a' must be (N, d) vectors or (N, C, H, W) "
                                              "images or spectrograms, got shape (60, 5, 1)"),
    "not numbers": (_with(V, b=np.array(["x"] * 60)[:, None]),
                    "array 'b' must hold real numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_problem_is_named_with_the_file(tmp_path, case):
    arrays, words = BAD[case]
    path = save(tmp_path / "bad.npz", arrays)
    with pytest.raises(pairs.PairsError) as err:
        data.load("pairs", path, "train")
    msg = str(err.value)
    assert msg.startswith(f"dataset 'pairs': file {path}: ")
    assert words in msg, msg
    assert pairs.check(path) and words in "; ".join(pairs.check(path))


def test_files_that_cannot_be_read(tmp_path):
    with pytest.raises(pairs.PairsError, match="no such file"):
        data.load("pairs", tmp_path / "none.npz", "train")
    with pytest.raises(pairs.PairsError, match="is a folder"):
        data.load("pairs", tmp_path, "train")
    with pytest.raises(pairs.PairsError, match="no file given"):
        data.load("pairs", None, "train")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(pairs.PairsError, match="unknown file kind '.csv'"):
        data.load("pairs", tmp_path / "x.csv", "train")
    obj = save(tmp_path / "obj.npz", _with(V, split=np.array(["train"] * 60, dtype=object)))
    with pytest.raises(pairs.PairsError, match="stored as Python objects"):
        data.load("pairs", obj, "train")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(pairs.PairsError, match="not readable by torch.load"):
        data.load("pairs", tmp_path / "junk.pt", "train")
    with pytest.raises(ValueError, match="has no option 'standardise'"):
        data.load("pairs", tmp_path / "none.npz", "train", standardise=False)


# ----------------------------------------------------------------------------- the spec
def test_spec_models_follow_the_file(tmp_path):
    vec = save(tmp_path / "v.npz", vectors())
    img = save(tmp_path / "i.npz", images())
    assert specs.modalities("pairs", "a2v") == ("a", "b")
    assert specs.modalities("pairs", "v2a") == ("b", "a")
    assert specs.root_param("pairs") == "pairs_root"
    assert specs.model("pairs", "b", {"pairs_root": str(vec)}) == (
        "mlp", {"modality": "b", "in_features": 4, "hidden": specs.PAIRS_HIDDEN, "classes": 3})
    assert specs.model("pairs", "b", {"pairs_root": str(img)}) == (
        "audio_cnn3", {"modality": "b", "in_channels": 2, "classes": 2})
    small = save(tmp_path / "s.npz", _with(images(), b=np.zeros((20, 1, 4, 4))))
    with pytest.raises(ValueError, match="needs sides >= 8"):
        specs.model("pairs", "b", {"pairs_root": str(small)})
    with pytest.raises(ParamError, match="pairs_root is empty; set it to the path of its file"):
        specs.preflight(["pairs"], {"pairs_root": ""})
    with pytest.raises(ParamError, match="no such file"):
        specs.preflight(["pairs"], {"pairs_root": str(tmp_path / "none.npz")})
    specs.preflight(["pairs"], {"pairs_root": str(vec)})


def test_builder_and_notebook_06_accept_pairs(tmp_path):
    from cmkd.experiments import c2kd_benchmark as c2
    from cmkd.jobs.builders import Builder, Training
    from cmkd.params import from_mapping

    path = save(tmp_path / "v.npz", vectors())
    make = Builder({"pairs_root": str(path)}, Training(optim={}, epochs=1, teacher_epochs=1,
                                                       batch_size=8, device="cpu"))
    job = make.student("pairs", "a2v", 0, "kd")
    assert job.inputs == ("b",) and job.teacher.inputs == ("a",)
    assert job.data_root == str(path) and job.model_options["in_features"] == 4
    assert make.student("pairs", "v2a", 0, "nokd").inputs == ("a",)
    assert from_mapping(c2.Config, {"datasets": ["pairs", "mfeat"], "pairs_root": "x.npz"},
                        partial=True)["datasets"] == ["pairs", "mfeat"]


# ----------------------------------------------------------------------------- register
def my_loader(root, split, flip: bool = False):
    from cmkd.data.arrays import ArrayDataset

    y = torch.arange(8) % 2
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(len(split)))
    return ArrayDataset({"u": -x if flip else x, "v": x[:, :2], "label": y})


@pytest.fixture
def registered():
    data.register("mine", my_loader, classes=2,
                  spec=specs.DataSpec(("u", "v"), {"u": "u", "v": "v"},
                                      {"u": ("mlp", {"modality": "u", "in_features": 3}),
                                       "v": ("mlp", {"modality": "v", "in_features": 2})}))
    yield "mine"
    data.unregister("mine")


def test_register_a_loader_for_jobs_and_grids(registered):
    from cmkd.experiments import c2kd_benchmark as c2
    from cmkd.jobs import Job
    from cmkd.params import from_mapping

    assert len(data.load("mine", None, "train", flip=True)) == 8
    assert data.classes("mine") == 2 and specs.root_param("mine") is None
    job = Job(dataset="mine", model="mlp", inputs=("u",),
              model_options={"in_features": 3, "classes": 2}, dataset_options={"flip": True})
    assert job.dataset_options == {"flip": True}
    assert Job(dataset="mine", model="mlp", inputs=("u",),
               model_options={"in_features": 3, "classes": 2}).dataset_options == {"flip": False}
    with pytest.raises(ParamError, match="dataset 'mine' has no option 'flop'"):
        Job(dataset="mine", model="mlp", inputs=("u",),
            model_options={"in_features": 3, "classes": 2}, dataset_options={"flop": 1})
    assert specs.model("mine", "v", {}) == ("mlp", {"modality": "v", "in_features": 2,
                                                    "classes": 2})
    assert from_mapping(c2.Config, {"datasets": ["mine"]}, partial=True) == {"datasets": ["mine"]}


def test_register_refuses_and_forgets():
    with pytest.raises(ValueError, match="dataset 'mfeat' is built in"):
        data.register("mfeat", my_loader)
    with pytest.raises(TypeError, match="must take \\(root, split, \\*\\*options\\)"):
        data.register("mine", lambda root: None)
    with pytest.raises(ValueError, match="identifier"):
        data.register("my data", my_loader)
    data.register("mine", my_loader)
    data.unregister("mine")
    from cmkd.jobs import Job

    with pytest.raises(ParamError) as err:
        Job(dataset="mine", model="mlp", inputs=("u",),
            model_options={"in_features": 3, "classes": 2})
    assert err.value.name == "dataset"
    assert "exists only in the process that registered it" in str(err.value)
    assert "mine" not in specs.SPECS and "mine" not in data.DATASETS


# ----------------------------------------------------------------------------- a job
def test_a_tiny_job_on_a_pairs_file(tmp_path):
    from cmkd.jobs import Job, run_job

    path = save(tmp_path / "v.npz", vectors())
    job = Job(dataset="pairs", data_root=str(path), model="mlp", inputs=("a",), kind="teacher",
              model_options={"in_features": 5, "classes": 3, "hidden": (8,)}, epochs=1,
              batch_size=16, device="cpu")
    job.check()
    row = run_job(job, tmp_path / "cache")
    assert row["dataset"] == "pairs" and row["data_root"] == str(path)
    assert 0 <= row["test_at_best_val"] <= 1 and len(row["test_correct"]) == 9
    with pytest.raises(ParamError, match="dataset 'pairs' at .*no such file"):
        job.replace(data_root=str(tmp_path / "none.npz")).check()
    with pytest.raises(ParamError, match="give its file"):
        job.replace(data_root=None).check()
