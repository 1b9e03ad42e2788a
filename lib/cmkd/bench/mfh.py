"""Benchmark of MFH Algorithm 1 (notebook 02): vectorised permutation salience against a loop.

The Table 2 setting: x^a and x^b 50-d, 200 samples, xs1 = 10, xs2 = 10, a logistic-regression
pair trained with Eq. (28), M = 100 permutations of each of the 50 channels.  The reference is the
straightforward per-channel, per-permutation Python loop (a fresh ``torch.randperm`` each time,
as the official script draws them).  Also timed: the generic batched path (the head given as a
plain function, so no linear-layer shortcut), and notebook 02's paper profile end to end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cmkd.bench import best_seconds
from cmkd.data import mvd
from cmkd.experiments import modality_general
from cmkd.mfh import permutation_salience, train_aligned_pair
from cmkd.params import load_params
from cmkd.reporting import repo_root
from cmkd.runtime import rng_for, torch_threads


@torch.no_grad()
def salience_loop(head: Callable, features: torch.Tensor, target: torch.Tensor,
                  permutations: int | torch.Tensor = 100,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1, step 2, written as the paper's two nested loops (the reference).

    Parameters as :func:`cmkd.mfh.permutation_salience` (MSE distance, p / max p); a (C, M, n)
    or (M, n) tensor of ``permutations`` is used as given, an integer M draws a fresh
    ``torch.randperm`` for every channel and repeat.
    """
    n, channels = features.shape[:2]
    if isinstance(permutations, torch.Tensor) and permutations.dim() == 2:
        permutations = permutations.unsqueeze(0).expand(channels, -1, -1)
    repeats = permutations if isinstance(permutations, int) else permutations.shape[1]
    p = torch.zeros(channels, dtype=torch.float64)
    for c in range(channels):
        for m in range(repeats):
            perm = (torch.randperm(n, generator=generator) if isinstance(permutations, int)
                    else permutations[c, m])
            shuffled = features.clone()
            shuffled[:, c] = features[perm, c]
            p[c] += float((head(shuffled) - target).pow(2).mean()) / repeats
    return (p / p.max()).to(features.dtype)


def _setting(epochs: int = 1000):
    spec = mvd.table2_spec(10, 10)
    d = mvd.generate(spec, 200, rng_for(42), delta=np.ones(spec.d_star))
    xa, xb, y = (torch.from_numpy(a) for a in (d.xa, d.xb, d.y))
    torch.manual_seed(0)
    net_a, net_b = torch.nn.Linear(50, 2), torch.nn.Linear(50, 2)
    train_aligned_pair(net_a, net_b, xa, xb, y, epochs=epochs)
    with torch.no_grad():
        target = net_b(xb)
    return net_a, xa, target


def run(repeats: int = 5, permutations: int = 100, notebook: bool = True) -> list[dict]:
    """Rows: benchmark, seconds, milliseconds, speed-up (loop over the row), device."""
    net_a, xa, target = _setting()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # one intra-op thread for all three, as notebook 02 runs them: on a shared, oversubscribed
    # CPU, thread contention otherwise dominates these small operations and the timings
    with torch_threads(1):
        vectorised = best_seconds(lambda: permutation_salience(net_a, xa, target,
                                                        permutations=permutations,
                                                        generator=gen()), repeats)
        generic = best_seconds(lambda: permutation_salience(lambda h: net_a(h), xa, target,
                                                     permutations=permutations,
                                                     generator=gen()), repeats)
        loop = best_seconds(lambda: salience_loop(net_a, xa, target, permutations, gen()), 2)
    label = (f"Algorithm 1 salience, Table 2 setting (50 channels, M = {permutations}, n = 200, "
             "1 thread)")
    rows = [{"benchmark": f"{label}: per-channel per-permutation loop", "seconds": loop},
            {"benchmark": f"{label}: vectorised (cmkd.mfh, linear-first head)",
             "seconds": vectorised},
            {"benchmark": f"{label}: vectorised, generic head (batched copies)",
             "seconds": generic}]
    for row in rows:
        row["milliseconds"] = 1000 * row["seconds"]
        row["speed-up"] = loop / row["seconds"]
        row["device"] = "cpu"
    if notebook:
        config = load_params(repo_root() / "params/paper/02_modality_general_teacher.yaml",
                             modality_general.Config)
        df = modality_general.run(config)
        rows.append({"benchmark": "notebook 02 paper profile, one run() end to end "
                                  f"({len(df) // len(modality_general.STUDENTS)} runs x 12 models;"
                                  " the notebook calls it three times: ours, KL 'mean' and "
                                  "the official teacher draw)",
                     "seconds": df.attrs["seconds"],
                     "milliseconds": 1000 * df.attrs["seconds"], "speed-up": float("nan"),
                     "device": df.attrs["device"]})
    return rows
