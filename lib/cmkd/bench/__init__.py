"""`make bench`: speed benchmarks, printed and written to reports/bench/BENCH.md.

One module per benchmark, each with ``run() -> list[dict]`` (one row per timed variant: at least
'benchmark', 'seconds' and 'speed-up'); ``BENCHMARKS`` lists them in report order.  Those in
``DEVICE_BENCHMARKS`` also take ``run(device=...)`` ('cuda' on a GPU machine:
``python -m cmkd.bench --device cuda krc c2kd``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

BENCHMARKS = {
    "mvd_sweeps": "notebook 01 (MFH Fig. 2 and Fig. 3), paper profile",
    "mfh": "MFH Algorithm 1 salience (Table 2 setting) vs a loop; notebook 02, paper profile",
    "c2kd": "one C2KD training step against one bidirectional-KD step (registry methods), "
            "and with the official code's filter",
    "krc": "Kendall tau of logit rows (C2KD's OFSD filter) against a per-sample scipy loop",
    "embedded_data": "embedded data: AV-digits and mfeat file loads, RGB-D scene generation",
    "engine": "the one training loop: a stack of runs against one run at a time (runs per "
              "hour, MLPs and CNNs, KD and C2KD), and where a notebook-06 job spends an epoch",
    "dask_grid": "notebook 06's smoke grid on a local Dask cluster of 2 CPU workers against "
                 "serial (issue 21)",
    "notebooks": "each notebook's recorded time on the default profile (wall and CPU seconds "
                 "of the run that made its report) against the issues' targets",
}
DEVICE_BENCHMARKS = ("c2kd", "krc")


def best_seconds(fn: Callable[[], object], repeats: int, warmup: bool = False,
                 device: str = "cpu") -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` (after one untimed call if ``warmup``).

    On a CUDA ``device`` the clock is read only after the device has finished the call's work.
    """
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def best_seconds_interleaved(fns: Mapping[str, Callable[[], object]], rounds: int,
                             inner: int = 1, warmup: int = 1, device: str = "cpu"
                             ) -> dict[str, float]:
    """Per call of each of ``fns``: the shortest of ``rounds`` timings, taken round-robin.

    Each round times every function once (``inner`` calls in a row, divided by ``inner``), so a
    change of load on a shared machine affects them alike and their ratios stay meaningful.
    ``warmup`` untimed calls of each come first.  On a CUDA ``device`` the clock is read only
    after the device has finished the calls' work.
    """
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            best[name] = min(best[name], (time.perf_counter() - start) / inner)
    return best


def device_label(device: str) -> str:
    """'cpu, 1 thread' or the CUDA card's name, for the benchmark tables."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu, 1 thread"
