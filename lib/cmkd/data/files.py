"""Reading the real datasets' files: layout checks and errors that say what is wrong, list-file
readers, WAV / image / frame readers, spectrograms and a seeded validation split.  Shared by the
per-dataset loader modules, each of which defines NAME, PARAM, DIRNAME, SPLITS, LAYOUT and
check(root, ...) -> problems."""

from __future__ import annotations

import _compat_pickle
import builtins
import contextlib
import csv
import errno
import functools
import importlib
import io
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from cmkd.text import quote, read_utf8, shorten

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(FileNotFoundError):
    """A real dataset that is missing or malformed; the message says how to point at it."""

    def __init__(self, name: str, param: str, root, problems: Sequence[str], layout: str):
        self.name, self.param, self.root = name, param, root
        self.problems, self.layout = list(problems), layout
        super().__init__(str(self))

    def __str__(self) -> str:
        what = "; ".join(self.problems[:5])
        if len(self.problems) > 5:
            what += f"; ... ({len(self.problems) - 5} more)"
        return (f"dataset '{self.name}' is not usable at {self.root!s}: {what}. Set the "
                f"parameter '{self.param}' to the folder that holds it. Expected layout:\n"
                f"{self.layout}")


class ItemError(ValueError):
    """A file of a dataset that cannot be used: unreadable, corrupt or of the wrong shape.

    ``path`` is the file, ``reason`` what is wrong and what was expected; the message is
    '<path>: <reason>'.  A read error is
    chained as ``__cause__``.
    """

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # pickled with its fields (it travels back from a worker process)
        return type(self), (self.path, self.reason), self.__dict__


@contextlib.contextmanager
def reading(path, expected: str):
    """Turn an error raised while reading ``path`` into :class:`ItemError` naming the file and
    what it should hold (``expected``, e.g. 'a WAV file'); the original error is chained.

    A file that is absent (FileNotFoundError) is left as it is: that error names it already.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as err:
        if not Path(path).exists():     # soundfile reports an absent file as its own error
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from err
        raise ItemError(path, f"unreadable or corrupt, expected {expected} "
                              f"({type(err).__name__}: {shorten(str(err))})") from err


def read_npy(path, mmap_mode: str | None = None) -> np.ndarray:
    """A NumPy .npy array (no pickles); :class:`ItemError` naming the file if it cannot be read."""
    with reading(path, "a NumPy .npy array"):
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


class UnsafeFileError(ItemError):
    """A pickled dataset file that refers to something other than arrays and plain data (a
    function, a class of another library): refused before anything it names is called.

    ``refused`` is the global it names ('module.name'); the message is '<dataset> file <path>
    refers to <refused>: refused, dataset files may hold arrays only'."""

    def __init__(self, path, refused: str, dataset: str = "dataset"):
        self.path, self.refused = path, refused
        self.reason = (f"refers to {refused}: refused, dataset files may hold arrays only "
                       f"(NumPy arrays and scalars, lists, tuples, dicts, numbers, strings)")
        ValueError.__init__(self, f"{dataset} file {path} {self.reason}")


# What a pickle of NumPy arrays, scalars and plain containers refers to, per NumPy version:
# ndarray.__reduce__ names numpy._core.multiarray._reconstruct (numpy.core.multiarray before
# NumPy 2), numpy.ndarray and numpy.dtype; protocol 5 numpy._core.numeric._frombuffer; a NumPy
# scalar numpy._core.multiarray.scalar; protocols 0-2 keep bytes as _codecs.encode(str, 'latin1').
_PICKLE_BUILTINS = frozenset({"list", "dict", "tuple", "set", "frozenset", "int", "float",
                              "complex", "bool", "str", "bytes", "bytearray"})
_PICKLE_NUMPY_CORE = {"multiarray": frozenset({"_reconstruct", "scalar"}),
                      "numeric": frozenset({"_frombuffer"})}


