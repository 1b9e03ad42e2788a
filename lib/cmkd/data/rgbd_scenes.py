"""RGB-D scenes: a procedural stand-in for NYU Depth V2 segmentation, generated from a seed.

Each scene is a textured back wall (class 0, 'background') in front of which 2..``max_shapes``
flat shapes stand at random depths: discs (class 1), squares (2), triangles (3) and crosses (4),
each at a random position, size and rotation, with its own random colour and stripe texture
(frequency, orientation, contrast) and a slight depth tilt.  Rendering is a z-buffer: at every
pixel the nearest surface gives the colour, the depth and the class, so shapes occlude one
another.  RGB carries colour and texture (and shading that dims with depth); depth carries the
silhouettes and the layering, plus sensor noise.  Nothing is read from disk.

Items have the NYU loader's interface: rgb (3, H, W) float32 ImageNet-normalised, depth (1, H, W)
float32 in metres, label (H, W) int64 in 0..4.  Scene i of a split is a pure function of
(seed, split, i).  Its numbers are not NYU Depth V2's.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from cmkd.data.files import IMAGENET_MEAN, IMAGENET_STD
from cmkd.runtime import rng_for

SPLITS = ("train", "val", "test")
SHAPES = ("disc", "square", "triangle", "cross")
CLASS_NAMES = ("background",) + SHAPES
CLASSES = len(CLASS_NAMES)
WALL_DEPTH = (5.0, 6.0)     # metres
SHAPE_DEPTH = (1.0, 4.5)


def scene(seed: int, split: str, index: int, max_shapes: int = 5) -> dict:
    """The random description of one scene: the wall and a list of shapes (plain Python data)."""
    rng = rng_for(seed, SPLITS.index(split), index)
    n = int(rng.integers(2, max_shapes + 1))
    shapes = []
    for _ in range(n):
        shapes.append({
            "kind": int(rng.integers(len(SHAPES))),
            "center": rng.uniform(0.1, 0.9, 2),
            "size": float(rng.uniform(0.12, 0.3)),
            "angle": float(rng.uniform(0, np.pi)),
            "depth": float(rng.uniform(*SHAPE_DEPTH)),
            "tilt": rng.normal(0, 0.3, 2),
            "colour": rng.uniform(0.1, 0.9, 3),
            "stripe": {"freq": float(rng.uniform(4, 20)), "angle": float(rng.uniform(0, np.pi)),
                       "contrast": float(rng.uniform(0.05, 0.4))},
        })
    wall = {"depth": float(rng.uniform(*WALL_DEPTH)), "tilt": rng.normal(0, 0.5, 2),
            "colour": rng.uniform(0.2, 0.8, 3),
            "stripe": {"freq": float(rng.uniform(2, 8)), "angle": float(rng.uniform(0, np.pi)),
                       "contrast": float(rng.uniform(0.0, 0.2))}}
    return {"wall": wall, "shapes": shapes, "noise_seed": int(rng.integers(2**31))}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    return (x + 0.5) / size, (y + 0.5) / size


def shape_mask(shape: dict, size: int) -> np.ndarray:
    """Pixels (size, size) bool covered by a shape."""
    x, y = _grid(size)
    c, s = np.cos(shape["angle"]), np.sin(shape["angle"])
    dx, dy = x - shape["center"][0], y - shape["center"][1]
    u, v = (c * dx + s * dy) / shape["size"], (-s * dx + c * dy) / shape["size"]
    kind = SHAPES[shape["kind"]]
    if kind == "disc":
        return u ** 2 + v ** 2 <= 1
    if kind == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if kind == "triangle":   # pointing up in its own frame, inscribed in the unit circle
        return (v <= 0.5) & (v >= -1 + np.sqrt(3) * np.abs(u))
    return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))


def _surface(obj: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth (size, size) of a tilted plane and its textured colour (3, size, size)."""
    x, y = _grid(size)
    depth = obj["depth"] + obj["tilt"][0] * (x - 0.5) * 0.5 + obj["tilt"][1] * (y - 0.5) * 0.5
    st = obj["stripe"]
    phase = 2 * np.pi * st["freq"] * (np.cos(st["angle"]) * x + np.sin(st["angle"]) * y)
    texture = 1 + st["contrast"] * np.sign(np.sin(phase))
    colour = np.asarray(obj["colour"])[:, None, None] * texture[None]
    return depth, colour


