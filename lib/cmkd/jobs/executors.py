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