def _numpy_core(submodule: str, name: str):
    """``name`` of NumPy's core ``submodule``: numpy._core (NumPy 2) or numpy.core (NumPy 1),
    whichever this NumPy has (numpy.core warns of its deprecation under NumPy 2)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this NumPy has no {submodule}.{name}")


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, refused: str):
        self.refused = refused
        super().__init__(refused)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and scalars and plain data only: every global a
    pickle refers to (the only way it can reach a callable) must be on the allow-list above."""

    def find_class(self, module: str, name: str):
        # Python 2's names mapped first, as pickle's own find_class does; then the allow-list
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "builtins" and name in _PICKLE_BUILTINS:
            return getattr(builtins, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        for package in ("numpy._core.", "numpy.core."):
            sub = module[len(package):] if module.startswith(package) else None
            if name in _PICKLE_NUMPY_CORE.get(sub, ()):
                return _numpy_core(sub, name)
        if (module, name) in (("_codecs", "encode"), ("collections", "OrderedDict")):
            return getattr(importlib.import_module(module), name)
        raise _RefusedGlobal(f"{module}.{name}")


def read_pickle(path, expected: str, dataset: str = "dataset"):
    """The object of a pickled dataset file, read by an unpickler that builds NumPy arrays,
    NumPy scalars and plain data (lists, tuples, dicts, sets, numbers, strings, bytes) only.

    A pickle can name any function to be called while it loads (``os.system``...), so a file
    that refers to anything else raises :class:`UnsafeFileError` ('<dataset> file <path> refers
    to <module.name>: refused, ...') and nothing it names is called; a file that cannot be read
    raises :class:`ItemError` naming it and what it should hold (``expected``).
    """
    with reading(path, expected), open(path, "rb") as f:
        try:
            return _ArraysOnly(f).load()
        except _RefusedGlobal as err:
            refused = err.refused
    raise UnsafeFileError(path, refused, dataset)


def check_shape(array: np.ndarray, expected: Sequence[int | None], path,
                hint: str = "") -> np.ndarray:
    """``array`` when its shape is ``expected`` (None: any size on that axis), else
    :class:`ItemError` naming ``path``, the shape found and the shape expected (then ``hint``,
    e.g. the option that sets the expected shape)."""
    shape = tuple(array.shape)
    if len(shape) != len(expected) or any(e is not None and e != n
                                          for n, e in zip(shape, expected)):
        want = "(" + ", ".join("any" if e is None else str(e) for e in expected) + \
            ("," if len(expected) == 1 else "") + ")"
        raise ItemError(path, f"array of shape {shape}, expected {want}{hint}")
    return array


def status(root, problems: list[str]) -> str:
    """'found' when nothing is wrong, 'missing' when the folder is absent, else 'malformed'."""
    if root is None or not Path(root).is_dir():
        return "missing"
    return "found" if not problems else "malformed"


def missing_root(root) -> list[str]:
    """[] when ``root`` is a directory, else the problem as one message."""
    if root is None:
        return ["no folder given"]
    return [] if Path(root).is_dir() else [f"folder {root} does not exist"]


def check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"dataset '{name}': split must be one of {tuple(splits)}, got "
                         f"{quote(split)}")


