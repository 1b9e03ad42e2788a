"""Benchmark of cmkd.metrics.kendall_tau against a per-sample scipy loop.

The official C2KD code computes the OFSD filter with ``scipy.stats.kendalltau`` once per sample
in a Python loop on the CPU, at every training step.  Shapes: batch 64 x 28 classes (AVE) and
64 x 309 classes (all of VGGSound's classes).  Timed with one torch thread (like the scipy loop):
on a small shared CPU, OpenMP threads of tiny operations contend and make timings erratic.  With
``device='cuda'`` ours runs on the GPU (the logits already there, as in training) against the same
scipy loop on the host's CPU, which gets the logits as NumPy arrays for free (its device-to-host
copy is not counted, in the reference's favour).
"""

from __future__ import annotations

import torch
from scipy import stats

from cmkd.bench import best_seconds, device_label
from cmkd.metrics import kendall_tau

SHAPES = ((64, 28), (64, 309))


def run(repeats: int = 5, device: str = "cpu") -> list[dict]:
    """Rows: benchmark, shape, seconds (per batch), speed-up (scipy loop over ours), device."""
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _time_shapes(rows, repeats, device)
    finally:
        torch.set_num_threads(threads)
    return rows


def _time_shapes(rows: list[dict], repeats: int, device: str) -> None:
    g = torch.Generator().manual_seed(0)
    methods = (("a", "auto"), ("b", "auto"), ("a", "pairs"), ("a", "merge"))
    for batch, classes in SHAPES:
        t, s = torch.randn(batch, classes, generator=g), torch.randn(batch, classes, generator=g)
        tn, sn = t.numpy(), s.numpy()
        t, s = t.to(device), s.to(device)

        def loop(tn=tn, sn=sn):
            return [stats.kendalltau(a, b).statistic for a, b in zip(tn, sn)]

        ref = best_seconds(loop, repeats, warmup=True)
        rows.append({"benchmark": "scipy.stats.kendalltau per sample (official code's way)",
                     "shape": f"{batch}x{classes}", "seconds": ref, "speed-up": 1.0,
                     "device": device_label("cpu")})
        for variant, method in methods:
            ours = best_seconds(lambda v=variant, m=method, t=t, s=s: kendall_tau(t, s, v, m),
                                repeats, warmup=True, device=device)
            rows.append({"benchmark": f"cmkd.metrics.kendall_tau, tau-{variant}, method {method}",
                         "shape": f"{batch}x{classes}", "seconds": ours, "speed-up": ref / ours,
                         "device": device_label(device)})
