"""Scale out: the job grids on Dask (``distributed``), on this machine or a cluster.

:class:`DaskExecutor` follows the executor protocol of :mod:`cmkd.jobs.executors`
(``map(fn, jobs)`` yields the results as jobs finish): each job is one Dask task running
``fn(job)`` (``run_job`` into the shared cache) in a worker process.  Three ways to get one:

- :meth:`DaskExecutor.local`: a ``LocalCluster`` on this machine: one worker per visible GPU,
  each pinned to its GPU by ``CUDA_VISIBLE_DEVICES`` (the pinning dask-cuda does), or, without
  GPUs, ``workers`` single-threaded CPU worker processes;
- ``DaskExecutor(address)``: a running scheduler (``dask scheduler`` + ``dask worker`` started by
  hand, or any other cluster manager);
- :meth:`DaskExecutor.from_cluster_file`: a batch-system cluster (SLURM, PBS, SGE, LSF, HTCondor,
  Moab, OAR) built by ``dask-jobqueue`` from a small YAML file (:func:`read_cluster_file`).

What must be shared: the job cache (``$CMKD_CACHE``, a path every worker sees, e.g. on a network
file system) and the code (cmkd installed in the workers' environment, the same version:
``run_jobs`` refuses rows whose job is not in the cache afterwards).  Finished jobs are stored
atomically (:func:`cmkd.jobs.cache.store`: a temporary folder renamed in one step), so a job
finished by any worker is never run again and a killed worker leaves no half-written result.

Fault tolerance.  A worker killed mid-job loses that job only: the scheduler reruns it on
another worker (at most ``distributed.scheduler.allowed-failures`` times, then the job fails with
``KilledWorker``); a job raising an exception is retried ``retries`` times.  Jobs still failing
are reported together, each with its config, after every other job finished
(:class:`JobsFailed`); those finished are in the cache, so a rerun (with any executor) does only
the failed ones.

The choice reaches every notebook through the environment (:func:`configured_executor`, read by
``run_jobs`` when it is given no executor): ``CMKD_EXECUTOR`` (serial | local | dask),
``CMKD_WORKERS``, ``CMKD_SCHEDULER``, ``CMKD_CLUSTER``; ``cmkd reproduce --executor ...`` sets
them.  The executor never changes a job's key or its result (a job is deterministic on one
machine), so it is not part of the cache keys or of a report's staleness.
"""

from __future__ import annotations

import atexit
import difflib
import inspect
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the executors ``cmkd reproduce --executor`` knows
EXECUTORS = ("serial", "local", "dask")
#: the environment variables that carry the choice into the notebooks' kernels
ENV = {"executor": "CMKD_EXECUTOR", "workers": "CMKD_WORKERS", "scheduler": "CMKD_SCHEDULER",
       "cluster": "CMKD_CLUSTER", "retries": "CMKD_RETRIES"}
#: ``kind`` of a cluster file -> the dask_jobqueue cluster class
CLUSTER_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
                 "lsf": "LSFCluster", "htcondor": "HTCondorCluster", "moab": "MoabCluster",
                 "oar": "OARCluster"}
#: keys of a cluster file that are ours (the others go to the dask_jobqueue class)
OWN_KEYS = ("kind", "jobs")


class ExecutorError(ValueError):
    """A bad executor choice (unknown name, missing scheduler or cluster file, bad YAML)."""


class JobsFailed(RuntimeError):
    """Jobs that failed on the cluster after their retries: ``failures`` is a list of
    (job description, job config without the teacher's, error text)."""

    def __init__(self, failures: list[tuple[str, dict, str]], total: int):
        self.failures, self.total = failures, total
        lines = [f"{len(failures)} of {total} jobs failed (the others are in the cache; a rerun "
                 "does only these):"]
        for what, config, error in failures:
            lines.append(f"  - {what}: {error}")
            lines.append(f"    config: {json.dumps(config, sort_keys=True)}")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return type(self), (self.failures, self.total)