def folder_check(inspect: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Make a loader's ``check(root, ...)`` from ``inspect(root: Path, ...) -> problems``.

    A missing (or unnamed) folder is reported alone, without calling ``inspect``.
    """
    @functools.wraps(inspect)
    def check(root, *args, **kwargs) -> list[str]:
        return missing_root(root) or inspect(Path(root), *args, **kwargs)

    return check


def open_root(loader, root, split: str, *check_args, tolerate: str | None = None) -> Path:
    """``Path(root)`` once the split and the folder are usable by a loader module.

    Parameters
    ----------
    loader : the dataset's module (NAME, PARAM, SPLITS, LAYOUT, check); in the module itself,
        ``sys.modules[__name__]``.
    root, split : as given to its ``load``.
    check_args : further arguments of ``loader.check``.
    tolerate : problems containing this text are not errors.

    Raises ValueError for a split not in ``loader.SPLITS`` and :class:`DatasetError` (naming the
    dataset, its root parameter and its layout) when ``loader.check`` finds problems.
    """
    check_split(loader.NAME, split, loader.SPLITS)
    problems = loader.check(root, *check_args)
    if tolerate is not None:
        problems = [p for p in problems if tolerate not in p]
    if problems:
        raise DatasetError(loader.NAME, loader.PARAM, root, problems, loader.LAYOUT)
    return Path(root)


def missing(root: Path, folders: Sequence[str] = (), files: Sequence[str] = ()) -> list[str]:
    """'<folder>/ is missing' per absent sub-folder, then '<file> is missing' per absent file."""
    return ([f"{d}/ is missing" for d in folders if not (root / d).is_dir()]
            + [f"{f} is missing" for f in files if not (root / f).is_file()])


def absent_items(absent: Sequence[str], what: str) -> list[str]:
    """['<count> <what> (first: <first absent>)'] when anything is ``absent``, else []."""
    return [f"{len(absent)} {what} (first: {shorten(absent[0])})"] if absent else []


def is_file(path) -> bool:
    """Whether ``path`` is a file; False (not an OSError) for a name the system refuses, such as
    one longer than its limit (a list file's line that is not a name)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def read_list(root: Path, name: str, read: Callable[[Path], list], problems: list[str]):
    """``read(root / name)``, or None after adding to ``problems`` why the list cannot be read
    (absent, or ``read`` raised ValueError: a line not in the expected form, a file that is not
    UTF-8 text, a CSV that csv cannot parse)."""
    path = root / name
    if not path.is_file():
        problems.append(f"{name} is missing")
        return None
    try:
        return read(path)
    except ValueError as err:
        problems.append(str(err))
        return None


def read_item(root: Path, name: str, read: Callable[[Path], object], problems: list[str]):
    """``read(root / name)``, or None after adding '<name>: <reason>' to ``problems`` when it
    raises :class:`ItemError` (a layout check's view of an unreadable or wrong-shape file)."""
    try:
        return read(root / name)
    except ItemError as err:
        problems.append(f"{name}: {err.reason}")
        return None


def list_fields(path: Path, sep: str | None, form: str,
                valid: Callable[[list[str]], bool]) -> Iterator[list[str]]:
    """``line.split(sep)`` for each non-empty line of a list file (see :func:`read_lines`).

    Raises ValueError naming the file, the line number and the expected ``form`` at the first
    line whose fields ``valid`` rejects.
    """
    for n, line in enumerate(read_lines(path), start=1):
        fields = line.split(sep)
        if not valid(fields):
            raise ValueError(f"{path.name} line {n}: expected {form}, got {quote(line)}")
        yield fields


def split_rows(rows: list, split: str, val_fraction: float, seed: int, labels=None) -> list:
    """The rows of ``split`` when ``rows`` hold both train and val ('test': all of them).

    train / val are the two parts of :func:`validation_split`, stratified by ``labels`` (one per
    row; None: a single class).
    """
    if split == "test":
        return rows
    labels = np.zeros(len(rows), int) if labels is None else np.asarray(labels)
    train, val = validation_split(labels, val_fraction, seed)
    return [rows[k] for k in (train if split == "train" else val)]


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Seeded split of rows into (train, validation) index arrays, stratified by label.

    Each class gives round(fraction x its count) rows to validation (at least one when the class
    has two or more rows and fraction > 0).  Both outputs are sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * len(rows)))
        if fraction > 0 and len(rows) >= 2:
            k = max(k, 1)
        val.append(rng.permutation(rows)[:k])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, int)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def read_wav(path, sample_rate: int | None = None) -> np.ndarray:
    """Mono float32 samples of a WAV file (soundfile), resampled to ``sample_rate`` if given."""
    import soundfile as sf

    with reading(path, "a WAV file"):
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sample_rate).numpy()
    return audio


def tile_to(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a clip end to end until it has at least ``length`` samples, then cut to length."""
    if samples.size == 0:
        raise ValueError("cannot tile an empty audio clip")
    reps = -(-length // samples.size)
    return np.tile(samples, reps)[:length]


def log_stft(samples: np.ndarray, n_fft: int, hop: int, eps: float = 1e-7) -> torch.Tensor:
    """log(|STFT| + eps) with a Hann window, centred frames, zero padding: (n_fft//2+1, frames)."""
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft),
                      center=True, pad_mode="constant", return_complex=True)
    return torch.log(spec.abs() + eps)


def wav_spectrogram(path, sample_rate: int, length: int, n_fft: int, hop: int,
                    eps: float = 1e-7, min_length: int = 0, start: str = "first") -> torch.Tensor:
    """Log spectrogram (1, n_fft//2+1, frames) of ``length`` samples of a WAV file.

    The clip (mono, at ``sample_rate``) is tiled end to end to at least max(length, min_length)
    samples; the ``length`` samples start at its beginning ('first'), so that as much lies after
    as before ('centre') or at a random offset ('random', torch's generator); they are clipped to
    [-1, 1] and passed to :func:`log_stft`.
    """
    samples = read_wav(path, sample_rate)
    samples = tile_to(samples, max(min_length, length, samples.size))
    room = samples.size - length
    if start == "random":
        offset = int(torch.randint(0, room + 1, ()).item())
    elif start in ("first", "centre"):
        offset = 0 if start == "first" else room // 2
    else:
        raise ValueError(f"start must be 'first', 'centre' or 'random', got {start!r}")
    crop = np.clip(samples[offset: offset + length], -1, 1)
    return log_stft(crop, n_fft, hop, eps)[None]


