"""Build the embedded audio-visual digits file (``python -m cmkd.data.build_avdigits``).

What it makes (see :mod:`cmkd.data.avdigits` for the loader):

- images: scikit-learn's real handwritten digits (``sklearn.datasets.load_digits``, 8x8, grey
  levels 0..16), stored raw as uint8; the PCA energy removal of MFH Appendix B.1 is applied at
  load time (fit on the training split only), so its strength stays a parameter.
- audio: one clip per image, the spoken digit word ("zero".."nine") synthesised by espeak-ng with
  a voice, a voice variant, a speed and a pitch drawn per clip, resampled to 8 kHz, placed at a
  random offset in a 1.024 s window, mixed with coloured noise at a random signal-to-noise ratio,
  and turned into a log-mel spectrogram (32 mels x 32 frames, dB) stored quantised to uint8.
- pairs are formed by class: image i and clip i share a label and nothing else (as AV-MNIST pairs
  an MNIST image with a random spoken digit of its class).
- splits: per class, the digit images are shuffled with a seeded generator and the first
  ``N_TRAIN``/``N_VAL``/``N_TEST`` go to train/validation/test (balanced classes; the few images
  beyond 174 per class are left out).

Determinism: every clip's settings come from ``rng_for(seed, 2, i)`` so clip i can be rebuilt on
its own; espeak-ng's output is bit-identical for identical settings and version (checked for
1.51), but other espeak-ng versions may pronounce or time the words slightly differently, so a
rebuild elsewhere matches the committed file in shape and statistics, not necessarily bit for bit.
The espeak-ng version is stored in the file.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from cmkd.runtime import rng_for

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: espeak-ng English voices (accents) and voice variants drawn per clip.
LANGUAGES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
             "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "klatt4", "croak", "whisper", "whisperf", "Alex", "Annie",
            "edward", "grandma", "grandpa", "linda", "steph", "quincy", "belinda", "iven",
            "Storm")
SPEED_WPM = (100, 240)      # espeak-ng -s, words per minute (uniform integer)
PITCH = (5, 95)             # espeak-ng -p, 0..99 (uniform integer)
SNR_DB = (-6.0, 12.0)       # signal-to-noise ratio of the mixed noise (uniform), see module doc
NOISE_SLOPE = (0.0, 2.0)    # noise power spectrum ~ 1/f^slope: 0 white, 1 pink, 2 brown
SAMPLE_RATE = 8000
N_SAMPLES = 8192            # 1.024 s window
N_FFT, HOP, N_MELS = 256, 256, 32   # -> 32 frames with center=False
F_MIN, F_MAX = 60.0, 4000.0
N_TRAIN, N_VAL, N_TEST = 114, 30, 30   # per class
SPLITS = ("train", "val", "test")
DEFAULT_SEED = 0
OUTPUT = Path(__file__).resolve().parent / "embedded" / "avdigits.npz"


def espeak_version() -> str:
    """The installed espeak-ng version line, or raise FileNotFoundError naming the package."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (Debian/Ubuntu: apt-get install "
                                "espeak-ng); it is only needed to rebuild the embedded file")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def clip_settings(seed: int, index: int, label: int) -> dict:
    """The synthesis settings of clip ``index`` (a pure function of seed, index and label)."""
    rng = rng_for(seed, 2, index)
    return {
        "word": WORDS[label],
        "language": LANGUAGES[rng.integers(len(LANGUAGES))],
        "variant": VARIANTS[rng.integers(len(VARIANTS))],
        "speed": int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
        "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
        "offset": float(rng.uniform()),          # where the word sits in the window (0..1)
        "snr_db": float(rng.uniform(*SNR_DB)),
        "noise_slope": float(rng.uniform(*NOISE_SLOPE)),
        "noise_seed": int(rng.integers(2**31)),
    }


def synthesise(settings: dict) -> np.ndarray:
    """espeak-ng waveform of one word at ``SAMPLE_RATE``, float32 (samples,), silence trimmed."""
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    voice = f"{settings['language']}+{settings['variant']}"
    cmd = ["espeak-ng", "-v", voice, "-s", str(settings["speed"]), "-p", str(settings["pitch"]),
           "--stdout", settings["word"]]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = AF.resample(torch.from_numpy(audio), rate, SAMPLE_RATE).numpy()
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[loud[0]: loud[-1] + 1] if loud.size else audio


def coloured_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of length n whose power spectrum falls as 1/f^slope, unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    noise = np.fft.irfft(spectrum / f ** (slope / 2), n)
    return (noise / noise.std()).astype(np.float32)


