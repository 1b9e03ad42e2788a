"""`make bench`: speed benchmarks, printed and written to reports/bench/BENCH.md.

One module per benchmark, each with ``run() -> list[dict]`` (one row per timed variant: at least
'benchmark', 'seconds' and 'speed-up'); ``BENCHMARKS`` lists them in report order.  Those in
``DEVICE_BENCHMARKS`` also take ``run(device=...)`` ('cuda' on a GPU machine:
``python -m cmkd.bench --device cuda krc c2kd``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

BENCHMARKS = {
    "mvd_sweeps": "notebook 01 (MFH Fig. 2 and Fig. 3), paper profile",
    "mfh": "MFH Algorithm 1 salience (Table 2 setting) vs a loop; notebook 02, paper profile",
    "c2kd": "one C2KD training step against one KD step (ResNet-18 teacher and student)",
    "krc": "Kendall tau of logit rows (C2KD's OFSD filter) against a per-sample scipy loop",
    "embedded_data": "embedded data: AV-digits file load, RGB-D scene generation",
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


def device_label(device: str) -> str:
    """'cpu, 1 thread' or the CUDA card's name, for the benchmark tables."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu, 1 thread"