def read_rgb(path):
    """A PIL RGB image; :class:`ItemError` naming the file if it cannot be decoded."""
    from PIL import Image

    with reading(path, "an image (JPEG / PNG)"), Image.open(path) as im:
        return im.convert("RGB")


def read_image_array(path) -> np.ndarray:
    """The pixel array of an image file as stored (a label or depth map: no mode conversion);
    :class:`ItemError` naming the file if it cannot be decoded."""
    from PIL import Image

    with reading(path, "an image (JPEG / PNG)"), Image.open(path) as im:
        return np.array(im)


def image_transform(train: bool, size, augment: bool | None = None,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_from: int | None = None):
    """PIL -> normalised (3, H, W) float tensor.

    Training with augmentation: RandomResizedCrop(size) + horizontal flip; otherwise
    Resize((size, size)) (``size`` an int, or (H, W)), or with ``crop_from`` Resize(crop_from) of
    the shorter side and CenterCrop(size); ``size`` None keeps the stored size.  ``augment`` None
    means ``train``.
    """
    from torchvision import transforms as T

    steps = []
    if augment if augment is not None else train:
        if size is None:
            raise ValueError("augmentation needs an image size")
        steps += [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    elif size is not None and crop_from is not None:
        steps += [T.Resize(crop_from), T.CenterCrop(size)]
    elif size is not None:
        steps.append(T.Resize((size, size) if np.isscalar(size) else tuple(size)))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in sorted (temporal) order."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def has_frames(folder: Path) -> bool:
    """Whether ``folder`` is a folder holding at least one frame (False for a name the system
    refuses)."""
    try:
        return folder.is_dir() and bool(frame_files(folder))
    except OSError:
        return False


def choose_frames(n_available: int, n: int, random: bool) -> list[int]:
    """Indices of ``n`` frames out of ``n_available``, in temporal order.

    random: a sorted random subset (torch's generator, so DataLoader workers differ); else evenly
    spaced frames (the middle one when n is 1).  Fewer frames than asked repeat the last one.
    """
    if n_available < 1:
        raise ValueError("a frame folder holds no frames")
    if n_available < n:
        return list(range(n_available)) + [n_available - 1] * (n - n_available)
    if random:
        return sorted(torch.randperm(n_available)[:n].tolist())
    return [int((i + 0.5) * n_available / n) for i in range(n)]


def load_frames(folder: Path, n: int, random: bool, transform) -> torch.Tensor:
    """``n`` frames of a frame folder (sorted, chosen by :func:`choose_frames`) -> (3, n, H, W)."""
    files = frame_files(folder)
    return torch.stack([transform(read_rgb(files[k]))
                        for k in choose_frames(len(files), n, random)], dim=1)


def frame_reader(n: int, train: bool, image_size: int | None, augment: bool | None = None,
                 random: bool | None = None) -> Callable[[Path], torch.Tensor]:
    """folder -> (3, n, H, W): :func:`load_frames` through :func:`image_transform`
    (``augment`` and ``random`` None mean ``train``)."""
    return functools.partial(load_frames, n=n, random=train if random is None else random,
                             transform=image_transform(train, image_size, augment))


def read_text(path: Path) -> str:
    """The text of a list file, read as UTF-8 (a BOM dropped).  A file that is not UTF-8 text (a
    binary file, a NUL byte, another encoding) raises :class:`cmkd.text.TextError`, a
    ValueError naming the file, the line and the column of the first bad byte."""
    return read_utf8(path, Path(path).name)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a text file (:func:`read_text`), tolerant of CRLF line ends."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_csv(path: Path, header: bool = False, **fmt) -> list:
    """The rows of a CSV (or TSV) list file read by :func:`read_text`: lists of fields (an empty
    line: []), or with ``header`` dicts keyed by the first row (csv.DictReader).  ``fmt``: csv's
    format options (delimiter, quoting).  ValueError naming the file and the line when it is not
    UTF-8 text or csv cannot parse it (a field over csv's size limit, for example)."""
    stream = io.StringIO(read_text(path), newline="")
    reader = csv.DictReader(stream, **fmt) if header else csv.reader(stream, **fmt)
    try:
        return list(reader)
    except csv.Error as err:
        raise ValueError(f"{Path(path).name} line {reader.line_num}: not readable as CSV "
                         f"({shorten(str(err))})") from None
