"""Jobs: a run as a small frozen config, a content-addressed cache of its results, executors.

- :class:`Job` (:mod:`~cmkd.jobs.job`): dataset, model, teacher job, method and hyperparameters,
  optimiser, epochs, batch size, seed, device, metric; ``job.key`` names its cached results
  (with the code, data and environment it depends on: :mod:`~cmkd.jobs.keys`).
- :func:`run_job` / :func:`run_jobs` (:mod:`~cmkd.jobs.run`): train one job, or a list (teachers
  first and once, cached keys skipped) into a tidy DataFrame of result rows.
- the cache (:mod:`~cmkd.jobs.cache`): ``$CMKD_CACHE`` or ``<repo>/.cache/jobs``, one folder
  per key written atomically; ``cmkd cache list`` / ``cmkd cache prune``.
- executors (:mod:`~cmkd.jobs.executors`): ``map(fn, jobs)``; :class:`SerialExecutor` in process,
  :class:`ProcessExecutor` over local worker processes.
"""

from cmkd.jobs.cache import cache_dir
from cmkd.jobs.executors import Executor, ProcessExecutor, SerialExecutor
from cmkd.jobs.job import KINDS, Job
from cmkd.jobs.keys import code_hash, dependencies
from cmkd.jobs.run import (
    job_outputs,
    load_model,
    read_history,
    result_row,
    run_job,
    run_jobs,
)

__all__ = ["KINDS", "Executor", "Job", "ProcessExecutor", "SerialExecutor", "cache_dir",
           "code_hash", "dependencies", "job_outputs", "load_model", "read_history", "result_row",
           "run_job", "run_jobs"]
