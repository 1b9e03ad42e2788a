"""Benchmark: notebook 06's smoke grid on a local Dask cluster of 2 CPU workers against the
serial executor (issue 21, Speed).

Both train the whole grid (teachers first, then the students) into a fresh cache each, from the
smoke parameters (params/smoke/06_c2kd.yaml); serial with one torch thread in this process, Dask
with two single-threaded worker processes (:meth:`cmkd.jobs.cluster.DaskExecutor.local`).
The cluster's start (worker processes importing torch and cmkd) is timed apart and not in the
grid's time: it is paid once per ``cmkd reproduce`` (the kernels share one cluster).  The rows
must be the same (key and scores; ``same rows``).  Speed-up: the serial time over Dask's; on a
machine of two cores busy with other work it says little more than that the jobs overlap.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

COLUMNS = ["key", "best_epoch", "test_at_best_val", "test_last", "teacher_test"]


def grid_jobs():
    from cmkd import params
    from cmkd.experiments import c2kd_benchmark as c2
    from cmkd.reporting import repo_root

    config = params.load_params(repo_root() / "params" / "smoke" / "06_c2kd.yaml", c2.Config)
    config.preflight()
    jobs, _ = c2.grid(config)
    return jobs


def run(workers: int = 2) -> list[dict]:
    from cmkd.jobs import SerialExecutor, run_jobs
    from cmkd.jobs.cluster import DaskExecutor
    from cmkd.jobs.run import _closure
    from cmkd.runtime import torch_threads

    jobs = grid_jobs()
    n = len(_closure(jobs))
    with tempfile.TemporaryDirectory(prefix="cmkd-bench-dask-") as tmp:
        start = time.perf_counter()
        with torch_threads(1):
            serial = run_jobs(jobs, executor=SerialExecutor(), cache=Path(tmp) / "serial",
                              progress=False)
        t_serial = time.perf_counter() - start
        start = time.perf_counter()
        with DaskExecutor.local(workers, gpus=[], quiet=True) as executor:
            t_start = time.perf_counter() - start
            start = time.perf_counter()
            local = run_jobs(jobs, executor=executor, cache=Path(tmp) / "dask", progress=False)
            t_local = time.perf_counter() - start
    same = bool(serial[COLUMNS].equals(local[COLUMNS]))
    name = "notebook 06 smoke grid"
    return [
        {"benchmark": name, "variant": "serial, 1 thread", "jobs": n, "seconds": t_serial,
         "cluster start s": 0.0, "speed-up": 1.0, "same rows": True},
        {"benchmark": name, "variant": f"Dask LocalCluster, {workers} workers x 1 thread",
         "jobs": n, "seconds": t_local, "cluster start s": t_start,
         "speed-up": t_serial / t_local, "same rows": same},
    ]