def _job_config(job: Any) -> dict:
    """A job's config for an error message: the teacher by its key."""
    try:
        config = job.config()
    except AttributeError:
        return {"job": repr(job)}
    if config.get("teacher") is not None:
        config["teacher"] = getattr(job.teacher, "key", None)
    config.pop("schema", None)
    return config


def _describe(job: Any) -> str:
    describe = getattr(job, "describe", None)
    return describe() if callable(describe) else repr(job)


# ----------------------------------------------------------------------------- cluster files
def read_cluster_file(path: str | os.PathLike) -> tuple[str, int, dict]:
    """(dask_jobqueue class name, number of batch jobs, the class's keyword arguments) of a
    cluster file, checked without starting anything.

    The file is a YAML mapping: ``kind`` (slurm | pbs | sge | lsf | htcondor | moab | oar),
    ``jobs`` (how many batch jobs to submit, each running ``processes`` workers, default 1), and
    any keyword of the dask_jobqueue cluster class (``queue``, ``account``, ``cores``,
    ``processes``, ``memory``, ``walltime``, ``job_extra_directives``, ``job_script_prologue``,
    ``local_directory``, ``log_directory``, ...).  ExecutorError names what is wrong."""
    import yaml

    where = f"cluster file {os.fspath(path)}"
    p = Path(path)
    if not p.is_file():
        raise ExecutorError(f"{where} does not exist")
    try:
        spec = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ExecutorError(f"{where} is not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise ExecutorError(f"{where} must be a YAML mapping (kind: slurm, jobs: 4, queue: ...), "
                            f"got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in CLUSTER_KINDS:
        raise ExecutorError(f"{where}: kind must be one of {', '.join(CLUSTER_KINDS)}, "
                            f"got {kind!r}")
    jobs = spec.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ExecutorError(f"{where}: jobs (how many batch jobs to submit) must be an integer "
                            f">= 1, got {jobs!r}")
    options = {k: v for k, v in spec.items() if k not in OWN_KEYS}
    known = _cluster_keywords(CLUSTER_KINDS[kind])
    for key in options:
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ExecutorError(f"{where}: unknown key {key!r} for kind {kind}{hint}")
    for key in ("job_extra_directives", "job_script_prologue", "worker_extra_args"):
        if key in options and not (isinstance(options[key], list)
                                   and all(isinstance(x, str) for x in options[key])):
            raise ExecutorError(f"{where}: {key} must be a list of strings, "
                                f"got {options[key]!r}")
    return CLUSTER_KINDS[kind], jobs, options


def _cluster_keywords(class_name: str) -> set[str]:
    """Every keyword the dask_jobqueue cluster class (and its job class) takes."""
    import dask_jobqueue
    from dask_jobqueue.core import Job, JobQueueCluster

    cls = getattr(dask_jobqueue, class_name)
    names: set[str] = set()
    for fn in (JobQueueCluster.__init__, Job.__init__, cls.__init__, cls.job_cls.__init__):
        names.update(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return names - {"self", "scheduler", "job_cls", "loop", "asynchronous", "n_workers"}


# ----------------------------------------------------------------------------- local clusters
def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: that
    variable's list when it is set, else ``0 .. torch.cuda.device_count() - 1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


#: the environment variable that tells a local worker process the pid of the process that
#: started the cluster (:func:`dask_setup`)
PARENT_ENV = "CMKD_DASK_PARENT"


def local_worker_specs(workers: int | None, gpus: Sequence[str]) -> dict[int, dict]:
    """The workers of a local cluster: with GPUs, ``workers`` (default: one per GPU) workers
    dealt round-robin over them, each seeing only its GPU (``CUDA_VISIBLE_DEVICES``: several
    small jobs can share one GPU); without, ``workers`` (default 2) CPU workers.  One thread
    each (a worker runs one job at a time).  Each worker process dies with this process
    (:func:`dask_setup`, preloaded: its nanny lives here, the worker is this process's child)."""
    from distributed import Nanny

    n = workers if workers is not None else (len(gpus) or 2)
    if n < 1:
        raise ExecutorError(f"workers must be >= 1, got {n}")
    specs = {}
    for i in range(n):
        env = {PARENT_ENV: str(os.getpid())}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        options: dict[str, Any] = {"nthreads": 1, "name": i, "silence_logs": logging.ERROR,
                                   "env": env, "preload": [__name__]}
        specs[i] = {"cls": Nanny, "options": options}
    return specs


def dask_setup(worker: Any = None) -> None:  # pragma: no cover - runs in the worker processes
    """Dask's preload hook, run in each worker process of :func:`local_cluster` as it starts:
    the process gets SIGKILL when the process that started the cluster dies, even by SIGKILL
    (:func:`cmkd.runtime.die_with_parent`, as the pool workers of
    :class:`cmkd.jobs.ProcessExecutor`), so no worker outlives a killed notebook or
    ``cmkd reproduce``.  Dask's own guard (a pipe the worker watches from a Python thread) does
    not fire while the worker is stopped or its interpreter is stuck; the kernel's signal does.
    Workers started otherwise (no :data:`PARENT_ENV`) are left alone."""
    from cmkd.runtime import die_with_parent

    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        die_with_parent(int(parent))


def local_cluster(workers: int | None = None, gpus: Sequence[str] | None = None,
                  dashboard_address: str = ":8787"):
    """A Dask cluster of worker processes on this machine (a ``SpecCluster`` of the workers of
    :func:`local_worker_specs`, what ``LocalCluster`` builds but with each worker's own
    environment; GPUs default to :func:`visible_gpus`).  Its scheduler runs in this process; the
    dashboard takes ``dashboard_address`` (another port when that one is busy)."""
    from distributed import Scheduler, SpecCluster

    gpus = visible_gpus() if gpus is None else list(gpus)
    specs = local_worker_specs(workers, gpus)
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": dashboard_address,
                                               "host": "127.0.0.1"}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR,
                       name="cmkd-local")


