"""VGGSound, 50-class 'tiny' split, in the layout of C2KD's code (16 kHz WAV and 1 fps frames).

Items: audio (1, 129, 626) float32: the clip at 16 kHz tiled to at least 10 s, a 5 s crop (random
start in the first 5 s when training, the middle otherwise), clipped to [-1, 1],
log(|STFT| + 1e-7) with n_fft 256, hop 128; image (3, frames, 224, 224) float32 (3 frames in C2KD,
sorted, ImageNet-normalised); label int64 numbered by first appearance in train_tiny.csv.
Splits: train / val from train_tiny.csv (val carved out, stratified and seeded; C2KD validated on
a slice of train) and test from test_tiny.csv.  Clips whose audio or frames are absent are
dropped when ``skip_missing`` (as C2KD's code does; YouTube-sourced sets always miss a few).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cmkd.data.files import (
    folder_check,
    frame_reader,
    has_frames,
    is_file,
    open_root,
    read_csv,
    read_list,
    split_rows,
    wav_spectrogram,
)
from cmkd.text import quote, shorten

NAME, PARAM, DIRNAME = "vggsound", "vggsound_root", "VGGSound"
SPLITS = ("train", "val", "test")
CLASSES = 50
LAYOUT = """<vggsound_root>/
  train_tiny.csv, test_tiny.csv      rows 'ytid,start_sec,label,split' (no header)
  train-audios/train-set/<ytid>_<start 6 digits>.wav           16 kHz mono
  train-videos/train-set-img/Image-01-FPS/<ytid>_<start6>.mp4/00001.jpg   (a frame folder)
  test-audios/test-set/..., test-videos/test-set-img/Image-01-FPS/...       (same for test)"""
_MISSING = "clips without audio or frames"


def _rows(path: Path) -> list[tuple[str, str]]:
    """(clip stem '<ytid>_<start6>', label name) per row."""
    out = []
    for n, r in enumerate(read_csv(path), start=1):
        if not r:
            continue
        if len(r) < 3 or not r[1].strip().isdigit():
            raise ValueError(f"{path.name} line {n}: expected 'ytid,start_sec,label,split', "
                             f"got {quote(','.join(r))}")
        out.append((f"{r[0].strip()}_{r[1].strip().zfill(6)}", r[2].strip()))
    return out


def _paths(root: Path, part: str, stem: str) -> tuple[Path, Path]:
    return (root / f"{part}-audios" / f"{part}-set" / f"{stem}.wav",
            root / f"{part}-videos" / f"{part}-set-img" / "Image-01-FPS" / f"{stem}.mp4")


def _present(root: Path, part: str, stem: str) -> bool:
    wav, frames = _paths(root, part, stem)
    return is_file(wav) and has_frames(frames)


@folder_check
def check(root: Path) -> list[str]:
    problems = []
    for part in ("train", "test"):
        name = f"{part}_tiny.csv"
        rows = read_list(root, name, _rows, problems)
        if rows is None:
            continue
        absent = [s for s, _ in rows if not _present(root, part, s)]
        if absent:
            problems.append(f"{name}: {len(absent)} of {len(rows)} {_MISSING} (first: "
                            f"{shorten(absent[0])})")
    if not problems:
        train = {c for _, c in _rows(root / "train_tiny.csv")}
        unknown = sorted({c for _, c in _rows(root / "test_tiny.csv")} - train)
        if unknown:
            problems.append(f"test_tiny.csv has labels absent from train_tiny.csv: "
                            f"{', '.join(quote(c) for c in unknown[:3])}")
    return problems


class VGGSound(Dataset):
    modalities = ("audio", "image")

    def __init__(self, root, split="train", val_fraction=0.1, split_seed=0, skip_missing=True,
                 sample_rate=16000, min_seconds=10.0, crop_seconds=5.0, n_fft=256, hop=128,
                 eps=1e-7, frames=3, image_size=224, augment=None, random_frames=None):
        self.root = open_root(sys.modules[__name__], root, split,
                              tolerate=_MISSING if skip_missing else None)
        train_rows = _rows(self.root / "train_tiny.csv")
        classes = {}
        for _, c in train_rows:
            classes.setdefault(c, len(classes))
        self.part = "test" if split == "test" else "train"
        rows = train_rows if self.part == "train" else _rows(self.root / "test_tiny.csv")
        rows = [(s, classes[c]) for s, c in rows if c in classes
                and (not skip_missing or _present(self.root, self.part, s))]
        self.rows = split_rows(rows, split, val_fraction, split_seed, [r[1] for r in rows])
        self.classes, self.sample_rate = list(classes), sample_rate
        self.min_len, self.crop = int(min_seconds * sample_rate), int(crop_seconds * sample_rate)
        self.n_fft, self.hop, self.eps = n_fft, hop, eps
        self.start = "random" if split == "train" else "centre"
        self.read_frames = frame_reader(frames, split == "train", image_size, augment,
                                        random_frames)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        stem, label = self.rows[i]
        wav, frames = _paths(self.root, self.part, stem)
        audio = wav_spectrogram(wav, self.sample_rate, self.crop, self.n_fft, self.hop, self.eps,
                                self.min_len, self.start)
        image = self.read_frames(frames)
        return {"audio": audio, "image": image, "label": torch.tensor(label)}


def load(root, split="train", val_fraction: float = 0.1, split_seed: int = 0,
         skip_missing: bool = True, sample_rate: int = 16000, min_seconds: float = 10.0,
         crop_seconds: float = 5.0, n_fft: int = 256, hop: int = 128, eps: float = 1e-7,
         frames: int = 3, image_size: int = 224, augment: bool | None = None,
         random_frames: bool | None = None) -> VGGSound:
    """VGGSound tiny split.  val_fraction / split_seed / skip_missing [I]; audio and image
    settings are C2KD's [V] (the crop start in [0, 5 s] is drawn per item when training; the
    eval crop is centred [I])."""
    return VGGSound(root, split, val_fraction, split_seed, skip_missing, sample_rate,
                    min_seconds, crop_seconds, n_fft, hop, eps, frames, image_size, augment,
                    random_frames)
