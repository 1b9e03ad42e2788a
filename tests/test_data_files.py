"""The shared pieces of the real-dataset loaders (cmkd.data.files), against direct computations."""
import collections
import os
import pickle
import types

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from cmkd.data.files import (
    DatasetError,
    ItemError,
    UnsafeFileError,
    absent_items,
    check_shape,
    folder_check,
    image_transform,
    list_fields,
    log_stft,
    missing,
    open_root,
    read_csv,
    read_image_array,
    read_item,
    read_lines,
    read_list,
    read_npy,
    read_pickle,
    read_rgb,
    read_wav,
    split_rows,
    validation_split,
    wav_spectrogram,
)


def test_folder_check_and_open_root(tmp_path):
    seen = []

    @folder_check
    def check(root, extra="x"):
        seen.append((root, extra))
        return [] if (root / "ok").is_file() else ["ok is missing"]

    assert check(None) == ["no folder given"] and check(tmp_path / "no") == [
        f"folder {tmp_path / 'no'} does not exist"]
    assert seen == [], "the inner check runs only on an existing folder"
    assert check(str(tmp_path), "y") == ["ok is missing"] and seen == [(tmp_path, "y")]
    loader = types.SimpleNamespace(NAME="toy", PARAM="toy_root", SPLITS=("train", "test"),
                                   LAYOUT="<toy_root>/ok", check=check)
    with pytest.raises(ValueError, match="dataset 'toy': split must be one of"):
        open_root(loader, tmp_path, "val")
    with pytest.raises(DatasetError) as err:
        open_root(loader, tmp_path, "train")
    assert all(s in str(err.value) for s in ("'toy'", "'toy_root'", "<toy_root>/ok"))
    assert open_root(loader, tmp_path, "train", tolerate="is missing") == tmp_path
    (tmp_path / "ok").touch()
    assert open_root(loader, str(tmp_path), "test") == tmp_path


def test_missing_read_list_list_fields_and_absent_items(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "f.txt").write_text("a&1\n\nb&2\n")
    assert missing(tmp_path, ("d", "e"), ("f.txt", "g.txt")) == ["e/ is missing",
                                                                 "g.txt is missing"]

    def read(path):
        return list(list_fields(path, "&", "'name&number'", lambda p: p[-1].isdigit()))

    problems = []
    assert read_list(tmp_path, "f.txt", read, problems) == [["a", "1"], ["b", "2"]]
    assert read_list(tmp_path, "g.txt", read, problems) is None
    (tmp_path / "h.txt").write_text("a&1\nb&x\n")
    assert read_list(tmp_path, "h.txt", read, problems) is None
    assert problems == ["g.txt is missing", "h.txt line 2: expected 'name&number', got 'b&x'"]
    assert absent_items([], "files are missing") == []
    assert absent_items(["p", "q"], "files are missing") == ["2 files are missing (first: p)"]


def test_split_rows_follows_validation_split():
    rows = [f"r{k}" for k in range(10)]
    labels = [0] * 6 + [1] * 4
    train, val = validation_split(np.array(labels), 0.3, 7)
    assert split_rows(rows, "val", 0.3, 7, labels) == [rows[k] for k in val]
    assert split_rows(rows, "train", 0.3, 7, labels) == [rows[k] for k in train]
    assert split_rows(rows, "test", 0.3, 7, labels) is rows
    _, one = validation_split(np.zeros(10, int), 0.3, 7)
    assert split_rows(rows, "val", 0.3, 7) == [rows[k] for k in one]