# ----------------------------------------------------------------------------- the executor
_THREADS_SET = False


def _in_worker(fn: Callable[[Any], Any], threads: int, job: Any) -> Any:
    """Run ``fn(job)`` in a Dask worker with ``threads`` torch threads (set once per process)."""
    global _THREADS_SET
    if not _THREADS_SET:
        import torch

        torch.set_num_threads(threads)
        _THREADS_SET = True
    return fn(job)


class DaskExecutor:
    """Runs the jobs as Dask tasks (:mod:`cmkd.jobs.cluster`).

    ``target``: a scheduler address (``tcp://host:8786``), a ``distributed.Client``, or a
    cluster object (LocalCluster, a dask_jobqueue cluster, ...).  ``retries``: how often a job
    raising an exception is tried again (a killed worker's job is rerun by the scheduler, up to
    its ``allowed-failures``).  ``threads``: torch threads per worker process.  The executor
    owns (and closes, :meth:`close`) a cluster or client it built."""

    def __init__(self, target: Any, retries: int = 2, threads: int = 1, owned: bool = False,
                 quiet: bool = False):
        from distributed import Client

        if retries < 0 or threads < 1:
            raise ExecutorError(f"retries must be >= 0 and threads >= 1, got {retries}, "
                                f"{threads}")
        self.retries, self.threads = retries, threads
        self.cluster = None
        if isinstance(target, Client):
            self.client = target
        else:
            if not isinstance(target, str):
                self.cluster = target
            try:
                self.client = Client(target, set_as_default=False)
            except OSError as err:
                raise ExecutorError(f"cannot reach the Dask scheduler {target!r}: {err}") from None
        self._owned = owned
        if not quiet:
            print(f"dask: {self.describe()}; dashboard {self.dashboard}", file=sys.stderr)

    @classmethod
    def local(cls, workers: int | None = None, retries: int = 2, threads: int = 1,
              gpus: Sequence[str] | None = None, quiet: bool = False) -> DaskExecutor:
        """A LocalCluster on this machine (:func:`local_cluster`), closed with the executor."""
        return cls(local_cluster(workers, gpus), retries=retries, threads=threads, owned=True,
                   quiet=quiet)

    @classmethod
    def from_cluster_file(cls, path: str | os.PathLike, retries: int = 2,
                          quiet: bool = False) -> DaskExecutor:
        """A dask_jobqueue cluster from a YAML file (:func:`read_cluster_file`) with its
        ``jobs`` batch jobs submitted."""
        import dask_jobqueue

        name, jobs, options = read_cluster_file(path)
        cluster = getattr(dask_jobqueue, name)(**options)
        cluster.scale(jobs=jobs)
        return cls(cluster, retries=retries, owned=True, quiet=quiet)

    @property
    def dashboard(self) -> str:
        return self.client.dashboard_link

    @property
    def processes(self) -> int:
        """Workers connected now."""
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {})) \
            if "n_workers" in inspect.signature(self.client.scheduler_info).parameters \
            else len(self.client.scheduler_info().get("workers", {}))

    def describe(self) -> str:
        where = type(self.cluster).__name__ if self.cluster is not None else "scheduler"
        return f"{where} at {self.client.scheduler.address}"

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Any]:
        """Submit every job; yield the results as they finish.  Jobs failing after their
        retries are reported together at the end (:class:`JobsFailed`), after every other job
        finished.  Closing the iterator early (Ctrl-C) cancels the jobs not finished."""
        from distributed import as_completed

        jobs = list(jobs)
        if not jobs:
            return
        token = uuid.uuid4().hex[:8]
        futures = {}
        for i, job in enumerate(jobs):
            name = f"{getattr(job, 'kind', 'job')}-{getattr(job, 'method', '')}-" \
                   f"{str(getattr(job, 'key', i))[:12]}-{token}"
            future = self.client.submit(_in_worker, fn, self.threads, job, key=name,
                                        retries=self.retries, pure=False)
            futures[future.key] = (future, job)
        failures = []
        try:
            for future in as_completed([f for f, _ in futures.values()], loop=self.client.loop):
                job = futures[future.key][1]
                if future.status == "error":
                    err = future.exception()
                    text = f"{type(err).__name__}: {err}".strip()
                    failures.append((_describe(job), _job_config(job), text))
                    print(f"dask: job failed: {_describe(job)}: {text}", file=sys.stderr)
                    continue
                yield future.result()
        finally:
            pending = [f for f, _ in futures.values() if not f.done()]
            if pending:
                self.client.cancel(pending)
        if failures:
            raise JobsFailed(failures, len(jobs))

    def close(self) -> None:
        """Close the client, and the cluster when this executor built it."""
        self.client.close()
        if self._owned and self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client.scheduler.address!r}, retries={self.retries})"


