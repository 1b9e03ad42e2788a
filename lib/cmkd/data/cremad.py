"""CREMA-D in the layout of C2KD's code (derived from OGM-GE): WAV clips and 1 fps frames.

Items: audio (1, 257, 188) float32: the clip at 22050 Hz tiled to 3 s, clipped to [-1, 1],
log(|STFT| + 1e-7) with n_fft 512, hop 353 (Hann, centred); image (3, frames, 224, 224) float32,
ImageNet-normalised, RandomResizedCrop + flip when augmenting (train), Resize otherwise; label
int64 (NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5).

Departures from the official code (see the audit): frames are read in sorted order and chosen
at random (train) or evenly spaced (val / test) instead of the first entries of os.listdir; the
validation split is carved from train.csv (stratified, seeded) instead of validating on test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cmkd.data.files import (
    absent_items,
    folder_check,
    frame_reader,
    has_frames,
    is_file,
    list_fields,
    missing,
    open_root,
    read_list,
    split_rows,
    wav_spectrogram,
)

NAME, PARAM, DIRNAME = "cremad", "cremad_root", "CREMA-D"
SPLITS = ("train", "val", "test")
LABELS = {"NEU": 0, "HAP": 1, "SAD": 2, "FEA": 3, "DIS": 4, "ANG": 5}
CLASSES = 6
LAYOUT = """<cremad_root>/
  train.csv                      rows '<clip>,<LABEL>' (no header; LABEL in NEU HAP SAD FEA DIS ANG)
  test.csv
  AudioWAV/<clip>.wav
  Image-01-FPS/<clip>/00001.jpg  frames at 1 fps (sorted by name)"""


def _rows(path: Path) -> list[tuple[str, int]]:
    form = f"'<clip>,<label>' with a label in {', '.join(LABELS)}"
    return [(p[0].strip(), LABELS[p[1].strip()]) for p in list_fields(
        path, ",", form, lambda p: len(p) >= 2 and p[1].strip() in LABELS)]


@folder_check
def check(root: Path) -> list[str]:
    problems = missing(root, folders=("AudioWAV", "Image-01-FPS"))
    for name in ("train.csv", "test.csv"):
        rows = read_list(root, name, _rows, problems)
        if rows is None or problems:
            continue
        absent = [c for c, _ in rows if not is_file(root / "AudioWAV" / f"{c}.wav")]
        absent += [c for c, _ in rows if not has_frames(root / "Image-01-FPS" / c)]
        problems += absent_items(absent, f"clips of {name} lack AudioWAV/<clip>.wav or frames in "
                                         "Image-01-FPS/<clip>/")
    return problems


class CREMAD(Dataset):
    modalities = ("audio", "image")

    def __init__(self, root, split="train", val_fraction=0.1, split_seed=0, sample_rate=22050,
                 seconds=3.0, n_fft=512, hop=353, eps=1e-7, frames=1, image_size=224,
                 augment=None, random_frames=None):
        self.root = open_root(sys.modules[__name__], root, split)
        rows = _rows(self.root / ("test.csv" if split == "test" else "train.csv"))
        self.rows = split_rows(rows, split, val_fraction, split_seed, [r[1] for r in rows])
        self.sample_rate, self.length = sample_rate, int(round(seconds * sample_rate))
        self.n_fft, self.hop, self.eps = n_fft, hop, eps
        self.read_frames = frame_reader(frames, split == "train", image_size, augment,
                                        random_frames)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        clip, label = self.rows[i]
        audio = wav_spectrogram(self.root / "AudioWAV" / f"{clip}.wav", self.sample_rate,
                                self.length, self.n_fft, self.hop, self.eps)
        image = self.read_frames(self.root / "Image-01-FPS" / clip)
        return {"audio": audio, "image": image, "label": torch.tensor(label)}


def load(root, split="train", val_fraction: float = 0.1, split_seed: int = 0,
         sample_rate: int = 22050, seconds: float = 3.0, n_fft: int = 512, hop: int = 353,
         eps: float = 1e-7, frames: int = 1, image_size: int = 224, augment: bool | None = None,
         random_frames: bool | None = None) -> CREMAD:
    """CREMA-D split.  val_fraction / split_seed: the validation share of train.csv [I];
    the audio and image settings are C2KD's [V]; augment / random_frames None: train only."""
    return CREMAD(root, split, val_fraction, split_seed, sample_rate, seconds, n_fft, hop, eps,
                  frames, image_size, augment, random_frames)