def render(desc: dict, size: int = 64, depth_noise: float = 0.02) -> dict[str, np.ndarray]:
    """Z-buffer rendering: rgb (3, s, s) in [0, 1], depth (s, s) metres, label (s, s) int64."""
    depth, rgb = _surface(desc["wall"], size)
    label = np.zeros((size, size), np.int64)
    for shape in desc["shapes"]:
        d, colour = _surface(shape, size)
        nearer = shape_mask(shape, size) & (d < depth)
        depth = np.where(nearer, d, depth)
        rgb = np.where(nearer[None], colour, rgb)
        label = np.where(nearer, shape["kind"] + 1, label)
    rng = np.random.default_rng(desc["noise_seed"])
    shading = 1.15 - 0.06 * depth                        # farther surfaces look darker
    rgb = np.clip(rgb * shading[None] + rng.normal(0, 0.03, rgb.shape), 0, 1)
    noisy_depth = depth + rng.normal(0, depth_noise, depth.shape) * depth / 2
    return {"rgb": rgb.astype(np.float32), "depth": noisy_depth.astype(np.float32),
            "label": label, "clean_depth": depth.astype(np.float32)}


@functools.lru_cache(maxsize=8192)
def _item(seed: int, split: str, i: int, max_shapes: int, size: int, depth_noise: float
          ) -> dict[str, torch.Tensor]:
    """Scene ``i`` rendered as an item, once per process: every epoch, and every job of a
    worker process that trains on the same scenes (notebook 10's grid: about 1.5 CPU seconds of
    rendering per job at 32 px), reads the same tensors (callers get a new dict; nothing writes
    into the tensors)."""
    out = render(scene(seed, split, i, max_shapes), size, depth_noise)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {"rgb": (torch.from_numpy(out["rgb"]) - mean) / std,
            "depth": torch.from_numpy(out["depth"])[None],
            "label": torch.from_numpy(out["label"])}


class RGBDScenes(Dataset):
    """``size`` x ``size`` scenes; ``n`` of them in the split; items as in the module doc."""

    modalities = ("rgb", "depth")

    def __init__(self, split: str = "train", n: int | None = None, size: int = 64,
                 seed: int = 0, max_shapes: int = 5, depth_noise: float = 0.02):
        if split not in SPLITS:
            raise ValueError(f"dataset 'rgbd_scenes': split must be one of {SPLITS}, "
                             f"got {split!r}")
        if max_shapes < 2:
            raise ValueError(f"max_shapes must be at least 2, got {max_shapes}")
        self.split, self.size, self.seed = split, size, seed
        self.n = {"train": 512, "val": 128, "test": 128}[split] if n is None else n
        self.max_shapes, self.depth_noise = max_shapes, depth_noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return dict(_item(self.seed, self.split, i, self.max_shapes, self.size,
                          self.depth_noise))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The whole split stacked: rgb (n, 3, s, s), depth (n, 1, s, s), label (n, s, s)."""
        items = [self[i] for i in range(self.n)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def load(root=None, split: str = "train", n: int | None = None, size: int = 64, seed: int = 0,
         max_shapes: int = 5, depth_noise: float = 0.02, n_eval: int | None = None
         ) -> RGBDScenes:
    """Registry entry (``root`` is ignored: the scenes are generated).  n: scenes in the split
    (default 512 / 128 / 128); n_eval: scenes of the val and test splits when given (n then
    counts the training split only); size: pixels per side; depth_noise: relative sensor
    noise."""
    if n_eval is not None and split != "train":
        n = n_eval
    return RGBDScenes(split, n, size, seed, max_shapes, depth_noise)
