"""Real-dataset loaders on tiny fixtures written in each on-disk layout, through the registry."""
import csv
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import cmkd.data as data
from cmkd.cli import main as cli
from cmkd.data.files import (
    DatasetError,
    ItemError,
    UnsafeFileError,
    choose_frames,
    validation_split,
)


def jpg(path: Path, h: int = 12, w: int = 16, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def wav(path: Path, seconds: float, rate: int, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


# ---------------------------------------------------------------- AV-MNIST
def make_avmnist(root: Path, n_train=12, n_test=5) -> None:
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        (root / "image").mkdir(parents=True, exist_ok=True)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        np.save(root / "image" / f"{part}_data.npy", rng.integers(0, 256, (n, 784)).astype(float))
        np.save(root / "audio" / f"{part}_data.npy", np.full((n, 112, 112), 255.0))
        np.save(root / f"{part}_labels.npy", np.arange(n) % 10)


def test_avmnist(tmp_path):
    make_avmnist(tmp_path)
    train = data.load("avmnist", tmp_path, "train", n_valid=4)
    val = data.load("avmnist", tmp_path, "val", n_valid=4)
    test = data.load("avmnist", tmp_path, "test")
    assert (len(train), len(val), len(test)) == (8, 4, 5)
    item = val[0]
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert item["audio"].shape == (1, 112, 112) and torch.all(item["audio"] == 1.0)
    assert int(item["label"]) == 8 and item["label"].dtype == torch.int64
    raw = np.load(tmp_path / "image" / "train_data.npy")[8].reshape(1, 28, 28) / 255
    np.testing.assert_allclose(item["image"].numpy(), raw, rtol=1e-6)


def test_missing_and_malformed_errors_name_dataset_parameter_and_layout(tmp_path):
    with pytest.raises(DatasetError) as err:
        data.load("avmnist", tmp_path / "nowhere", "train")
    msg = str(err.value)
    assert "'avmnist'" in msg and "'avmnist_root'" in msg and "image/train_data.npy" in msg
    make_avmnist(tmp_path)
    np.save(tmp_path / "audio" / "test_data.npy", np.zeros((5, 50, 50)))
    with pytest.raises(DatasetError, match="not 112x112"):
        data.load("avmnist", tmp_path, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("avmnist", tmp_path, "valid")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("mnist", tmp_path, "train")


# ---------------------------------------------------------------- RAVDESS
def make_ravdess(root: Path) -> None:
    for split, name, n in (("train", "spa_dl.csv", 6), ("val", "spa_val.csv", 3),
                           ("test", "spa_test.csv", 2)):
        rows = []
        for i in range(n):
            audio, image = f"{split}_{i}.npy", f"{split}_{i}.jpg"
            (root / "aud_features").mkdir(parents=True, exist_ok=True)
            np.save(root / "aud_features" / audio, np.full((40, 256), -10.59 + 85.66 * i))
            jpg(root / "vid_features" / image, 8, 16, i)
            rows.append((audio, image, i % 8))
        (root / "data_file").mkdir(parents=True, exist_ok=True)
        with open(root / "data_file" / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["audio", "image", "label"])
            w.writerows(rows)


def test_ravdess(tmp_path):
    make_ravdess(tmp_path)
    sets = {s: data.load("ravdess", tmp_path, s) for s in ("train", "val", "test")}
    assert [len(d) for d in sets.values()] == [6, 3, 2]
    item = sets["train"][2]
    assert item["audio"].shape == (1, 40, 256)
    np.testing.assert_allclose(item["audio"].numpy(), 2.0, rtol=1e-5)   # (x - mean) / std
    assert item["image"].shape == (3, 8, 16) and int(item["label"]) == 2
    ref = np.asarray(Image.open(tmp_path / "vid_features" / "train_2.jpg"), np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(item["image"].numpy(), ((ref - mean) / std).transpose(2, 0, 1),
                               atol=1e-5)
    assert data.load("ravdess", tmp_path, "val", image_size=(4, 6))[0]["image"].shape == (3, 4, 6)
    (tmp_path / "vid_features" / "test_1.jpg").unlink()
    with pytest.raises(DatasetError, match="test_1.jpg"):
        data.load("ravdess", tmp_path, "train")


def test_ravdess_wrong_shape_and_corrupt_items_are_named(tmp_path):
    make_ravdess(tmp_path)
    feats = tmp_path / "aud_features"
    np.save(feats / "val_1.npy", np.zeros((256, 40)))              # transposed
    val = data.load("ravdess", tmp_path, "val")
    with pytest.raises(ItemError) as err:
        val[1]
    assert str(err.value) == (f"{feats / 'val_1.npy'}: array of shape (256, 40), expected "
                              "(40, 256) (the loader option audio_shape; None for any size on "
                              "an axis)")
    assert data.load("ravdess", tmp_path, "val", audio_shape=(None, None))[1]["audio"].shape == (
        1, 256, 40)
    assert data.load("ravdess", tmp_path, "val", audio_shape=None)[0]["audio"].shape == (
        1, 40, 256)
    np.save(feats / "val_1.npy", np.zeros((40, 256, 1)))           # 3-D
    with pytest.raises(ItemError, match=r"shape \(40, 256, 1\), expected \(any, any\)"):
        data.load("ravdess", tmp_path, "val", audio_shape=(None, None))[1]
    (feats / "val_1.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ItemError, match="val_1.npy: unreadable or corrupt, expected a NumPy "
                                        r".npy array \(") as err:
        val[1]
    assert isinstance(err.value.__cause__, ValueError)
    (tmp_path / "vid_features" / "val_2.jpg").write_bytes(b"")
    with pytest.raises(ItemError, match="val_2.jpg: unreadable or corrupt, expected an image"):
        val[2]
    # the first listed array of a split is checked with the layout, before any item is read
    np.save(feats / "test_0.npy", np.zeros((40, 100)))
    problems = data.module("ravdess").check(tmp_path)
    assert problems == ["aud_features/test_0.npy: array of shape (40, 100), expected (40, 256) "
                        "(the loader option audio_shape; None for any size on an axis)"]
    with pytest.raises(DatasetError, match="test_0.npy: array of shape"):
        data.load("ravdess", tmp_path, "train")
    assert len(data.load("ravdess", tmp_path, "test", audio_shape=(40, None))) == 2


# ---------------------------------------------------------------- CREMA-D
def make_cremad(root: Path) -> None:
    emotions = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    for name, n in (("train.csv", 12), ("test.csv", 3)):
        lines = []
        for i in range(n):
            clip = f"{1000 + i}_{name[:2]}_{emotions[i % 6]}_XX"
            wav(root / "AudioWAV" / f"{clip}.wav", 0.5, 16000)
            for k in range(3):
                jpg(root / "Image-01-FPS" / clip / f"{k + 1:05d}.jpg", 20, 24, k)
            lines.append(f"{clip},{emotions[i % 6]}")
        # a BOM and CRLF line ends, as in the distributed files
        (root / name).write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())


def test_cremad(tmp_path):
    make_cremad(tmp_path)
    train = data.load("cremad", tmp_path, "train", val_fraction=1 / 6)
    val = data.load("cremad", tmp_path, "val", val_fraction=1 / 6)
    test = data.load("cremad", tmp_path, "test")
    assert (len(train), len(val), len(test)) == (6, 6, 3)
    assert sorted(r[1] for r in val.rows) == list(range(6)), "stratified: one per class"
    assert not {r[0] for r in train.rows} & {r[0] for r in val.rows}
    item = test[1]
    assert item["audio"].shape == (1, 257, 188) and item["audio"].dtype == torch.float32
    assert item["image"].shape == (3, 1, 224, 224) and int(item["label"]) == 1
    three = data.load("cremad", tmp_path, "train", val_fraction=1 / 6, frames=3, image_size=32)
    assert three[0]["image"].shape == (3, 3, 32, 32)


# ---------------------------------------------------------------- AVE
def make_ave(root: Path) -> None:
    cats = ["Church bell", "Male speech", "Dog barking"]
    for name, n in (("trainSet.txt", 5), ("valSet.txt", 2), ("testSet.txt", 3)):
        lines = []
        for i in range(n):
            vid = f"{name[:2]}{i:09d}"
            with open(_mk(root / "Audio-1004-SE") / f"{vid}.pkl", "wb") as f:
                pickle.dump(np.full((257, 1004), float(i), np.float64), f)
            for k in range(2):
                jpg(root / "Image-01-FPS-SE" / vid / f"{k + 1:05d}.jpg", 10, 10, k)
            lines.append(f"{cats[(i + 1) % 3]}&{vid}&good&0&10")
        if name == "trainSet.txt":
            lines.append(lines[0])            # a duplicated line, as in the real list
        (root / name).write_text("\n".join(lines) + "\n")


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_ave(tmp_path):
    make_ave(tmp_path)
    train = data.load("ave", tmp_path, "train")
    assert len(train) == 5, "duplicates kept once"
    # classes numbered by first appearance in testSet.txt: Male speech 0, Dog barking 1, Church 2
    assert [r[1] for r in train.rows] == [0, 1, 2, 0, 1]
    item = data.load("ave", tmp_path, "test", image_size=16)[2]
    assert item["audio"].shape == (1, 257, 1004) and float(item["audio"][0, 0, -1]) == 2.0
    assert item["image"].shape == (3, 1, 16, 16) and int(item["label"]) == 2
    cut = data.load("ave", tmp_path, "val", audio_frames=1024, image_size=16)[1]["audio"]
    assert cut.shape == (1, 257, 1024) and torch.all(cut[..., 1004:] == 0), "zero-padded"


class _RunsACommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_an_ave_spectrogram_that_would_run_code_is_refused(tmp_path):
    make_ave(tmp_path)
    marker = tmp_path / "MARKER"
    path = tmp_path / "Audio-1004-SE" / "te000000001.pkl"
    path.write_bytes(pickle.dumps(_RunsACommand(f"touch {marker}")))
    test = data.load("ave", tmp_path, "test", image_size=16)
    assert test[0]["audio"].shape == (1, 257, 1004)
    with pytest.raises(UnsafeFileError, match=f"^AVE file {path} refers to "
                                              f"{os.system.__module__}.system: refused, dataset "
                                              "files may hold arrays only"):
        test[1]
    assert not marker.exists()
    # arrays as stored under any protocol read as before (here float32, protocol 5)
    path.write_bytes(pickle.dumps(np.ones((257, 3), np.float32), protocol=5))
    assert test[1]["audio"].shape == (1, 257, 3)


# ---------------------------------------------------------------- VGGSound
def make_vggsound(root: Path) -> None:
    labels = ["dog barking", "playing piano"]
    for part, n in (("train", 8), ("test", 2)):
        rows = []
        for i in range(n):
            ytid, start = f"{part}{i:04d}", 10 * i
            stem = f"{ytid}_{start:06d}"
            wav(root / f"{part}-audios" / f"{part}-set" / f"{stem}.wav", 0.3, 16000)
            folder = root / f"{part}-videos" / f"{part}-set-img" / "Image-01-FPS" / f"{stem}.mp4"
            for k in range(4):
                jpg(folder / f"{k + 1:05d}.jpg", 10, 10, k)
            rows.append([ytid, str(start), labels[i % 2], part])
        with open(root / f"{part}_tiny.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)


def test_vggsound(tmp_path):
    make_vggsound(tmp_path)
    train = data.load("vggsound", tmp_path, "train", val_fraction=0.25, image_size=16)
    val = data.load("vggsound", tmp_path, "val", val_fraction=0.25, image_size=16)
    assert (len(train), len(val)) == (6, 2) and train.classes == ["dog barking", "playing piano"]
    item = data.load("vggsound", tmp_path, "test", image_size=16)[1]
    assert item["audio"].shape == (1, 129, 626) and item["image"].shape == (3, 3, 16, 16)
    assert int(item["label"]) == 1
    # a clip without audio: reported by check, dropped by the loader (as C2KD does)
    next((tmp_path / "train-audios" / "train-set").glob("*.wav")).unlink()
    assert any("without audio or frames" in p for p in data.module("vggsound").check(tmp_path))
    assert len(data.load("vggsound", tmp_path, "train", val_fraction=0.25)) == 5
    with pytest.raises(DatasetError, match="vggsound_root"):
        data.load("vggsound", tmp_path, "train", skip_missing=False)


# ---------------------------------------------------------------- NYU Depth V2, both layouts
def make_nyu_sagate(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name, ids in (("train.txt", range(1, 6)), ("test.txt", range(6, 8))):
        lines = []
        for i in ids:
            jpg(root / "RGB" / f"{i}.jpg", 12, 16, i)
            jpg(root / "HHA" / f"{i}.jpg", 12, 16, i + 100)
            label = rng.integers(0, 41, (12, 16)).astype(np.uint8)
            label[0, 0], label[0, 1] = 0, 40
            png(root / "Label" / f"{i}.png", label)
            _mk(root / "Depth")
            np.save(root / "Depth" / f"{i}.npy", np.full((12, 16), 1.5 * i, np.float32))
            lines.append(f"RGB/{i}.jpg\tLabel/{i}.png")
        (root / name).write_text("\n".join(lines) + "\n")


def test_nyudv2_sagate_layout(tmp_path):
    make_nyu_sagate(tmp_path)
    train = data.load("nyudv2", tmp_path, "train", val_fraction=0.2, augment=False)
    val = data.load("nyudv2", tmp_path, "val", val_fraction=0.2)
    test = data.load("nyudv2", tmp_path, "test", modalities=("rgb", "depth", "hha"))
    assert (len(train), len(val), len(test)) == (4, 1, 2)
    item = test[0]
    assert item["rgb"].shape == (3, 12, 16) and item["hha"].shape == (3, 12, 16)
    assert item["depth"].shape == (1, 12, 16) and float(item["depth"][0, 0, 0]) == 9.0
    raw = np.asarray(Image.open(tmp_path / "Label" / "6.png")).astype(np.int64)
    assert item["label"].dtype == torch.int64
    np.testing.assert_array_equal(item["label"].numpy(), np.where(raw == 0, 255, raw - 1))
    assert int(item["label"][0, 0]) == 255 and int(item["label"][0, 1]) == 39
    small = data.load("nyudv2", tmp_path, "test", size=(6, 8))[0]
    assert small["rgb"].shape == (3, 6, 8) and small["label"].shape == (6, 8)
    assert set(small["label"].unique().tolist()) <= set(range(40)) | {255}


def make_nyu_cen(root: Path) -> None:
    rng = np.random.default_rng(1)
    for name, ids in (("train.txt", range(1, 5)), ("val.txt", range(5, 8))):
        lines = []
        for i in ids:
            png(root / "rgb" / f"{i:06d}.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
            mask = rng.integers(0, 40, (12, 16)).astype(np.uint8)
            mask[0, 0] = 255
            png(root / "masks" / f"{i:06d}.png", mask)
            png(root / "depth" / f"{i:06d}.png", np.full((12, 16), 5000 * i, np.uint16))
            lines.append(f"rgb/{i:06d}.png\tmasks/{i:06d}.png\tdepth/{i:06d}.png")
        (root / name).write_text("\n".join(lines) + "\n")


def test_nyudv2_cen_layout(tmp_path):
    make_nyu_cen(tmp_path)
    test = data.load("nyudv2_cen", tmp_path, "test")
    assert len(test) == 3, "CEN's val.txt is NYU's test set"
    item = test[0]
    assert item["depth"].shape == (1, 12, 16)
    np.testing.assert_allclose(item["depth"].numpy(), 5.0)             # 25000 / 5000 metres
    raw = np.asarray(Image.open(tmp_path / "masks" / "000005.png")).astype(np.int64)
    np.testing.assert_array_equal(item["label"].numpy(), raw)
    assert len(data.load("nyudv2_cen", tmp_path, "train", val_fraction=0.25)) == 3
    (tmp_path / "depth" / "000002.png").unlink()
    with pytest.raises(DatasetError, match="depth/000002.png"):
        data.load("nyudv2_cen", tmp_path, "test")


# ---------------------------------------------------------------- MM-IMDB
def make_mmimdb(root: Path, n: int = 10) -> None:
    import h5py

    rng = np.random.default_rng(0)
    _mk(root)
    with h5py.File(root / "multimodal_imdb.hdf5", "w") as f:
        f["features"] = rng.normal(size=(n, 300)).astype(np.float32)
        f["vgg_features"] = rng.normal(size=(n, 4096)).astype(np.float32)
        f["images"] = rng.integers(0, 256, (n, 3, 256, 160)).astype(np.int32)
        genres = (rng.uniform(size=(n, 23)) < 0.3).astype(np.int32)
        f["genres"] = genres
        f["genres"].attrs["target_names"] = np.array([g.encode() for g in
                                                      data.module("mmimdb").GENRES])
        f["imdb_ids"] = np.array([f"{i:07d}".encode() for i in range(n)], dtype="S7")


def test_mmimdb(tmp_path):
    import h5py

    make_mmimdb(tmp_path)
    bounds = (6, 8)
    sizes = [len(data.load("mmimdb", tmp_path, s, boundaries=bounds))
             for s in ("train", "val", "test")]
    assert sizes == [6, 2, 2]
    ds = data.load("mmimdb", tmp_path, "val", boundaries=bounds, genres=("Drama", "Comedy"))
    item = ds[1]
    with h5py.File(tmp_path / "multimodal_imdb.hdf5") as f:
        np.testing.assert_array_equal(item["label"].numpy(), f["genres"][7][:2])
        np.testing.assert_array_equal(item["text"].numpy(), f["features"][7])
    assert item["image"].shape == (4096,) and item["label"].dtype == torch.float32
    poster = data.load("mmimdb", tmp_path, "test", boundaries=bounds, image_key="images")[0]
    assert poster["image"].shape == (3, 256, 160) and float(poster["image"].max()) <= 1
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch["label"].shape == (2, 2)
    with pytest.raises(ValueError, match="unknown genres"):
        data.load("mmimdb", tmp_path, "val", genres=("Dramedy",))


# ---------------------------------------------------------------- CrisisMMD
def make_crisismmd(root: Path) -> None:
    classes = data.module("crisismmd").CLASSES
    header = ["event_name", "tweet_id", "image_id", "tweet_text", "image", "label",
              "label_text", "label_image", "label_text_image"]
    for split, n in (("train", 8), ("dev", 3), ("test", 2)):
        rows = []
        for i in range(n):
            image = f"data_image/event/1_1_2017/{split}{i}_0.jpg"
            jpg(root / image, 30, 40, i)
            label = classes[i % 8]
            rows.append(["event", str(i), f"{i}_0", f"tweet {split} {i} about {label}", image,
                         label, label, label, "Positive"])
        path = _mk(root / "crisismmd_datasplit_all") / f"task_humanitarian_text_img_{split}.tsv"
        path.write_text("\n".join("\t".join(r) for r in [header] + rows) + "\n")


def test_crisismmd_with_pluggable_encoders(tmp_path):
    make_crisismmd(tmp_path)
    sizes = [len(data.load("crisismmd", tmp_path, s)) for s in ("train", "val", "test")]
    assert sizes == [8, 3, 2]
    raw = data.load("crisismmd", tmp_path, "val")[2]
    assert raw["text"] == "tweet dev 2 about injured_or_dead_people" and int(raw["label"]) == 2
    assert raw["image"].shape == (3, 224, 224)
    # tiny stand-ins for BERT / MobileNetV2: any callables
    text_encoder = lambda s: torch.tensor([float(len(s))])  # noqa: E731
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(0))
    enc = data.load("crisismmd", tmp_path, "test", text_encoder=text_encoder,
                    image_encoder=lambda x: cnn(x[None]), image_size=32)[1]
    assert enc["text"].shape == (1,) and enc["image"].shape == (4,)
    # encoders by import path (what a job or a params file holds): resolved with importlib
    by_path = data.load("crisismmd", tmp_path, "test", text_encoder="stub_encoders:text",
                        image_encoder="stub_encoders:image", image_size=32)[1]
    assert by_path["text"].shape == (16,) and by_path["image"].shape == (12,)
    for path, why in (("stub_encoders", "not an import path"),
                      ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
                      ("stub_encoders:nothing", "has no attribute 'nothing'"),
                      ("stub_encoders:NOT_CALLABLE", "is not callable")):
        with pytest.raises(ValueError, match=f"option 'image_encoder'.*{why}"):
            data.load("crisismmd", tmp_path, "test", image_encoder=path)
    for path, why in (("os:system", "refused: its module is 'os'"),
                      ("subprocess:run", "refused: its module is 'subprocess'"),
                      ("builtins:eval", "refused: its module is 'builtins'")):
        with pytest.raises(ValueError, match=f"option 'text_encoder': '{path}' {why}"):
            data.load("crisismmd", tmp_path, "test", text_encoder=path)
    moved = tmp_path / "elsewhere"
    (tmp_path / "data_image").rename(_mk(moved) / "data_image")
    with pytest.raises(DatasetError, match="images named by"):
        data.load("crisismmd", tmp_path, "test")
    assert len(data.load("crisismmd", tmp_path, "test", image_root=moved)) == 2
    bad = tmp_path / "crisismmd_datasplit_all" / "task_humanitarian_text_img_dev.tsv"
    bad.write_text(bad.read_text().replace("vehicle_damage", "flood") + "x\tflood\n")
    with pytest.raises(DatasetError, match="crisismmd_root"):
        data.load("crisismmd", tmp_path, "train")


def test_crisismmd_encoders_resolving_to_commands_are_refused_before_a_call(tmp_path,
                                                                            monkeypatch):
    """A module of the user's passes the module check; what its name resolves to is checked
    after the import, before any call: a builtin or a function of os, subprocess..."""
    make_crisismmd(tmp_path)
    marker = tmp_path / "MARKER"
    (tmp_path / "aliases_enc.py").write_text(
        "import functools\nimport os\nimport subprocess\n\nrun = os.system\n"
        "popen = subprocess.Popen\nev = eval\nopener = open\n"
        f"bound = functools.partial(os.system, 'touch {marker}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "aliases_enc", raising=False)
    for attr, what in (("run", f"{os.system.__module__}.system"), ("popen", "subprocess.Popen"),
                       ("ev", "builtins.eval"), ("opener", "builtins.open"),
                       ("bound", f"{os.system.__module__}.system")):
        with pytest.raises(ValueError, match=f"'aliases_enc:{attr}' refused: it resolves to "
                                             f"{what}"):
            data.load("crisismmd", tmp_path, "test", text_encoder=f"aliases_enc:{attr}")[0]
    assert not marker.exists()


def test_a_crisismmd_encoder_module_is_imported_when_the_data_are_opened(tmp_path,
                                                                         monkeypatch):
    make_crisismmd(tmp_path / "CrisisMMD_v2.0")
    marker = tmp_path / "MARKER"
    (tmp_path / "sidefx_load_enc.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n\n"
        "def f(text):\n    return torch.zeros(3)\n\nimport torch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sidefx_load_enc", raising=False)
    data.module("crisismmd").check_encoder("sidefx_load_enc:f", "text_encoder")
    assert not marker.exists()
    ds = data.load("crisismmd", tmp_path / "CrisisMMD_v2.0", "test", image_size=16,
                   text_encoder="sidefx_load_enc:f")
    assert marker.exists(), "imported when the dataset is opened"
    assert ds[0]["text"].shape == (3,)


# ---------------------------------------------------------------- corrupt items, per reader
def test_corrupt_items_name_the_file(tmp_path):
    make_cremad(tmp_path / "cremad")
    clip = data.load("cremad", tmp_path / "cremad", "test").rows[0][0]
    wav_path = tmp_path / "cremad" / "AudioWAV" / f"{clip}.wav"
    wav_path.write_bytes(b"RIFF")
    with pytest.raises(ItemError, match=f"{clip}.wav: unreadable or corrupt, expected a WAV"):
        data.load("cremad", tmp_path / "cremad", "test")[0]
    make_ave(tmp_path / "ave")
    (tmp_path / "ave" / "Audio-1004-SE" / "te000000001.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(ItemError, match="te000000001.pkl: unreadable or corrupt, expected a "
                                        "pickled 2-D spectrogram"):
        data.load("ave", tmp_path / "ave", "test", image_size=16)[1]
    make_nyu_sagate(tmp_path / "nyu")
    (tmp_path / "nyu" / "Depth" / "6.npy").write_bytes(b"")
    (tmp_path / "nyu" / "Label" / "7.png").write_bytes(b"\x89PNG broken")
    test = data.load("nyudv2", tmp_path / "nyu", "test")
    with pytest.raises(ItemError, match="6.npy: unreadable or corrupt, expected a NumPy .npy"):
        test[0]
    with pytest.raises(ItemError, match="7.png: unreadable or corrupt, expected an image"):
        test[1]


# ---------------------------------------------------------------- registry status and CLI
def test_status_and_cli(tmp_path, capsys):
    make_avmnist(tmp_path / "avmnist")
    make_ravdess(tmp_path / "ravdess")
    (tmp_path / "ravdess" / "data_file" / "spa_test.csv").unlink()
    rows = {r["name"]: r for r in data.status(tmp_path)}
    assert set(rows) == set(data.REAL)
    assert rows["avmnist"]["status"] == "found"
    assert rows["ravdess"]["status"] == "malformed"
    assert rows["ravdess"]["problems"] == ["data_file/spa_test.csv is missing"]
    assert rows["mmimdb"]["status"] == "missing"
    assert cli(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "avmnist     found" in out and "spa_test.csv is missing" in out
    assert "crisismmd   missing" in out


def test_cli_datasets_names_a_zero_byte_avmnist_array(tmp_path, capsys):
    make_avmnist(tmp_path / "avmnist")
    (tmp_path / "avmnist" / "audio" / "test_data.npy").write_bytes(b"")
    row = {r["name"]: r for r in data.status(tmp_path)}["avmnist"]
    assert row["status"] == "malformed"
    assert row["problems"] == ["audio/test_data.npy: unreadable or corrupt, expected a NumPy "
                               ".npy array (EOFError: No data left in file)"]
    assert cli(["datasets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "avmnist     malformed" in out and "- audio/test_data.npy: unreadable" in out
    with pytest.raises(DatasetError, match="audio/test_data.npy: unreadable or corrupt"):
        data.load("avmnist", tmp_path / "avmnist", "train")


def test_cli_datasets_root_absent_or_not_a_folder(tmp_path, capsys):
    absent = tmp_path / "nowhere"
    assert cli(["datasets", "--root", str(absent)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        f"cmkd datasets: datasets root {absent} does not exist; expected a folder holding the "
        "datasets under their usual folder names"]
    (tmp_path / "file").write_text("x")
    assert cli(["datasets", "--root", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.status(absent)


def test_unknown_loader_options_are_named_with_the_accepted_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        data.load("avdigits", split="train", bogus=1)
    assert str(err.value) == ("dataset 'avdigits' has no option 'bogus'; its options are: "
                              "energy_removed, standardize")
    with pytest.raises(ValueError, match=r"^dataset 'ravdess' has no options 'image_sise', 'x' "
                                         r"\(did you mean 'image_size'\?\); its options are: "
                                         "audio_mean, audio_std, image_size, audio_shape$"):
        data.load("ravdess", tmp_path, "train", image_sise=(4, 6), x=2)
    # every registered loader: the accepted names are exactly its load's keyword parameters
    import inspect

    for name in data.DATASETS:
        params = list(inspect.signature(data.module(name).load).parameters)
        assert params[:2] == ["root", "split"] and data.option_names(name) == tuple(params[2:])


def test_validation_split_and_frame_choice():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, val = validation_split(labels, 0.2, 0)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    np.testing.assert_array_equal(validation_split(labels, 0.2, 0)[1], val)
    assert choose_frames(10, 1, False) == [5] and choose_frames(9, 3, False) == [1, 4, 7]
    assert choose_frames(2, 3, False) == [0, 1, 1]
    picked = choose_frames(10, 3, True)
    assert picked == sorted(picked) and len(set(picked)) == 3


# ---------------------------------------------------------------- list files that are not text
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@pytest.mark.parametrize("name, make, list_file", [
    ("cremad", lambda r: make_cremad(r), "train.csv"),
    ("vggsound", lambda r: make_vggsound(r), "train_tiny.csv"),
    ("ravdess", lambda r: make_ravdess(r), "data_file/spa_dl.csv"),
    ("crisismmd", lambda r: make_crisismmd(r),
     "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv"),
    ("ave", lambda r: make_ave(r), "trainSet.txt"),
])
def test_a_binary_list_file_is_named(tmp_path, name, make, list_file):
    make(tmp_path)
    (tmp_path / list_file).write_bytes(BINARY)
    with pytest.raises(DatasetError) as err:
        data.load(name, tmp_path, "train")
    message = str(err.value)
    assert f"{Path(list_file).name} line 1, column 1: byte 0x89 is not UTF-8 text" in message
    assert f"parameter '{data.module(name).PARAM}'" in message
    assert err.value.__cause__ is None and err.value.__context__ is None


HUGE_LINES = [
    ("cremad", lambda r: make_cremad(r), "train.csv", "{big},NEU"),
    ("cremad", lambda r: make_cremad(r), "train.csv", "clip,{big}"),
    ("ave", lambda r: make_ave(r), "trainSet.txt", "{big}"),
    ("vggsound", lambda r: make_vggsound(r), "train_tiny.csv", "abc,{big},dog barking,train"),
    ("ravdess", lambda r: make_ravdess(r), "data_file/spa_dl.csv", "audio,image,label\na,b,{big}"),
    ("crisismmd", lambda r: make_crisismmd(r),
     "crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv", "HEADER\n" + "\t" * 5
     + "{big}\t\t\t"),
]


def _load_with_line(tmp_path, name, make, list_file, line, size):
    make(tmp_path)
    path = tmp_path / list_file
    header = path.read_text().splitlines()[0]
    path.write_text(line.replace("HEADER", header).replace("{big}", "z" * size) + "\n")
    with pytest.raises(DatasetError) as err:
        data.load(name, tmp_path, "train")
    return str(err.value)


@pytest.mark.parametrize("name, make, list_file, line", HUGE_LINES)
def test_a_huge_line_of_a_list_file_is_quoted_in_part(tmp_path, name, make, list_file, line):
    """Lines of 100,000 characters (csv's field limit is 131,072): quoted, cut at 200."""
    message = _load_with_line(tmp_path, name, make, list_file, line, 100_000)
    assert Path(list_file).name in message and "zzzz" in message
    assert " characters in all)" in message and len(message) < 3000, message[:500]


@pytest.mark.parametrize("name, make, list_file, line", HUGE_LINES)
def test_a_50_mb_line_of_a_list_file_is_named_in_a_short_message(tmp_path, name, make,
                                                                   list_file, line):
    message = _load_with_line(tmp_path, name, make, list_file, line, 50_000_000)
    assert Path(list_file).name in message and len(message) < 3000, message[:500]
    if name in ("vggsound", "ravdess", "crisismmd"):
        assert "not readable as CSV (field larger than field limit" in message