# ----------------------------------------------------------------------------- the choice
@dataclass(frozen=True)
class ExecutorChoice:
    """What runs the job grids: ``kind`` (serial | local | dask), ``workers`` (local: worker
    processes; default one per GPU, else 2), ``scheduler`` (dask: a scheduler address) or
    ``cluster`` (dask: a cluster file), ``retries`` (a failing job's extra tries)."""

    kind: str = "serial"
    workers: int | None = None
    scheduler: str | None = None
    cluster: str | None = None
    retries: int = 2

    def check(self) -> ExecutorChoice:
        """Raise ExecutorError when the choice cannot work (before any compute)."""
        if self.kind not in EXECUTORS:
            raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)}, "
                                f"got {self.kind!r}")
        if self.workers is not None and (isinstance(self.workers, bool)
                                         or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ExecutorError(f"workers must be an integer >= 1, got {self.workers!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ExecutorError(f"retries must be an integer >= 0, got {self.retries!r}")
        if self.kind == "dask":
            if (self.scheduler is None) == (self.cluster is None):
                raise ExecutorError("executor dask needs exactly one of a scheduler address "
                                    "(--scheduler tcp://host:8786) or a cluster file "
                                    "(--cluster cluster.yaml)")
            if self.workers is not None:
                raise ExecutorError("workers is for executor local (a cluster file says how "
                                    "many batch jobs to submit: jobs: N)")
            if self.cluster is not None:
                read_cluster_file(self.cluster)
            elif not self.scheduler.strip():
                raise ExecutorError("the scheduler address is empty")
        elif self.scheduler is not None or self.cluster is not None:
            raise ExecutorError(f"a scheduler or cluster file is for executor dask, not "
                                f"{self.kind}")
        elif self.kind == "serial" and self.workers is not None:
            raise ExecutorError("workers is for executor local")
        if self.kind != "serial":
            try:
                import distributed  # noqa: F401
            except ImportError:
                raise ExecutorError("executor local and dask need the package 'distributed' "
                                    "(in requirements.lock: make setup)") from None
        return self

    def env(self) -> dict[str, str]:
        """The environment variables that carry this choice (read by :meth:`from_env`)."""
        out = {ENV["executor"]: self.kind, ENV["retries"]: str(self.retries)}
        for name in ("workers", "scheduler", "cluster"):
            value = getattr(self, name)
            if value is not None:
                out[ENV[name]] = str(Path(value).resolve()) if name == "cluster" else str(value)
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExecutorChoice | None:
        """The choice in the environment (None when ``CMKD_EXECUTOR`` is unset or empty)."""
        environ = os.environ if environ is None else environ
        kind = environ.get(ENV["executor"], "").strip()
        if not kind:
            return None

        def number(name: str, default: int | None) -> int | None:
            text = environ.get(ENV[name], "").strip()
            if not text:
                return default
            try:
                return int(text)
            except ValueError:
                raise ExecutorError(f"{ENV[name]} must be an integer, got {text!r}") from None

        return cls(kind=kind, workers=number("workers", None),
                   scheduler=environ.get(ENV["scheduler"]) or None,
                   cluster=environ.get(ENV["cluster"]) or None,
                   retries=number("retries", 2)).check()

    def record(self) -> dict:
        """The choice for a manifest's provenance."""
        out = {"executor": self.kind}
        out.update({k: getattr(self, k) for k in ("workers", "scheduler", "cluster")
                    if getattr(self, k) is not None})
        return out

    def build(self, quiet: bool = False):
        """The executor (SerialExecutor, or a DaskExecutor connected to its cluster)."""
        from cmkd.jobs.executors import SerialExecutor

        self.check()
        if self.kind == "serial":
            return SerialExecutor()
        if self.kind == "local":
            return DaskExecutor.local(self.workers, retries=self.retries, quiet=quiet)
        if self.cluster is not None:
            return DaskExecutor.from_cluster_file(self.cluster, retries=self.retries,
                                                  quiet=quiet)
        return DaskExecutor(self.scheduler, retries=self.retries, quiet=quiet)


_BUILT: dict[ExecutorChoice, Any] = {}


def configured_executor():
    """The executor the environment asks for (``CMKD_EXECUTOR`` ...; :class:`ExecutorChoice`),
    built once per process and reused by every later grid (a notebook's cluster starts once);
    None when none is asked for."""
    choice = ExecutorChoice.from_env()
    if choice is None:
        return None
    if choice not in _BUILT:
        _BUILT[choice] = choice.build()
    return _BUILT[choice]


@atexit.register
def _close_built() -> None:  # pragma: no cover - at interpreter exit
    for executor in _BUILT.values():
        close = getattr(executor, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
    _BUILT.clear()