def test_wav_spectrogram_crops(tmp_path):
    rate = 8000
    x = (0.9 * np.sin(np.arange(1000) * 0.05) + np.linspace(0, 0.5, 1000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, rate, subtype="FLOAT")

    def ref(samples):
        return log_stft(np.clip(samples, -1, 1), 64, 32)[None]

    path = tmp_path / "a.wav"
    first = wav_spectrogram(path, rate, 2500, 64, 32)                   # tiled past its end
    torch.testing.assert_close(first, ref(np.tile(x, 3)[:2500]))
    centre = wav_spectrogram(path, rate, 400, 64, 32, start="centre")
    torch.testing.assert_close(centre, ref(x[300:700]))
    longer = wav_spectrogram(path, rate, 400, 64, 32, min_length=1600, start="centre")
    torch.testing.assert_close(longer, ref(np.tile(x, 2)[600:1000]))
    torch.manual_seed(3)
    offset = int(torch.randint(0, 601, ()).item())
    torch.manual_seed(3)
    torch.testing.assert_close(wav_spectrogram(path, rate, 400, 64, 32, start="random"),
                               ref(x[offset: offset + 400]))
    with pytest.raises(ValueError, match="start must be"):
        wav_spectrogram(path, rate, 400, 64, 32, start="middle")


def test_image_transform_sizes():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    assert image_transform(False, 8)(im).shape == (3, 8, 8)
    assert image_transform(False, (6, 10))(im).shape == (3, 6, 10)
    assert image_transform(False, None)(im).shape == (3, 30, 40)
    assert image_transform(True, 12)(im).shape == (3, 12, 12)
    # Resize(shorter side 15) then the central 12 x 12: the middle of a 15 x 20 image
    cropped = image_transform(False, 12, crop_from=15)(im)
    from torchvision import transforms as T

    full = T.Compose([T.Resize(15), T.ToTensor()])(im)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (full[:, 2:14, 4:16] - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(cropped, expected)


@pytest.mark.parametrize("reader, suffix, expected", [
    (read_npy, ".npy", "a NumPy .npy array"),
    (read_wav, ".wav", "a WAV file"),
    (read_rgb, ".jpg", "an image (JPEG / PNG)"),
    (read_image_array, ".png", "an image (JPEG / PNG)"),
])
@pytest.mark.parametrize("content", [b"", b"not what it claims to be " * 4])
def test_corrupt_items_are_named_with_the_read_error_chained(tmp_path, reader, suffix,
                                                             expected, content):
    path = tmp_path / f"item{suffix}"
    path.write_bytes(content)
    with pytest.raises(ItemError) as err:
        reader(path)
    assert err.value.path == path and str(err.value).startswith(
        f"{path}: unreadable or corrupt, expected {expected} (")
    assert err.value.__cause__ is not None
    assert type(err.value.__cause__).__name__ in str(err.value)


def test_truncated_jpeg_is_named(tmp_path):
    path = tmp_path / "frame.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ItemError, match="frame.jpg: unreadable or corrupt, expected an image"):
        read_rgb(path)


def test_absent_items_stay_file_not_found(tmp_path):
    for reader in (read_npy, read_wav, read_rgb):
        with pytest.raises(FileNotFoundError) as err:
            reader(tmp_path / "absent.x")
        assert "absent.x" in str(err.value) and not isinstance(err.value, ItemError)


def test_good_items_read_back(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy", mmap_mode="r"),
                                  np.arange(6).reshape(2, 3))
    sf.write(tmp_path / "a.wav", np.full(100, 0.25, np.float32), 8000, subtype="FLOAT")
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav"), 0.25)


def test_check_shape_and_read_item(tmp_path):
    a = np.zeros((40, 256))
    assert check_shape(a, (40, 256), "x.npy") is a and check_shape(a, (None, 256), "x.npy") is a
    with pytest.raises(ItemError, match=r"^x.npy: array of shape \(256, 40\), expected "
                                        r"\(40, 256\)$"):
        check_shape(a.T, (40, 256), "x.npy")
    with pytest.raises(ItemError, match=r"shape \(40, 256, 1\), expected \(any, any\)$"):
        check_shape(a[..., None], (None, None), "x.npy")
    (tmp_path / "bad.npy").write_bytes(b"")
    np.save(tmp_path / "good.npy", a)
    problems = []
    assert read_item(tmp_path, "good.npy", read_npy, problems).shape == (40, 256)
    assert read_item(tmp_path, "bad.npy", read_npy, problems) is None
    assert problems == ["bad.npy: unreadable or corrupt, expected a NumPy .npy array "
                        "(EOFError: No data left in file)"]


# ---------------------------------------------------------------- list files: text, size of quotes
def _read_pairs(path):
    return list(list_fields(path, "&", "'name&number'", lambda p: p[-1].isdigit()))


@pytest.mark.parametrize("content, where, words", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "line 1, column 1", "byte 0x89 is not UTF-8"),
    (b"a&1\nb&\xe92\n", "line 2, column 3", "byte 0xe9 is not UTF-8"),
    (b"a&1\nb&2\x00\n", "line 2, column 4", "a NUL byte: a binary file"),
])
def test_a_list_file_that_is_not_text_is_named(tmp_path, content, where, words):
    (tmp_path / "train.csv").write_bytes(content)
    problems = []
    assert read_list(tmp_path, "train.csv", _read_pairs, problems) is None
    assert len(problems) == 1 and problems[0].startswith(f"train.csv {where}: {words}")
    with pytest.raises(ValueError, match=f"^train.csv {where}: "):
        read_lines(tmp_path / "train.csv")
    with pytest.raises(ValueError, match=f"^train.csv {where}: "):
        read_csv(tmp_path / "train.csv")


