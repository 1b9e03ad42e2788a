"""Algorithm 1 on learned features: rank the channels of a trained network's layer.

MFH Appendix B.4, note (2): ``X^a`` and ``X^b`` may be features of intermediate layers; the
RAVDESS experiment ranks the 128 channels of the audio teacher's fifth layer.  Here ``X^a`` is
the output of a named feature layer of the trained teacher (a map is averaged over its spatial
positions, so a channel is one column; permuting the column is permuting the channel's whole
map for a head that starts by pooling), ``X^b`` the ``'pooled'`` features of a network trained on
the other modality.  Step 1 trains two small MLPs ``f1`` on ``X^a`` and ``f2`` on ``X^b``
jointly with Eq. (28) (:func:`cmkd.mfh.train_aligned_pair`), step 2 permutes each column of
``X^a`` M times (:func:`cmkd.mfh.permutation_salience`, all samples at once).

The official RAVDESS script keeps only the last batch's permutation score and normalises a
student tag that stays zero (docs/official_code_audit.md, M4); neither is copied: every sample
of the split enters the score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cmkd.mfh.salience import permutation_salience, train_aligned_pair


@torch.no_grad()
def layer_features(model: nn.Module, loader, inputs: Sequence[str], layer: str,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (n, C), labels (n,))`` of ``model``'s feature ``layer`` over ``loader``
    (a feature map ``(n, C, ...)`` averaged over its trailing dimensions)."""
    shapes = getattr(model, "feature_shapes", None) or {}
    if layer not in shapes:
        raise ValueError(f"layer must be one of the model's features {list(shapes)}, got "
                         f"{layer!r}")
    model = model.to(device).eval()
    feats, labels = [], []
    for batch in loader:
        x = [batch[k].to(device) for k in inputs]
        f = model.features(*x)[layer]
        feats.append((f.flatten(2).mean(-1) if f.dim() > 2 else f).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(feats), torch.cat(labels)


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def _mlp(d_in: int, hidden: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def rank_features(xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor, *,
                  permutations: int | Sequence[int], epochs: int = 50, hidden: int = 64,
                  batch_size: int | None = 128, lr: float = 0.01, momentum: float = 0.9,
                  seed: int = 0) -> dict:
    """Algorithm 1 on feature matrices: the salience of every column of ``xa``.

    Parameters
    ----------
    xa : (n, C) modality a's features (the channels ranked); xb : (n, D) modality b's
    y : (n,) labels in 0..K-1
    permutations : M, or several values of M (Fig. 6): the salience for each, from nested
        draws (the first M of one seeded set of max(M) permutations), after one training
    epochs, hidden, batch_size, lr, momentum : step 1 (Eq. 28, MSE distance; SGD lr 0.01 and
        momentum 0.9 as the official scripts); the features are standardised per column first
    seed : seeds the MLPs, the batch order and the permutations

    Returns
    -------
    {'salience': {M: (C,) tensor in [0, 1] (divided by its maximum, the paper's step 9)},
    'history': (epochs, 3) tensor of Eq. (28)'s distance and the two cross entropies}
    """
    if xa.dim() != 2 or xb.dim() != 2 or not len(xa) == len(xb) == len(y):
        raise ValueError(f"xa (n, C), xb (n, D) and y (n,) must share n; got "
                         f"{tuple(xa.shape)}, {tuple(xb.shape)}, {tuple(y.shape)}")
    ms = [permutations] if isinstance(permutations, int) else [int(m) for m in permutations]
    if not ms or min(ms) < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations!r}")
    from cmkd.runtime import torch_threads

    with torch_threads(1):  # small MLPs: one thread is fastest and unaffected by other load
        return _rank(xa, xb, y, ms, epochs, hidden, batch_size, lr, momentum, seed)


def _rank(xa, xb, y, ms, epochs, hidden, batch_size, lr, momentum, seed) -> dict:
    classes = int(y.max()) + 1
    xa, xb = _standardize(xa.float()), _standardize(xb.float())
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f1, f2 = _mlp(xa.shape[1], hidden, classes), _mlp(xb.shape[1], hidden, classes)
    history = train_aligned_pair(f1, f2, xa, xb, y, epochs=epochs, lr=lr, momentum=momentum,
                                 batch_size=batch_size, generator=gen)
    f1.eval(), f2.eval()
    with torch.no_grad():
        target = f2(xb)
    perms = torch.rand((max(ms), len(xa)), generator=gen).argsort(-1)
    out = {m: permutation_salience(f1, xa, target, permutations=perms[:m]) for m in ms}
    return {"salience": out, "history": history}
