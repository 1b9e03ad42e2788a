"""NYU Depth V2 (40 classes) in the SA-Gate / DFormer layout; :mod:`cmkd.data.nyudv2_cen` reads
the CEN layout with the same item interface.

Items: rgb (3, H, W) float32 ImageNet-normalised; depth (1, H, W) float32 (.npy as stored, .png
times ``depth_png_scale``); hha (3, H, W) float32 in [0, 1] when 'hha' is among ``modalities``;
label (H, W) int64 with classes 0..39 and ``ignore_index`` (255) for void.  In this layout label
PNGs hold 0 = void and 1..40, mapped to label - 1 and void -> 255.  ``size`` (H, W) resizes
(bilinear for images and depth, nearest for labels); training flips horizontally at random when
``augment``.  Splits: test = test.txt (654); train / val carved from train.txt (795; the papers
have no validation split and select on test, which this loader does not invite).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cmkd.data.files import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    absent_items,
    folder_check,
    list_fields,
    open_root,
    read_image_array,
    read_list,
    read_npy,
    read_rgb,
    split_rows,
)

NAME, PARAM, DIRNAME = "nyudv2", "nyudv2_root", "NYUDepthv2"
SPLITS = ("train", "val", "test")
CLASSES = 40
IGNORE = 255
LISTS = {"train": "train.txt", "test": "test.txt"}
LAYOUT = """<nyudv2_root>/                (SA-Gate / DFormer 'NYUDepthv2' folder)
  train.txt, test.txt          lines 'RGB/<id>.jpg<TAB>Label/<id>.png' (795 / 654)
  RGB/<id>.jpg                 640x480 colour
  Depth/<id>.npy or <id>.png   depth map
  HHA/<id>.jpg                 (optional) HHA encoding of depth
  Label/<id>.png               uint8, 0 = void, 1..40 = classes"""


def read_array(path: Path, png_scale: float = 1.0) -> np.ndarray:
    """A depth / label map: .npy as stored, image files via Pillow (PNG depth times png_scale)."""
    if path.suffix == ".npy":
        return read_npy(path)
    arr = read_image_array(path)
    return arr.astype(np.float32) * png_scale if png_scale != 1.0 else arr


def _records(path: Path) -> list[dict[str, Path]]:
    root, out = path.parent, []
    for parts in list_fields(path, None, "'RGB/<id>.jpg<TAB>Label/<id>.png'",
                             lambda p: len(p) >= 2):
        stem = Path(parts[0]).stem
        depth = [root / "Depth" / f"{stem}{ext}" for ext in (".npy", ".png")]
        out.append({"rgb": root / parts[0], "label": root / parts[1],
                    "depth": next((d for d in depth if d.is_file()), depth[0]),
                    "hha": root / "HHA" / f"{stem}.jpg"})
    return out


def check_records(root: Path, lists: dict[str, str], records_of,
                  modalities=("rgb", "depth")) -> list[str]:
    """Problems of list files (records_of(path) -> records) and the files they name (shared by
    both layouts)."""
    problems = []
    for name in lists.values():
        records = read_list(root, name, records_of, problems)
        if records is None:
            continue
        keys = ("label",) + tuple(modalities)
        absent = [str(r[k].relative_to(root)) for r in records for k in keys
                  if not r[k].is_file()]
        problems += absent_items(absent, f"files named by {name} are missing")
    return problems


@folder_check
def check(root: Path, modalities=("rgb", "depth")) -> list[str]:
    return check_records(root, LISTS, _records, modalities)


class RGBDSegmentation(Dataset):
    """Items from records {'rgb', 'depth', 'label', 'hha'} -> dict of tensors (see module doc)."""

    def __init__(self, records, label_map, modalities=("rgb", "depth"), size=None,
                 augment=False, depth_png_scale=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        unknown = set(modalities) - {"rgb", "depth", "hha"}
        if unknown:
            raise ValueError(f"modalities must be among 'rgb', 'depth', 'hha'; got {unknown}")
        self.records, self.label_map = records, label_map
        self.modalities, self.size, self.augment = tuple(modalities), size, augment
        self.depth_png_scale = depth_png_scale
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def _resize(self, x: torch.Tensor, nearest: bool) -> torch.Tensor:
        if self.size is None:
            return x
        mode = "nearest" if nearest else "bilinear"
        kw = {} if nearest else {"align_corners": False}
        return F.interpolate(x[None].float(), size=tuple(self.size), mode=mode, **kw)[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.records[i]
        out = {}
        if "rgb" in self.modalities:
            rgb = torch.from_numpy(np.array(read_rgb(rec["rgb"]))).permute(2, 0, 1) / 255.0
            out["rgb"] = (self._resize(rgb, False) - self.mean) / self.std
        if "depth" in self.modalities:
            depth = read_array(rec["depth"], self.depth_png_scale).astype(np.float32)
            out["depth"] = self._resize(torch.from_numpy(depth)[None], False)
        if "hha" in self.modalities:
            hha = torch.from_numpy(np.array(read_rgb(rec["hha"]))).permute(2, 0, 1) / 255.0
            out["hha"] = self._resize(hha, False)
        raw = np.asarray(read_array(rec["label"]))
        label = torch.from_numpy(self.label_map(raw.astype(np.int64)))
        out["label"] = self._resize(label[None], True)[0].long()
        if self.augment and torch.rand(()) < 0.5:
            out = {k: v.flip(-1) for k, v in out.items()}
        return out


def sagate_labels(raw: np.ndarray) -> np.ndarray:
    """0 = void -> 255, 1..40 -> 0..39."""
    return np.where(raw == 0, IGNORE, raw - 1)


def open_split(loader, records_of, label_map, root, split, modalities, size, augment,
               val_fraction, split_seed, depth_png_scale) -> RGBDSegmentation:
    """A split of a layout module (``loader``: NAME, PARAM, SPLITS, LAYOUT, LISTS, check) whose
    list files ``records_of(path)`` reads; the rest as in :func:`load` (shared by both layouts)."""
    root = open_root(loader, root, split, modalities)
    records = records_of(root / loader.LISTS["test" if split == "test" else "train"])
    return RGBDSegmentation(split_rows(records, split, val_fraction, split_seed), label_map,
                            modalities, size, split == "train" if augment is None else augment,
                            depth_png_scale)


def load(root, split="train", modalities: tuple[str, ...] = ("rgb", "depth"),
         size: tuple[int, int] | None = None, augment: bool | None = None,
         val_fraction: float = 0.1, split_seed: int = 0,
         depth_png_scale: float = 1 / 1000) -> RGBDSegmentation:
    """NYU Depth V2 (SA-Gate / DFormer layout).  size None keeps 480x640 [V]; val_fraction /
    split_seed: validation carved from train.txt [I]; depth_png_scale: PNG depth units to
    metres (1/1000, millimetres) [I]; augment None: random flips in train only [I]."""
    return open_split(sys.modules[__name__], _records, sagate_labels, root, split, modalities,
                      size, augment, val_fraction, split_seed, depth_png_scale)
