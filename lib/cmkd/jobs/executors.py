"""Executors: what runs a list of jobs.  The protocol is one method, ``map(fn, jobs)``, that
calls ``fn(job)`` for every job (in any order, in any process) and yields the results as they
finish.  ``fn`` and the jobs are picklable and self-contained (``functools.partial`` of
:func:`cmkd.jobs.run.run_job` and frozen :class:`cmkd.jobs.Job` objects), so a distributed
executor (Dask: ``client.map`` + ``as_completed``) plugs in without changing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        """Call ``fn(job)`` for each job; yield the results as they finish."""
        ...


class SerialExecutor:
    """Runs the jobs one after the other in this process, in the given order."""

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        for job in jobs:
            yield fn(job)

    def __repr__(self) -> str:
        return "SerialExecutor()"


def die_with_parent() -> None:  # pragma: no cover - runs in a child process
    """Linux: this process gets SIGKILL when its parent dies (even by SIGKILL), so no worker
    outlives the notebook or command that started it.  Elsewhere: nothing."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_init(threads: int) -> None:  # pragma: no cover - runs in the worker processes
    import torch

    die_with_parent()
    torch.set_num_threads(threads)


class ProcessExecutor:
    """Runs the jobs in ``processes`` worker processes on this machine (spawned, ``threads``
    torch threads each): small models on a multi-core CPU, or several small jobs sharing one
    GPU.  Results are yielded as jobs finish; Ctrl-C cancels the jobs not yet started (a job
    in flight is lost, the finished ones are in the cache)."""

    def __init__(self, processes: int = 2, threads: int = 1):
        if processes < 1 or threads < 1:
            raise ValueError(f"processes and threads must be >= 1, got {processes}, {threads}")
        self.processes, self.threads = processes, threads

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        jobs = list(jobs)
        if not jobs:
            return
        pool = ProcessPoolExecutor(min(self.processes, len(jobs)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(self.threads,))
        try:
            futures = [pool.submit(fn, job) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ProcessExecutor(processes={self.processes}, threads={self.threads})"
