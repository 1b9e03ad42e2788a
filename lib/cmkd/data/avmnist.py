"""AV-MNIST in the MultiBench layout (MFH Appendix B.1 case study).

Items: image (1, 28, 28) float32, audio (1, 112, 112) float32 (a spectrogram), label int64.
Both modalities are divided by ``scale`` (255, as MultiBench does).  Splits: train = the training
rows except the last ``n_valid`` (55000 of 60000), val = those last ``n_valid`` rows, test = the
test file.  Arrays are memory-mapped, so opening the set is cheap.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cmkd.data.files import folder_check, open_root, read_item, read_npy

NAME, PARAM, DIRNAME = "avmnist", "avmnist_root", "avmnist"
SPLITS = ("train", "val", "test")
CLASSES = 10
LAYOUT = """<avmnist_root>/
  image/train_data.npy   (N, 784) image rows (28x28 MNIST with 75% of the energy removed)
  image/test_data.npy
  audio/train_data.npy   (N, 112, 112) spectrograms
  audio/test_data.npy
  train_labels.npy       (N,) integer labels 0..9
  test_labels.npy"""


def _files(root: Path, part: str) -> dict[str, Path]:
    return {"image": root / "image" / f"{part}_data.npy",
            "audio": root / "audio" / f"{part}_data.npy",
            "label": root / f"{part}_labels.npy"}


_read_mmap = functools.partial(read_npy, mmap_mode="r")


@folder_check
def check(root: Path) -> list[str]:
    """What is wrong with the folder (empty list: usable)."""
    problems = []
    for part in ("train", "test"):
        files = _files(root, part)
        absent = [str(p.relative_to(root)) for p in files.values() if not p.is_file()]
        if absent:
            problems += [f"{a} is missing" for a in absent]
            continue
        arr = {k: read_item(root, str(p.relative_to(root)), _read_mmap, problems)
               for k, p in files.items()}
        if any(a is None for a in arr.values()):
            continue
        n = arr["label"].shape[0]
        if arr["image"].shape[0] != n or arr["audio"].shape[0] != n:
            problems.append(f"{part}: image/audio/labels have different row counts "
                            f"({arr['image'].shape[0]}, {arr['audio'].shape[0]}, {n})")
        if int(np.prod(arr["image"].shape[1:])) != 784:
            problems.append(f"image/{part}_data.npy rows are {arr['image'].shape[1:]}, not 784")
        if tuple(arr["audio"].shape[1:]) not in ((112, 112), (1, 112, 112)):
            problems.append(f"audio/{part}_data.npy rows are {arr['audio'].shape[1:]}, "
                            "not 112x112")
    return problems


class AVMNIST(Dataset):
    modalities = ("image", "audio")

    def __init__(self, root, split: str = "train", n_valid: int = 5000, scale: float = 255.0):
        root = open_root(sys.modules[__name__], root, split)
        files = _files(root, "test" if split == "test" else "train")
        self.image = read_npy(files["image"], mmap_mode="r")
        self.audio = read_npy(files["audio"], mmap_mode="r")
        self.labels = np.asarray(read_npy(files["label"])).astype(np.int64)
        n = len(self.labels)
        if split != "test" and not 0 < n_valid < n:
            raise ValueError(f"dataset 'avmnist': n_valid must be in (0, {n}), got {n_valid}")
        rows = {"train": np.arange(n - n_valid), "val": np.arange(n - n_valid, n),
                "test": np.arange(n)}[split]
        self.rows, self.scale, self.split = rows, float(scale), split

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.rows[i]
        image = np.asarray(self.image[r], dtype=np.float32).reshape(1, 28, 28) / self.scale
        audio = np.asarray(self.audio[r], dtype=np.float32).reshape(1, 112, 112) / self.scale
        return {"image": torch.from_numpy(image), "audio": torch.from_numpy(audio),
                "label": torch.tensor(self.labels[r])}


def load(root, split: str = "train", n_valid: int = 5000, scale: float = 255.0) -> AVMNIST:
    """AV-MNIST split; ``n_valid`` last training rows form val (MultiBench: 5000) [V]."""
    return AVMNIST(root, split, n_valid, scale)
