"""Running jobs: :func:`run_job` trains one job into the cache, :func:`run_jobs` a list of them.

:func:`run_job` is self-contained (its arguments say everything; no module state), so any
executor can call it in any process: it loads the three splits, builds the model (seeded by the
job), loads the teacher's checkpoint from the cache (training the teacher job first when it is
missing), builds the method, calls :func:`cmkd.engine.fit` and stores the row, the history and
the checkpoint atomically (:func:`cmkd.jobs.cache.store`).

Checkpoints.  A student job stores its final student state (``which: 'final'``); a teacher job
stores its best-validation model (``which: 'best'``), the one its reported accuracy
(``test_at_best_val``) belongs to and the one every student of that teacher distils from.

Methods of the user's modules (:mod:`cmkd.methods`, registered outside cmkd) reach the worker
processes by name: :func:`run_jobs` gives every call the modules that define the jobs' methods
(``imports``), which :func:`run_job` imports before it builds anything.

Progress and logging, neither of which changes a job's key or results: with the environment
variable :data:`PROGRESS_ENV` set (``cmkd reproduce`` sets it), :func:`run_jobs` keeps the job
counts (done, running, failed, cached) and an estimate of the time left in that JSON file,
rewritten atomically after each event; with ``tensorboard``, each job trained writes TensorBoard
event files (its history, one scalar per column and epoch) to ``<tensorboard>/<job key>/``.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from cmkd.jobs import cache as jc
from cmkd.jobs import keys
from cmkd.jobs.executors import Executor, SerialExecutor
from cmkd.jobs.job import Job

SPLITS = ("train", "val", "test")
#: Torch threads of a job trained on a CPU, on every machine (:func:`run_job` says why).
CPU_THREADS = 1
#: The environment variable naming the JSON file :func:`run_jobs` keeps its job counts in.
PROGRESS_ENV = "CMKD_PROGRESS"
#: The environment variable that switches TensorBoard logging on for every :func:`run_jobs`
#: call of the process (``cmkd reproduce --tensorboard``, a params file's ``tensorboard``).
TENSORBOARD_ENV = "CMKD_TENSORBOARD"

#: ``cmkd reproduce --refresh-jobs`` sets it to its start time (a Unix time): the jobs stored
#: in the cache before it are run again (once: a job stored since is served), by every
#: :func:`run_jobs` of the notebooks it runs.  '1' (or 'yes', 'true'): since each run_jobs call.
REFRESH_ENV = "CMKD_REFRESH_JOBS"


def refresh_since(refresh: bool | float | None = None) -> float | None:
    """The time before which cached jobs are run again: ``refresh`` True -> now, a number ->
    that time, False -> never (None), None -> from ``$CMKD_REFRESH_JOBS`` (unset or empty:
    never).  ValueError for an environment value that is neither a time nor a yes."""
    if refresh is None:
        value = os.environ.get(REFRESH_ENV, "").strip()
        if not value or value.lower() in ("0", "no", "false"):
            return None
        if value.lower() in ("1", "yes", "true"):
            return time.time()
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"${REFRESH_ENV}={value!r}: expected a Unix time (jobs cached "
                             "before it run again) or 1 / yes / true (now)") from None
    if isinstance(refresh, bool):
        return time.time() if refresh else None
    return float(refresh)


def _stale(cache: Path, key: str, since: float | None) -> bool:
    """Whether cached job ``key`` was stored before ``since`` (so a refresh runs it again)."""
    if since is None:
        return False
    stamp = jc.finished_at(cache, key)
    return stamp is not None and stamp < since


def result_row(job: Job, fit_result, teacher_row: dict | None, seconds: float,
               device: str, run: int | None = None) -> dict:
    """The flat result row of a finished job (of run ``run`` of a stack: ``fit_result`` is then
    that run's view, :meth:`cmkd.engine.FitResult.run`).

    Identifying fields: key, kind, dataset, data_root, model, inputs ('+'-joined), method,
    seed, epochs, batch_size, metric, workers, device_preference, teacher_key,
    teacher_model, teacher_inputs, and the options flattened as ``data_<name>`` (the run's own
    for a stack), ``model_<name>``, ``hp_<name>``, ``optim_<name>``; for a stack also ``run``
    (its index) and ``run_seed``.  Scores (of ``job.metric``): best_epoch, best_val,
    test_at_best_val (the default reported score), val_last, test_last, teacher_test (the
    teacher job's test_at_best_val, of the same run for a stack; NaN without a teacher),
    teacher_end_test (the teacher's test score after training, for methods that train it; None
    otherwise), epochs_run (fewer than ``epochs`` where ``patience`` stopped it), since_best
    (epochs from best_epoch to the last one trained: 0 means still improving at the end),
    test_correct (a string of '0' / '1', one per test item in the split's order: the top-1
    correctness at best_epoch, for paired comparisons; None for other tasks).  Then seconds
    (training wall time, of the whole stack), device (the one used)
    and source (:func:`cmkd.jobs.keys.code_hash`: the code the job ran).
    """
    t = job.teacher
    row = {"key": job.key, "kind": job.kind, "dataset": job.dataset, "data_root": job.data_root,
           "model": job.model, "inputs": "+".join(job.inputs), "method": job.method,
           "seed": job.seed, "epochs": job.epochs, "batch_size": job.batch_size,
           "metric": job.metric, "workers": job.workers, "device_preference": job.device,
           "teacher_key": None if t is None else t.key,
           "teacher_model": None if t is None else t.model,
           "teacher_inputs": None if t is None else "+".join(t.inputs)}
    if run is not None:
        row.update({"run": run, "run_seed": job.runs[run]["seed"]})
    config = job.config()
    config["dataset_options"] = job.run_dataset_options(run)
    for prefix, name in (("data", "dataset_options"), ("model", "model_options"),
                         ("hp", "hparams"), ("optim", "optim")):
        for k, v in config[name].items():
            row[f"{prefix}_{k}"] = v
    m = job.metric
    nan = float("nan")
    row.update({"best_epoch": int(fit_result.best_epoch),
                "best_val": fit_result.best_val.get(m, nan),
                "test_at_best_val": fit_result.test_at_best_val.get(m, nan),
                "val_last": fit_result.val_last.get(m, nan),
                "test_last": fit_result.test_last.get(m, nan),
                "teacher_test": nan if teacher_row is None else teacher_row["test_at_best_val"],
                "teacher_end_test": fit_result.teacher_test_last.get(m),
                "epochs_run": fit_result.epochs_run, "since_best": fit_result.since_best,
                "test_correct": (None if fit_result.test_correct is None else
                                 "".join(map(str, fit_result.test_correct.tolist()))),
                "seconds": round(seconds, 3), "device": device,
                "source": keys.code_hash(job)})
    return row


def load_model(job: Job, cache: str | Path | None = None):
    """``job``'s trained model from its cached checkpoint (a teacher job's best-validation
    model, a student job's final one), in eval mode on the CPU; FileNotFoundError when the job
    is not in the cache.  Building it does not touch torch's global random state."""
    cache = jc.cache_dir(cache)
    state = torch.load(jc.checkpoint_file(cache, job.key), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):
        model = job.build_model()
    model.load_state_dict(state["model"])
    return model.eval()


def job_outputs(job: Job, split: str = "test", features: Sequence[str] = (),
                cache: str | Path | None = None, batch_size: int = 256,
                items: int | None = None) -> dict[str, torch.Tensor]:
    """``job``'s trained model (:func:`load_model`) run over ``split`` of its data (its first
    ``items`` only, when given), as :func:`cmkd.engine.collect_outputs` gives it: 'logits',
    'label' and the named ``features``, on the CPU, in the split's order."""
    from torch.utils.data import Subset

    from cmkd.engine import collect_outputs, make_loader

    model = load_model(job, cache)
    ds = _split(job, split)
    if items is not None and items < len(ds):
        ds = Subset(ds, range(items))
    return collect_outputs(model, make_loader(ds, batch_size), job.inputs, tuple(features))


def read_history(job: Job, cache: str | Path | None = None) -> pd.DataFrame:
    """``job``'s per-epoch history from the cache (:attr:`cmkd.engine.FitResult.history`; a
    ``run`` column for a stack); FileNotFoundError when the job is not in the cache."""
    cache = jc.cache_dir(cache)
    if not jc.has(cache, job.key):
        raise FileNotFoundError(f"job {job.describe()} has no finished result in the cache "
                                f"{cache}")
    return pd.read_csv(jc.folder(cache, job.key) / jc.HISTORY)


def _teacher(job: Job, cache: Path, progress: bool, since: float | None):
    """(teacher model with its cached best-validation weights, teacher rows), or (None, None)."""
    if job.teacher is None:
        return None, None
    run_job(job.teacher, cache, progress=progress, refresh_since=since)
    return load_model(job.teacher, cache), jc.read_rows(cache, job.teacher.key)


def _split(job: Job, split: str):
    """The dataset of one split: a stack's runs' data stacked (:class:`StackedDataset`)."""
    from cmkd import data
    from cmkd.data.arrays import StackedDataset

    if not job.stacked:
        return data.load(job.dataset, job.data_root, split, **job.dataset_options)
    return StackedDataset([data.load(job.dataset, job.data_root, split,
                                     **job.run_dataset_options(r))
                           for r in range(len(job.runs))])


def tensorboard_dir(cache: str | Path | None = None) -> Path:
    """Where TensorBoard event files go: ``tb/`` beside the job cache (``.cache/tb`` for the
    default cache ``.cache/jobs``), one folder per job key."""
    return jc.cache_dir(cache).parent / "tb"


def _scalars(row: dict) -> dict[str, float]:
    """The finite numbers of a history row, by column, without its epoch and run."""
    out = {}
    for k, v in row.items():
        if k in ("epoch", "run") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class _TensorBoard:
    """``on_epoch`` of :func:`cmkd.engine.fit` writing each history row as scalars (a stack's
    run r under ``run_<r>/``) to TensorBoard event files in ``folder``."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(folder))

    def __call__(self, row: dict) -> None:
        prefix = f"run_{int(row['run'])}/" if "run" in row else ""
        for name, value in _scalars(row).items():
            self.writer.add_scalar(prefix + name, value, int(row["epoch"]))

    def close(self) -> None:
        self.writer.close()


def import_user_modules(modules: Iterable[str]) -> None:
    """Import the modules that define a job's method (:func:`cmkd.methods.user_module`) in
    this process, as a worker process must before it builds the method."""
    for name in modules:
        importlib.import_module(name)


def run_job(job: Job, cache: str | Path | None = None, *, progress: bool = False,
            refresh_since: float | None = None, imports: Iterable[str] = (),
            tensorboard: str | Path | None = None) -> dict | list[dict]:
    """Train ``job`` (its teacher job first, if not cached) and store it in ``cache``; return
    its result row (a list of rows, one per run, for a stack).  A job already in the cache is
    not run again (its result is returned), unless it was stored before ``refresh_since`` (a
    Unix time, :func:`refresh_since`): then it is trained again and replaces it.

    ``imports``: modules to import first (the user's method modules, for a worker process).
    ``tensorboard``: a folder; the job's history is also written there as TensorBoard event
    files, in ``<tensorboard>/<key>/`` (nothing is written when the job is cached).

    Deterministic: the same job gives the same scores, history and checkpoint on any machine
    with the same kind of CPU or GPU (the model, the method's extra modules, the data order and
    the training are seeded by ``job.seed``, a stack's runs by their own seeds; the seconds
    differ).  A CPU job trains on one torch thread (:data:`CPU_THREADS`) wherever it runs: the
    number of threads changes the order of floating-point sums, and after a few hundred SGD
    steps the scores (0.0906 vs 0.0912 mIoU for one of notebook 10's jobs on 1 and 2 threads),
    so a count that followed the machine's cores would make a job's result depend on where it
    ran, which its key does not record.  An empty validation split (a dataset without one)
    selects the last epoch.
    """
    from cmkd.runtime import select_device, torch_threads

    if not isinstance(job, Job):
        raise TypeError(f"run_job takes a cmkd.jobs.Job, got {type(job).__name__}")
    cache = jc.cache_dir(cache)
    if not _stale(cache, job.key, refresh_since) and jc.has(cache, job.key):
        return jc.read_result(cache, job.key)
    cpu = select_device(job.device).type == "cpu"
    with torch_threads(CPU_THREADS if cpu else None):
        return _run_job(job, cache, progress=progress, refresh_since=refresh_since,
                        imports=imports, tensorboard=tensorboard)


def _run_job(job: Job, cache: str | Path | None, *, progress: bool,
             refresh_since: float | None, imports: Iterable[str],
             tensorboard: str | Path | None) -> dict | list[dict]:
    """:func:`run_job`'s work, on the thread count it chose."""
    from cmkd import methods
    from cmkd.engine import fit, make_loader
    from cmkd.runtime import seed_everything, seed_for, select_device

    cache = jc.cache_dir(cache)
    stale = _stale(cache, job.key, refresh_since)
    if not stale and jc.has(cache, job.key):
        return jc.read_result(cache, job.key)
    import_user_modules(imports)
    teacher, t_rows = _teacher(job, cache, progress, refresh_since)
    device = select_device(job.device)
    sets = {s: _split(job, s) for s in SPLITS}
    seed_everything(job.seed)
    student = job.build_model()
    method = methods.build(job.method, job.hparams, student=student, teacher=teacher,
                           classes=student.classes, student_inputs=job.inputs,
                           teacher_inputs=None if teacher is None else job.teacher.inputs,
                           **job.method_stack())
    pin = device.type == "cuda"
    loaders = {s: None if len(sets[s]) == 0 else
               make_loader(sets[s], job.batch_size, shuffle=s == "train", seed=job.seed,
                           num_workers=job.workers, pin_memory=pin,
                           batch_sampler=None if s != "train" else method.train_batch_sampler(
                               len(sets[s]), job.batch_size, seed_for(job.seed, 1)))
               for s in SPLITS}
    board = None if tensorboard is None else _TensorBoard(Path(tensorboard) / job.key)
    start = time.perf_counter()
    try:
        result = fit(method, loaders["train"], loaders["val"], loaders["test"], optim=job.optim,
                     epochs=job.epochs, device=device, seed=job.seed, progress=progress,
                     metrics=(job.metric,), test_every=job.test_every, patience=job.patience,
                     on_epoch=board)
    finally:
        if board is not None:
            board.close()
    seconds = time.perf_counter() - start
    if job.stacked:
        out = [result_row(job, result.run(r), None if t_rows is None else t_rows[r], seconds,
                          str(device), run=r) for r in range(len(job.runs))]
    else:
        out = result_row(job, result, None if t_rows is None else t_rows[0], seconds,
                         str(device))
    if job.kind == "teacher":
        checkpoint = {"model": result.state_dicts["best_student"], "which": "best",
                      "epoch": result.best_epoch}
    else:
        checkpoint = {"model": result.state_dicts["student"], "which": "final",
                      "epoch": result.epochs_run - 1}

    def write(tmp: Path) -> None:
        (tmp / jc.JOB).write_text(job.to_json() + "\n")
        (tmp / jc.RESULT).write_text(json.dumps(out, indent=1) + "\n")
        (tmp / jc.HISTORY).write_text(result.history.to_csv(index=False))
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        (tmp / jc.CHECKPOINT).write_bytes(buf.getvalue())

    if stale:
        jc.store(cache, job.key, write, replace=True)
    else:
        jc.store(cache, job.key, write)
    return out


def _depth(job: Job) -> int:
    return 0 if job.teacher is None else 1 + _depth(job.teacher)


def _closure(jobs: Iterable[Job]) -> list[Job]:
    """The distinct jobs (by key) of ``jobs`` and of their teachers, teachers first, otherwise
    in order of first appearance."""
    seen: dict[str, Job] = {}

    def visit(job: Job) -> None:
        if job.teacher is not None:
            visit(job.teacher)
        seen.setdefault(job.key, job)

    for job in jobs:
        visit(job)
    return sorted(seen.values(), key=_depth)  # stable: first appearance within a depth


class Progress:
    """The job counts of a :func:`run_jobs` call, kept in a JSON file (:data:`PROGRESS_ENV`;
    nothing without one), rewritten atomically (a temporary file renamed over it) after each
    event: ``total`` (jobs of the call, teachers included), ``cached`` (found in the cache),
    ``done``, ``running``, ``failed``, ``todo`` (jobs to train), ``elapsed`` and
    ``eta_seconds`` (the mean time per finished job times the jobs left, divided among the
    jobs running at once; None before the first job ends)."""

    def __init__(self, total: int, cached: int, todo: int, parallel: int,
                 path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.total, self.cached, self.todo, self.parallel = total, cached, todo, max(1, parallel)
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self.write()

    @property
    def running(self) -> int:
        return 0 if self.failed else min(self.parallel, self.todo - self.done)

    def state(self) -> dict:
        elapsed = time.perf_counter() - self.start
        left = self.todo - self.done
        eta = (None if not self.done or self.failed else
               round(elapsed / self.done * left, 1))
        return {"total": self.total, "cached": self.cached, "todo": self.todo,
                "done": self.done, "running": self.running, "failed": self.failed,
                "elapsed": round(elapsed, 1), "eta_seconds": eta}

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.state()) + "\n")
            os.replace(tmp, self.path)
        except OSError:  # progress is best effort: a full disk must not stop the jobs
            tmp.unlink(missing_ok=True)

    def finished(self) -> None:
        self.done += 1
        self.write()

    def fail(self) -> None:
        self.failed += 1
        self.write()


def _tensorboard(tensorboard: bool | str | Path | None, cache: Path) -> Path | None:
    """The TensorBoard folder of a :func:`run_jobs` call: ``True`` (or the environment's
    :data:`TENSORBOARD_ENV` set to 1) means :func:`tensorboard_dir`, a path that folder."""
    if tensorboard is None:
        tensorboard = os.environ.get(TENSORBOARD_ENV, "") not in ("", "0")
    if tensorboard is False:
        return None
    return tensorboard_dir(cache) if tensorboard is True else Path(tensorboard)


def run_jobs(jobs: Iterable[Job], executor: Executor | None = None,
             cache: str | Path | None = None, progress: bool = True,
             refresh: bool | float | None = None,
             tensorboard: bool | str | Path | None = None) -> pd.DataFrame:
    """Run the jobs not yet in the cache and return the result rows of all of them.

    Every job (and teacher job) is checked first (:meth:`Job.check`), so a bad one fails before
    any training.  Duplicates run once; teacher jobs run before the jobs that use them (each
    distinct teacher once, shared by every student and every notebook naming the same teacher
    job); cached keys are skipped.  Each finished job is stored at once, so an interruption
    (Ctrl-C, a kill) loses at most the jobs in flight and a rerun resumes.

    Parameters
    ----------
    jobs : :class:`Job` objects, in the order of the returned rows.
    executor : runs ``run_job`` over a list of jobs; by default the one the environment names
        (``CMKD_EXECUTOR``, :func:`cmkd.jobs.cluster.configured_executor`), else
        :class:`SerialExecutor`.
    cache : the cache folder (default :func:`cmkd.jobs.cache.cache_dir`).
    progress : a tqdm bar over the jobs to run (TQDM_DISABLE=1 switches it off); with
        :data:`PROGRESS_ENV` set, the counts go to that file too (:class:`Progress`).
    tensorboard : True: every job trained writes TensorBoard event files to
        :func:`tensorboard_dir` (a path: to that folder), ``<folder>/<job key>/``; False: none;
        None (default): as the environment variable :data:`TENSORBOARD_ENV` says (1: on).
        The job keys and results are the same either way.
    refresh : run the jobs (and teacher jobs) again although they are cached: True (those
        stored before this call), a Unix time (those stored before it), False (never); None
        (default): ``$CMKD_REFRESH_JOBS`` (:data:`REFRESH_ENV`, set by ``cmkd reproduce
        --refresh-jobs``).  A job stored since that time is served from the cache.

    Returns
    -------
    DataFrame with one row per input job (one per run of a stack), in input order (duplicates
    repeated), the columns of :func:`result_row`.
    """
    jobs = list(jobs)
    bad = [type(j).__name__ for j in jobs if not isinstance(j, Job)]
    if bad:
        raise TypeError(f"run_jobs takes cmkd.jobs.Job objects, got {', '.join(set(bad))}")
    cache = jc.cache_dir(cache)
    everything = _closure(jobs)
    for job in everything:
        job.check()
    since = refresh_since(refresh)
    jc.remove_incomplete(cache)
    todo = [j for j in everything if _stale(cache, j.key, since) or not jc.has(cache, j.key)]
    if todo:
        jc.writable(cache)  # a read-only or full cache disk: said before any training
    if executor is None:  # CMKD_EXECUTOR (cmkd reproduce --executor), else in this process
        from cmkd.jobs.cluster import configured_executor

        executor = configured_executor() or SerialExecutor()
    from cmkd import methods

    imports = tuple(sorted({m for j in everything for m in (
        methods.user_module(j.method),) if m is not None and m != "__main__"}))
    run = functools.partial(run_job, cache=str(cache), progress=False, refresh_since=since,
                            imports=imports, tensorboard=_tensorboard(tensorboard, cache))
    counts = Progress(len(everything), len(everything) - len(todo), len(todo),
                      getattr(executor, "processes", 1), os.environ.get(PROGRESS_ENV))
    cached = f" ({counts.cached} of {counts.total} cached)" if counts.cached else ""
    with tqdm(total=len(todo), desc=f"jobs{cached}", unit="job",
              **({} if progress else {"disable": True})) as bar:
        try:
            for depth in sorted({_depth(j) for j in todo}):
                for row in executor.map(run, [j for j in todo if _depth(j) == depth]):
                    row = row[0] if isinstance(row, list) else row
                    counts.finished()
                    bar.set_postfix_str(f"{row['kind']} {row['method']} seed {row['seed']}",
                                        refresh=False)
                    bar.update(1)
        except Exception:
            counts.fail()
            raise
    rows = []
    for job in jobs:
        try:
            rows.extend(jc.read_rows(cache, job.key))
        except FileNotFoundError:
            raise RuntimeError(f"job {job.describe()} ran but its result is not in the cache "
                               f"{cache} (did the executor run different cmkd code?)") from None
    return pd.DataFrame(rows)
