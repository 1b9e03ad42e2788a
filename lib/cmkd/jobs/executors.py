"""Executors: what runs a list of jobs.  The protocol is one method, ``map(fn, jobs)``, that
calls ``fn(job)`` for every job (in any order, in any process) and yields the results as they
finish.  ``fn`` and the jobs are picklable and self-contained (``functools.partial`` of
:func:`cmkd.jobs.run.run_job` and frozen :class:`cmkd.jobs.Job` objects), so a distributed
executor (Dask: ``client.map`` + ``as_completed``) plugs in without changing them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cmkd.runtime import die_with_parent

__all__ = ["Executor", "JobError", "ProcessExecutor", "SerialExecutor", "WorkerDied",
           "die_with_parent", "describe_job"]


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


def _worker_init(threads: int, parent: int | None = None
                 ) -> None:  # pragma: no cover - runs in the worker processes
    import torch

    die_with_parent(parent)
    torch.set_num_threads(threads)


def describe_job(job: Any) -> str:
    """A job in one line with its config: ``job.describe()`` and ``job.to_json()`` (compact)
    for a :class:`cmkd.jobs.Job`, its repr for anything else."""
    describe, to_json = getattr(job, "describe", None), getattr(job, "to_json", None)
    if not callable(describe):
        return repr(job)
    try:
        config = json.dumps(json.loads(to_json()), sort_keys=True, separators=(",", ":")) \
            if callable(to_json) else ""
    except (TypeError, ValueError):
        config = ""
    return f"{describe()}" + (f"; its config: {config}" if config else "")


class JobError(RuntimeError):
    """An exception raised by a job in a worker process that could not be sent back as it was
    (it does not survive pickling): its type and message, as text."""


class WorkerDied(BrokenProcessPool):
    """A worker process of :class:`ProcessExecutor` died (killed, out of memory, crashed)
    while running a job; the message names the job(s) it was running."""


def _signal_name(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _exit_code(process, timeout: float = 10.0) -> int | None:
    """The exit code of a pool worker ``process`` (None: still running, or not known).

    The pool's own management thread may reap the same process at the same moment: our
    ``waitpid`` then fails (ECHILD) and ``exitcode`` reads None until that thread has stored
    the code, so wait for the code (up to ``timeout`` s) once the process is known to be gone."""
    if process is None:
        return None
    deadline = time.monotonic() + timeout
    process.join(timeout=timeout)
    while process.exitcode is None and time.monotonic() < deadline:
        process.join(timeout=0.05)
    return process.exitcode


def _sendable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling with its message, else a :class:`JobError` with its
    type and message."""
    try:
        back = pickle.loads(pickle.dumps(err))
        if str(back) == str(err) and type(back) is type(err):
            return err
    except Exception:  # noqa: BLE001 - any failure to pickle means: send it as text
        pass
    return JobError(f"{type(err).__module__}.{type(err).__qualname__}: {err}")


def _tracked(fn: Callable[[Any], Any], folder: str, index: int, job: Any
             ) -> Any:  # pragma: no cover - runs in the worker processes
    """Run ``fn(job)`` in a pool worker, leaving ``<folder>/<pid>`` (the job's index) while it
    runs, so that the parent can name the job of a worker that dies; an exception that does
    not pickle comes back as a :class:`JobError`."""
    mark = Path(folder) / str(os.getpid())
    mark.write_text(str(index))
    try:
        return fn(job)
    except Exception as err:
        sent = _sendable(err)
        if sent is err:
            raise
        raise sent from None
    finally:
        mark.unlink(missing_ok=True)


class ProcessExecutor:
    """Runs the jobs in ``processes`` worker processes on this machine (spawned, ``threads``
    torch threads each): small models on a multi-core CPU, or several small jobs sharing one
    GPU.  Results are yielded as jobs finish; Ctrl-C cancels the jobs not yet started (a job
    in flight is lost, the finished ones are in the cache).

    Every worker, and every DataLoader worker it starts, dies with its parent
    (:func:`die_with_parent`).  An exception raised by a job comes back with its type and
    message and a note naming the job and its config (one that does not pickle as a
    :class:`JobError` with its type and message); a worker that dies (``kill -9``, out of
    memory) raises :class:`WorkerDied` naming the job it was running."""

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
        folder = tempfile.mkdtemp(prefix="cmkd-pool-")
        pool = ProcessPoolExecutor(min(self.processes, len(jobs)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(self.threads, os.getpid()))
        try:
            futures = {pool.submit(_tracked, fn, folder, i, job): i
                       for i, job in enumerate(jobs)}
            workers = dict(getattr(pool, "_processes", None) or {})
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    raise self._died(folder, workers, jobs) from err
                except Exception as err:
                    err.add_note(f"in job {describe_job(jobs[futures[future]])}")
                    raise
                yield result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _died(folder: str, workers: dict, jobs: list) -> WorkerDied:
        """The error that names the job(s) whose worker died: the marks left in ``folder`` say
        which worker (pid) ran which job; a worker not stopped by the pool's own clean-up
        (SIGTERM) is the one that died."""
        running = {}
        for mark in Path(folder).iterdir():
            try:
                running[int(mark.name)] = int(mark.read_text())
            except (OSError, ValueError):
                continue
        lines = []
        for pid, index in sorted(running.items(), key=lambda item: item[1]):
            code = _exit_code(workers.get(pid))
            if code == -signal.SIGTERM and len(running) > 1:
                continue  # stopped by the pool when the other one died
            lines.append(f"worker pid {pid} ({_signal_name(code)}) was running job "
                         f"{describe_job(jobs[index])}")
        what = ("; ".join(lines) if lines else
                "the job it was running is not known (it died before starting one)")
        return WorkerDied(f"a worker process of the pool died: {what}. The jobs finished "
                          "before are in the cache; rerunning runs the others.")
    def __repr__(self) -> str:
        return f"ProcessExecutor(processes={self.processes}, threads={self.threads})"