def test_a_huge_bad_line_is_quoted_in_part(tmp_path):
    (tmp_path / "h.txt").write_text("a&1\n" + "b" * 5_000_000 + "&x\n")
    problems = []
    assert read_list(tmp_path, "h.txt", _read_pairs, problems) is None
    assert problems[0].startswith("h.txt line 2: expected 'name&number', got 'bbbb")
    assert problems[0].endswith("... (5,000,002 characters in all)") and len(problems[0]) < 400


def test_read_csv_rows_dicts_and_csv_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa,b\r\n1,\"x,y\"\r\n\r\n".encode())
    assert read_csv(path) == [["a", "b"], ["1", "x,y"], []]
    assert read_csv(path, header=True) == [{"a": "1", "b": "x,y"}]
    path.write_text("a\tb\n1\t2\n")
    assert read_csv(path, header=True, delimiter="\t") == [{"a": "1", "b": "2"}]
    path.write_text("a,b\n" + "c" * 200_000 + ",1\n")        # over csv's field size limit
    with pytest.raises(ValueError, match=r"^t.csv line 2: not readable as CSV \(field larger"):
        read_csv(path)


# ----------------------------------------------------------------------------- pickled items
class _Hostile:
    """What a pickle made to run a command holds: os.system called while it loads."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_a_pickle_that_calls_a_function_is_refused_before_the_call(tmp_path, protocol,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([np.zeros(2), _Hostile(f"touch {marker}")], protocol))
    with pytest.raises(UnsafeFileError) as err:
        read_pickle(path, "a pickled 2-D spectrogram", dataset="AVE")
    assert not marker.exists(), "os.system ran"
    assert str(err.value) == (f"AVE file {path} refers to {os.system.__module__}.system: "
                              "refused, dataset files may hold arrays only (NumPy arrays and "
                              "scalars, lists, tuples, dicts, numbers, strings)")
    assert isinstance(err.value, ItemError) and err.value.path == path
    # any other global too, a class of another library or of pickle's own helpers
    for obj in (types.SimpleNamespace(a=1), collections.Counter("ab")):
        path.write_bytes(pickle.dumps(obj, protocol))
        with pytest.raises(UnsafeFileError, match=r"refers to (types|collections)\."):
            read_pickle(path, "an array")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickled_arrays_and_plain_data_read_back(tmp_path, protocol):
    spec = np.random.default_rng(0).standard_normal((257, 40)).astype(np.float32)
    values = [spec, spec.T, spec[::2], np.arange(5), np.array([1 + 2j]), np.array(["a", "bc"]),
              np.zeros(3, dtype=[("x", "f4"), ("y", "i2")]), np.float32(1.5), np.int64(-3),
              np.array([None, 1], dtype=object)]
    stored = {"spec": spec, "list": values, "tuple": (1, 2.5, "s", b"b", True, None, 1j),
              "set": {1, 2}, "frozen": frozenset({3}), "bytes": bytearray(b"xy"),
              "ordered": collections.OrderedDict(a=1)}
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(stored, protocol))
    back = read_pickle(path, "an array")
    assert back["spec"].dtype == np.float32 and np.array_equal(back["spec"], spec)
    for a, b in zip(back["list"], values):
        assert type(a) is type(b) and np.array_equal(a, b)
    assert {k: v for k, v in back.items() if k not in ("spec", "list")} == \
        {k: v for k, v in stored.items() if k not in ("spec", "list")}
    if protocol < 4:  # NumPy 1's names (numpy.core), as in pickles made before NumPy 2 (the
        # text of GLOBAL opcodes can be edited in place; protocol 4's counts its lengths)
        old = pickle.dumps(spec, protocol).replace(b"numpy._core", b"numpy.core")
        assert b"numpy.core.multiarray\n_reconstruct" in old
        path.write_bytes(old)
        assert np.array_equal(read_pickle(path, "an array"), spec)


def test_a_corrupt_pickle_is_an_item_error(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x04junk")
    with pytest.raises(ItemError, match="x.pkl: unreadable or corrupt, expected an array") as err:
        read_pickle(path, "an array")
    assert not isinstance(err.value, UnsafeFileError)
