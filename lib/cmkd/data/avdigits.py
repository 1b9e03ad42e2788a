"""AV-digits: the embedded audio-visual digits dataset (an offline stand-in for AV-MNIST).

Built once by :mod:`cmkd.data.build_avdigits` and shipped in the package
(``cmkd/data/embedded/avdigits.npz``, about 1.6 MB), so nothing here needs espeak-ng or a network.

- image: scikit-learn's real 8x8 handwritten digits, grey levels scaled to [0, 1], with a share
  ``energy_removed`` (default 0.75, MFH Appendix B.1 / AV-MNIST) of their energy removed by PCA:
  the images are centred on the training mean, projected on the fewest leading principal
  components (fit on the training split) whose explained variance reaches 1 - energy_removed, and
  reconstructed.  Tensor (1, 8, 8) float32.
- audio: log-mel spectrogram (dB) of the spoken digit word synthesised by espeak-ng with a random
  voice, variant, speed and pitch plus coloured noise at -6..12 dB SNR.  Tensor (1, 32, 32)
  float32 (mels x frames), standardised with the training split's mean and std when
  ``standardize`` is True.
- label: digit 0..9 (int64).  Pairs are formed by class only (image and clip share the label).
- splits: train 1140 / val 300 / test 300 pairs, balanced (114 / 30 / 30 per class).

Its accuracies are not AV-MNIST's: it is smaller and its images are 8x8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from cmkd.data.arrays import ArrayDataset, embedded_arrays

PATH = Path(__file__).resolve().parent / "embedded" / "avdigits.npz"
SPLITS = ("train", "val", "test")
CLASSES = 10


def raw_arrays(path: Path | str = PATH) -> dict[str, np.ndarray]:
    """The stored arrays (audio as uint8 codes with ``audio_db_range``), cached per path."""
    return embedded_arrays(path, "avdigits",
                           "`python -m cmkd.data.build_avdigits` (needs espeak-ng)")


def remove_energy(images: np.ndarray, train: np.ndarray, energy_removed: float) -> np.ndarray:
    """Remove a share of the images' energy (variance) by truncated PCA fit on ``train`` rows.

    Parameters
    ----------
    images : (n, d) float array.
    train : (n,) bool mask of the rows the PCA is fit on.
    energy_removed : share in [0, 1) of the training variance to remove; the number of kept
        components k is the smallest whose cumulative explained-variance ratio reaches
        1 - energy_removed (so at least that share is kept).

    Returns
    -------
    (n, d) float32 reconstruction mean + (x - mean) V_k V_k^T.
    """
    if not 0 <= energy_removed < 1:
        raise ValueError(f"energy_removed must be in [0, 1), got {energy_removed!r}")
    x = images.astype(np.float64)
    mean = x[train].mean(axis=0)
    # principal axes from the d x d scatter matrix (eigh: several times faster than an SVD of
    # the n x d rows for MNIST's 784 pixels, the same axes)
    centred = x[train] - mean
    var, axes = np.linalg.eigh(centred.T @ centred)
    var, axes = np.clip(var[::-1], 0, None), axes[:, ::-1]
    ratio = np.cumsum(var) / np.sum(var)
    k = int(np.searchsorted(ratio, 1 - energy_removed - 1e-12) + 1)
    v = axes[:, :k]
    return (mean + (x - mean) @ v @ v.T).astype(np.float32)


def arrays(split: str, energy_removed: float = 0.75, standardize: bool = True,
           path: Path | str = PATH) -> dict[str, torch.Tensor]:
    """Whole-split tensors: image (n, 1, 8, 8), audio (n, 1, 32, 32) float32, label (n,) int64."""
    if split not in SPLITS:
        raise ValueError(f"dataset 'avdigits': split must be one of {SPLITS}, got {split!r}")
    raw = raw_arrays(path)
    train = raw["split"] == 0
    # tiny matrices: one BLAS thread (several threads spin for seconds on a busy machine)
    with threadpool_limits(limits=1):
        images = remove_energy(raw["image"].reshape(len(train), -1) / 16.0, train,
                               energy_removed)
    low, high = raw["audio_db_range"]
    audio = low + raw["audio"].astype(np.float32) * ((high - low) / 255.0)
    if standardize:
        images = (images - images[train].mean()) / images[train].std()
        audio = (audio - audio[train].mean()) / audio[train].std()
    rows = raw["split"] == SPLITS.index(split)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(images[rows].reshape(-1, 1, 8, 8))),
        "audio": torch.from_numpy(np.ascontiguousarray(audio[rows], dtype=np.float32)),
        "label": torch.from_numpy(raw["label"][rows].astype(np.int64)),
    }


class AVDigits(ArrayDataset):
    """Map-style dataset over one split; item i is {'image', 'audio', 'label'}.

    ``tensors`` holds the whole split (batches are read from it at once,
    :class:`cmkd.data.arrays.ArrayDataset`).
    """

    modalities = ("image", "audio")

    def __init__(self, split: str = "train", energy_removed: float = 0.75,
                 standardize: bool = True, path: Path | str = PATH):
        self.split = split
        super().__init__(arrays(split, energy_removed, standardize, path))


def load(root=None, split: str = "train", energy_removed: float = 0.75,
         standardize: bool = True) -> AVDigits:
    """Registry entry: the embedded set ignores ``root`` (it ships with the package)."""
    return AVDigits(split, energy_removed, standardize)


def unimodal_accuracies(model: str = "logistic", energy_removed: float = 0.75,
                        split: str = "test", seed: int = 0, epochs: int = 60) -> dict[str, float]:
    """Accuracy on ``split`` of one small classifier per modality trained on the train split.

    Reference models for documenting how hard each modality is (not paper models):
    'centroid' is the nearest class mean (Euclidean, flattened input); 'logistic' is a
    multinomial logistic regression on the flattened input (scikit-learn lbfgs, C = 1); 'cnn'
    is the registry's ``avdigits_cnn`` (:mod:`cmkd.models.avdigits_cnn`) trained with Adam
    (lr 1e-3, weight decay 1e-4, batch 64) for ``epochs`` epochs.
    """
    train, test = arrays("train", energy_removed), arrays(split, energy_removed)
    out = {}
    for m in ("image", "audio"):
        if model == "centroid":
            x = train[m].flatten(1)
            means = torch.stack([x[train["label"] == k].mean(0) for k in range(CLASSES)])
            pred = torch.cdist(test[m].flatten(1), means).argmin(1)
            out[m] = float((pred == test["label"]).float().mean())
        elif model == "logistic":
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
            with threadpool_limits(limits=1):
                clf.fit(train[m].flatten(1).numpy(), train["label"].numpy())
            out[m] = float(clf.score(test[m].flatten(1).numpy(), test["label"].numpy()))
        elif model == "cnn":
            from cmkd.models import build

            torch.manual_seed(seed)
            net = build("avdigits_cnn", modality=m)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
            x, y = train[m], train["label"]
            gen = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                net.train()
                order = torch.randperm(len(y), generator=gen)
                for b in order.split(64):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                out[m] = float((net(test[m]).argmax(1) == test["label"]).float().mean())
        else:
            raise ValueError(f"model must be 'centroid', 'logistic' or 'cnn', got {model!r}")
    return out
