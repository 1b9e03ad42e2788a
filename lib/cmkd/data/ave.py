"""AVE (Audio-Visual Event) in the layout of C2KD's code: pickled spectrograms and 1 fps frames.

Items: audio (1, 257, T) float32, the stored log spectrogram of the event segment (257 x 1004 in
C2KD's preprocessing), cropped or zero-padded to ``audio_frames`` columns when that is given
(never wrapped: the official code's np.resize to 1024 columns wraps rows); image
(3, frames, 224, 224) float32 as for CREMA-D; label int64 in 0..27, classes numbered by first
appearance in testSet.txt (as C2KD numbers them).  Splits: trainSet / valSet / testSet; a video
listed twice in a split is kept once.  Frames are read in sorted order.

The spectrograms are pickles, and a pickle can call any function while it loads; they are read
by :func:`cmkd.data.files.read_pickle`, which builds NumPy arrays and plain data only and refuses
a file that names anything else (:class:`cmkd.data.files.UnsafeFileError`, before it is called).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cmkd.data.files import (
    absent_items,
    check_shape,
    folder_check,
    frame_reader,
    has_frames,
    list_fields,
    missing,
    open_root,
    read_pickle,
    reading,
)

NAME, PARAM, DIRNAME = "ave", "ave_root", "AVE_Dataset"
SPLITS = ("train", "val", "test")
LISTS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
CLASSES = 28
LAYOUT = """<ave_root>/                      (the AVE_Dataset folder)
  trainSet.txt, valSet.txt, testSet.txt   lines 'Category&VideoID&Quality&Start&End'
  Audio-1004-SE/<VideoID>.pkl             pickled 2-D log spectrogram (257 x 1004)
  Image-01-FPS-SE/<VideoID>/00001.jpg     frames of the event segment at 1 fps"""


def _rows(path: Path) -> list[tuple[str, str]]:
    out, seen = [], set()
    for parts in list_fields(path, "&", "'Category&VideoID&...'",
                             lambda p: len(p) >= 2 and bool(p[0]) and bool(p[1])):
        if parts[1] not in seen:
            seen.add(parts[1])
            out.append((parts[0], parts[1]))
    return out


def _classes(root: Path) -> dict[str, int]:
    order = []
    for category, _ in _rows(root / LISTS["test"]):
        if category not in order:
            order.append(category)
    return {c: k for k, c in enumerate(order)}


@folder_check
def check(root: Path) -> list[str]:
    problems = missing(root, ("Audio-1004-SE", "Image-01-FPS-SE"), tuple(LISTS.values()))
    if problems:
        return problems
    try:
        classes = _classes(root)
        for name in LISTS.values():
            rows = _rows(root / name)
            unknown = sorted({c for c, _ in rows} - set(classes))
            if unknown:
                problems.append(f"{name}: categories absent from testSet.txt: {unknown[:3]}")
            absent = [v for _, v in rows if not (root / "Audio-1004-SE" / f"{v}.pkl").is_file()
                      or not has_frames(root / "Image-01-FPS-SE" / v)]
            problems += absent_items(absent, f"videos of {name} lack Audio-1004-SE/<id>.pkl or "
                                             "frames in Image-01-FPS-SE/<id>/")
    except ValueError as err:
        problems.append(str(err))
    return problems


def fit_width(spec: np.ndarray, width: int | None) -> np.ndarray:
    """Crop or zero-pad the time axis (last) to ``width`` columns; None keeps it."""
    if width is None or spec.shape[-1] == width:
        return spec
    if spec.shape[-1] > width:
        return spec[..., :width]
    pad = np.zeros(spec.shape[:-1] + (width - spec.shape[-1],), spec.dtype)
    return np.concatenate([spec, pad], axis=-1)


class AVE(Dataset):
    modalities = ("audio", "image")

    def __init__(self, root, split="train", audio_frames=None, frames=1, image_size=224,
                 augment=None, random_frames=None):
        self.root = open_root(sys.modules[__name__], root, split)
        classes = _classes(self.root)
        self.rows = [(v, classes[c]) for c, v in _rows(self.root / LISTS[split])]
        self.audio_frames = audio_frames
        self.read_frames = frame_reader(frames, split == "train", image_size, augment,
                                        random_frames)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        video, label = self.rows[i]
        path = self.root / "Audio-1004-SE" / f"{video}.pkl"
        stored = read_pickle(path, "a pickled 2-D spectrogram", dataset="AVE")
        with reading(path, "a pickled 2-D spectrogram"):
            spec = np.asarray(stored, dtype=np.float32)
        check_shape(spec, (None, None), path)
        audio = torch.from_numpy(np.ascontiguousarray(fit_width(spec, self.audio_frames)))[None]
        image = self.read_frames(self.root / "Image-01-FPS-SE" / video)
        return {"audio": audio, "image": image, "label": torch.tensor(label)}


def load(root, split="train", audio_frames: int | None = None, frames: int = 1,
         image_size: int = 224, augment: bool | None = None,
         random_frames: bool | None = None) -> AVE:
    """AVE split.  audio_frames: spectrogram columns (None keeps the stored 1004) [I]; frames,
    image_size: C2KD's 1 frame at 224 px [V]; augment / random_frames None: train only."""
    return AVE(root, split, audio_frames, frames, image_size, augment, random_frames)
