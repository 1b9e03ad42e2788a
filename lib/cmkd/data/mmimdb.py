"""MM-IMDB in Arevalo et al.'s hdf5 file (also MultiBench's), MFH Appendix B.3.

Items: text (300,) float32 (mean word2vec of the plot), image (4096,) float32 VGG features, or
with ``image_key='images'`` the poster (3, 256, 160) float32 divided by 255; label float32
multi-hot over ``genres`` (default all 23 in the file's order; MFH uses ('Drama', 'Comedy')).
Splits by row ranges [V]: train [0, 15552), val [15552, 18160), test [18160, end).
``half`` keeps one half of a random 50 / 50 split of the training rows (MFH B.3: the teachers
train on one half, the student on the other), drawn with ``half_seed``.
The file is opened lazily in each worker process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cmkd.data.files import check_split, folder_check, open_root

NAME, PARAM, DIRNAME = "mmimdb", "mmimdb_root", "mmimdb"
HALVES = ("all", "first", "second")
FILE = "multimodal_imdb.hdf5"
SPLITS = ("train", "val", "test")
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
          "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
          "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir")
KEYS = {"features": 300, "vgg_features": 4096, "genres": len(GENRES)}
LAYOUT = f"""<mmimdb_root>/
  {FILE}   datasets: features (N, 300) float32 text, vgg_features (N, 4096) float32,
                          images (N, 3, 256, 160), genres (N, 23) multi-hot
                          (attrs target_names: {', '.join(GENRES[:3])}, ...), imdb_ids (N,)"""


@folder_check
def check(root: Path) -> list[str]:
    path, problems = root / FILE, []
    if not path.is_file():
        return [f"{FILE} is missing"]
    import h5py

    try:
        with h5py.File(path, "r") as f:
            n = f["genres"].shape[0] if "genres" in f else None
            for key, width in KEYS.items():
                if key not in f:
                    problems.append(f"{FILE} has no dataset '{key}'")
                elif f[key].shape[1:] != (width,) or f[key].shape[0] != n:
                    problems.append(f"{FILE}:{key} has shape {f[key].shape}, expected "
                                    f"({n}, {width})")
    except OSError as err:
        problems.append(f"{FILE} cannot be read as hdf5: {err}")
    return problems


def genre_names(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        names = f["genres"].attrs.get("target_names")
    if names is None:
        return list(GENRES)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


class MMIMDB(Dataset):
    modalities = ("text", "image")

    def __init__(self, root, split="train", genres=None, image_key="vgg_features",
                 boundaries=(15552, 18160), half="all", half_seed=0):
        check_split(NAME, split, SPLITS)
        if image_key not in ("vgg_features", "images"):
            raise ValueError(f"image_key must be 'vgg_features' or 'images', got {image_key!r}")
        self.path = open_root(sys.modules[__name__], root, split) / FILE
        names = genre_names(self.path)
        chosen = names if genres is None else list(genres)
        unknown = [g for g in chosen if g not in names]
        if unknown:
            raise ValueError(f"dataset 'mmimdb': unknown genres {unknown}; the file has {names}")
        self.genres, self.columns = chosen, [names.index(g) for g in chosen]
        import h5py

        with h5py.File(self.path, "r") as f:
            n = f["genres"].shape[0]
        a, b = boundaries
        start, stop = {"train": (0, a), "val": (a, b), "test": (b, n)}[split]
        self.rows = np.arange(start, min(stop, n))
        if half not in HALVES:
            raise ValueError(f"dataset 'mmimdb': half must be one of {HALVES}, got {half!r}")
        if split == "train" and half != "all":
            order = np.random.default_rng(half_seed).permutation(len(self.rows))
            cut = len(order) // 2
            self.rows = np.sort(self.rows[order[:cut] if half == "first" else order[cut:]])
        self.image_key, self._file = image_key, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        r = int(self.rows[i])
        f = self._file
        image = np.asarray(f[self.image_key][r], dtype=np.float32)
        if self.image_key == "images":
            image = image / 255.0
        label = np.asarray(f["genres"][r])[self.columns].astype(np.float32)
        return {"text": torch.from_numpy(np.asarray(f["features"][r], dtype=np.float32)),
                "image": torch.from_numpy(image), "label": torch.from_numpy(label)}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state


def load(root, split="train", genres: tuple[str, ...] | None = None,
         image_key: str = "vgg_features",
         boundaries: tuple[int, int] = (15552, 18160), half: str = "all",
         half_seed: int = 0) -> MMIMDB:
    """MM-IMDB split.  genres: label columns (None = all 23) [V]; image_key [V];
    boundaries: first val row and first test row [V]; half: of the training split, 'all' rows
    or the 'first' / 'second' half of a random 50 / 50 split drawn with half_seed (MFH B.3)."""
    return MMIMDB(root, split, genres, image_key, boundaries, half, half_seed)
