"""RAVDESS as preprocessed by MFH (audio MFCC arrays and face images listed in CSV files).

Items: audio (1, H, W) float32 (the stored 2-D MFCC array of shape ``audio_shape``, 40 x 256 as
MFH's model input 1x40x256; a file of another shape raises :class:`ItemError`), normalised
(x - audio_mean) / audio_std with MFH's constants; image (3, H, W) float32, RGB / 255
normalised with ImageNet's mean and std (MFH: 3x256x512, stored size kept unless ``image_size``);
label int64 in 0..7.  Splits come from the three CSV files (MFH: 7943 / 2364 / 1001 pairs).
Unlike the official loader, audio columns are not swapped and images are read as RGB directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cmkd.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    absent_items,
    check_shape,
    folder_check,
    image_transform,
    is_file,
    missing,
    open_root,
    read_csv,
    read_item,
    read_list,
    read_npy,
    read_rgb,
)
from cmkd.text import quote

NAME, PARAM, DIRNAME = "ravdess", "ravdess_root", "ravdess"
SPLITS = ("train", "val", "test")
CSV = {"train": "spa_dl.csv", "val": "spa_val.csv", "test": "spa_test.csv"}
CLASSES = 8
AUDIO_SHAPE = (40, 256)
LAYOUT = """<ravdess_root>/            (MFH's data/ folder)
  aud_features/<name>.npy   2-D MFCC array per clip (40 x 256 in MFH)
  vid_features/<name>.jpg   face image per clip (256 x 512 in MFH)
  data_file/spa_dl.csv      train; header row, then: audio file, image file, label (0..7)
  data_file/spa_val.csv     validation
  data_file/spa_test.csv    test"""


def _rows(path: Path) -> list[tuple[str, str, int]]:
    lines = [r for r in read_csv(path) if r]
    out = []
    for n, r in enumerate(lines[1:], start=2):
        if len(r) < 3:
            raise ValueError(f"{path.name} line {n}: expected 3 columns, got {len(r)}")
        try:
            out.append((r[0].strip(), r[1].strip(), int(r[2])))
        except ValueError:
            raise ValueError(f"{path.name} line {n}: label {quote(r[2])} is not an "
                             "integer") from None
    return out


def read_audio(path: Path, audio_shape=AUDIO_SHAPE, mmap_mode: str | None = None) -> np.ndarray:
    """The stored MFCC array of ``path``; :class:`ItemError` naming the file when it cannot be
    read or its shape is not ``audio_shape`` (None: any size on that axis)."""
    expected = (None, None) if audio_shape is None else audio_shape
    return check_shape(read_npy(path, mmap_mode), expected, path,
                       " (the loader option audio_shape; None for any size on an axis)")


@folder_check
def check(root: Path, audio_shape=AUDIO_SHAPE) -> list[str]:
    """Problems of the CSV files, the files they list and the first listed audio array."""
    problems = missing(root, folders=("aud_features", "vid_features"))
    for name in CSV.values():
        rows = read_list(root, f"data_file/{name}", _rows, problems)
        if rows is None:
            continue
        bad = [r for r in rows if not 0 <= r[2] < CLASSES]
        if bad:
            problems.append(f"data_file/{name}: {len(bad)} labels outside 0..{CLASSES - 1}")
        if problems:
            continue
        absent = [r[0] for r in rows if not is_file(root / "aud_features" / r[0])]
        absent += [r[1] for r in rows if not is_file(root / "vid_features" / r[1])]
        problems += absent_items(absent, f"files listed in data_file/{name} are missing")
        if not absent and rows:
            read_item(root, f"aud_features/{rows[0][0]}",
                      lambda p: read_audio(p, audio_shape, mmap_mode="r"), problems)
    return problems


class RAVDESS(Dataset):
    modalities = ("audio", "image")

    def __init__(self, root, split="train", audio_mean=-10.59, audio_std=85.66,
                 image_size=None, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                 audio_shape=AUDIO_SHAPE):
        self.root = open_root(sys.modules[__name__], root, split, audio_shape)
        self.audio_shape = audio_shape
        self.rows = _rows(self.root / "data_file" / CSV[split])
        self.audio_mean, self.audio_std = float(audio_mean), float(audio_std)
        self.transform = image_transform(False, image_size, False, image_mean, image_std)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        audio_name, image_name, label = self.rows[i]
        audio = read_audio(self.root / "aud_features" / audio_name,
                           self.audio_shape).astype(np.float32)
        audio = (audio - self.audio_mean) / self.audio_std
        image = self.transform(read_rgb(self.root / "vid_features" / image_name))
        return {"audio": torch.from_numpy(audio)[None], "image": image,
                "label": torch.tensor(label, dtype=torch.int64)}


def load(root, split="train", audio_mean: float = -10.59, audio_std: float = 85.66,
         image_size: tuple[int, int] | None = None,
         audio_shape: tuple[int | None, int | None] = AUDIO_SHAPE) -> RAVDESS:
    """RAVDESS split.  audio_mean / audio_std: MFH's normalisation [V]; image_size (H, W) or None
    to keep the stored size [I]; audio_shape: the stored MFCC arrays' shape, MFH's 40 x 256 [V]
    (None for any size on an axis)."""
    return RAVDESS(root, split, audio_mean, audio_std, image_size, audio_shape=audio_shape)