def noisy_window(wave: np.ndarray, settings: dict, n_samples: int) -> np.ndarray:
    """Place ``wave`` (at most ``n_samples`` long) in a silent window at the clip's offset and
    add coloured noise at the clip's SNR (relative to the wave's mean power); peak-normalised
    (n_samples,) float32.  ``settings``: offset, snr_db, noise_slope, noise_seed (the clip's
    ``clip_settings``); shared by the avdigits and avmnist_mini builders."""
    window = np.zeros(n_samples, np.float32)
    start = int(round(settings["offset"] * (n_samples - wave.size)))
    window[start: start + wave.size] = wave
    power = float(np.mean(wave ** 2))
    noise = coloured_noise(n_samples, settings["noise_slope"],
                           np.random.default_rng(settings["noise_seed"]))
    window += noise * np.sqrt(power / 10 ** (settings["snr_db"] / 10))
    return window / np.abs(window).max()


def mix(word: np.ndarray, settings: dict) -> np.ndarray:
    """The word (its first N_SAMPLES) in a noisy window: :func:`noisy_window`."""
    return noisy_window(word[:N_SAMPLES], settings, N_SAMPLES)


def mel_db(waves: np.ndarray, *, sample_rate: int, n_fft: int, hop: int, n_mels: int,
           f_min: float, f_max: float) -> np.ndarray:
    """Log-mel spectrograms in dB (torchaudio, center=False, power 2) of (n, samples) waves ->
    (n, n_mels, frames) float32; shared by the avdigits and avmnist_mini builders."""
    import torch
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                           f_min=f_min, f_max=f_max, center=False, power=2.0)
    with torch.no_grad():
        spec = mel(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)))
    return (10 * torch.log10(spec + 1e-10)).numpy()


def log_mel(waves: np.ndarray) -> np.ndarray:
    """avdigits' log-mel spectrograms of (n, N_SAMPLES) waves -> (n, N_MELS, frames)."""
    return mel_db(waves, sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop=HOP, n_mels=N_MELS,
                  f_min=F_MIN, f_max=F_MAX)


def select_images(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Balanced seeded split of sklearn's digits: (images uint8 (n,8,8), labels, split, index)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target.astype(np.int64)
    per_class = N_TRAIN + N_VAL + N_TEST
    chosen, split = [], []
    for s, (lo, hi) in enumerate(((0, N_TRAIN), (N_TRAIN, N_TRAIN + N_VAL),
                                  (N_TRAIN + N_VAL, per_class))):
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            order = rng_for(seed, 1, c).permutation(idx)[:per_class]
            chosen.append(order[lo:hi])
            split.append(np.full(hi - lo, s))
    index = np.concatenate(chosen)
    return images[index], labels[index], np.concatenate(split).astype(np.uint8), index


def build(seed: int = DEFAULT_SEED, limit: int | None = None, progress: bool = False) -> dict:
    """All arrays of the embedded file (or of its first ``limit`` pairs), unquantised audio.

    Returns
    -------
    dict with image (n, 8, 8) uint8, label (n,) uint8, split (n,) uint8 (0 train, 1 val,
    2 test), digits_index (n,) int16, audio_db (n, 1, N_MELS, 32) float32 and the per-clip
    settings as arrays (language, variant, speed, pitch, snr_db, noise_slope).
    """
    version = espeak_version()
    images, labels, split, index = select_images(seed)
    n = len(labels) if limit is None else min(limit, len(labels))
    waves, settings = np.zeros((n, N_SAMPLES), np.float32), []
    t0 = time.time()
    for i in range(n):
        s = clip_settings(seed, i, int(labels[i]))
        waves[i] = mix(synthesise(s), s)
        settings.append(s)
        if progress and (i + 1) % 200 == 0:
            print(f"  {i + 1}/{n} clips, {time.time() - t0:.0f} s", flush=True)
    return {
        "image": images[:n], "label": labels[:n].astype(np.uint8), "split": split[:n],
        "digits_index": index[:n].astype(np.int16),
        "audio_db": log_mel(waves)[:, None],
        "language": np.array([s["language"] for s in settings]),
        "variant": np.array([s["variant"] for s in settings]),
        "speed": np.array([s["speed"] for s in settings], np.int16),
        "pitch": np.array([s["pitch"] for s in settings], np.int16),
        "snr_db": np.array([s["snr_db"] for s in settings], np.float32),
        "noise_slope": np.array([s["noise_slope"] for s in settings], np.float32),
        "seed": np.int64(seed), "espeak_version": np.array(version),
    }


def quantise(audio_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dB spectrograms -> uint8 codes and the [low, high] dB range they span (0.5 dB-ish steps)."""
    low, high = np.floor(audio_db.min()), np.ceil(audio_db.max())
    codes = np.round((audio_db - low) / (high - low) * 255).astype(np.uint8)
    return codes, np.array([low, high], np.float32)


def write(arrays: dict, path: Path = OUTPUT) -> Path:
    """Save the arrays (audio quantised) with np.savez_compressed."""
    arrays = dict(arrays)
    arrays["audio"], arrays["audio_db_range"] = quantise(arrays.pop("audio_db"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--limit", type=int, default=None, help="build only the first N pairs")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    t0 = time.time()
    path = write(build(args.seed, args.limit, progress=True), args.output)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
