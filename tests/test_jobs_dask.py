"""cmkd.jobs.cluster: the job grids on Dask.  A local cluster of 2 CPU worker processes gives
the serial executor's result rows, a worker killed mid-grid changes nothing, failing jobs are
reported with their config, GPU pinning, and the checks of the executor choice (CLI included).
One cluster is shared by the module's tests (starting one is the slow part)."""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from cmkd import cli
from cmkd.jobs import Job, SerialExecutor, run_jobs
from cmkd.jobs import cache as jc
from cmkd.jobs.cluster import (
    ENV,
    PARENT_ENV,
    DaskExecutor,
    ExecutorChoice,
    ExecutorError,
    JobsFailed,
    configured_executor,
    local_worker_specs,
    read_cluster_file,
)
from cmkd.runtime import torch_threads

# the helpers below run in the workers: send them by value (the workers need not import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MVD = {"n_train": 48, "n_val": 24, "n_test": 40}
RUNS = [{"seed": 3, "dataset_options": {"overlap": 2, "run": 0}},
        {"seed": 4, "dataset_options": {"overlap": 8, "run": 1}}]
COLUMNS = ["key", "kind", "method", "run", "best_epoch", "best_val", "test_at_best_val",
           "test_last", "teacher_test", "test_correct"]


def teacher() -> Job:
    return Job(dataset="mvd", model="mlp", inputs=("xa",), kind="teacher",
               model_options={"in_features": 25, "classes": 2, "hidden": [8], "modality": "xa"},
               dataset_options=MVD, runs=RUNS, epochs=3, batch_size=16, seed=1)


def student(method: str, hparams: dict | None = None, seed: int = 1) -> Job:
    return Job(dataset="mvd", model="mlp", inputs=("xb",), method=method,
               hparams=hparams or {}, teacher=None if method == "nokd" else teacher(),
               model_options={"in_features": 50, "classes": 2, "hidden": [8], "modality": "xb"},
               dataset_options=MVD, runs=RUNS, epochs=3, batch_size=16, seed=seed)


def grid() -> list[Job]:
    return [student("nokd"), student("kd", {"temperature": 2.0}), student("dkd"),
            student("kd", {"temperature": 2.0}, seed=2)]


@pytest.fixture(scope="module")
def executor():
    with DaskExecutor.local(2, gpus=[], quiet=True) as ex:
        yield ex


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory):
    with torch_threads(1):  # as in a worker
        return run_jobs(grid(), executor=SerialExecutor(),
                        cache=tmp_path_factory.mktemp("serial"), progress=False)


def test_two_local_workers_give_the_serial_rows(executor, serial_rows, tmp_path):
    rows = run_jobs(grid(), executor=executor, cache=tmp_path, progress=False)
    pd.testing.assert_frame_equal(rows[COLUMNS], serial_rows[COLUMNS])
    assert executor.processes == 2
    assert len(set(rows["key"])) == 4 and rows["test_correct"].notna().all()


def _signal_then_run(fn, fifo: str, marker: str, key: str, job):
    """In a worker: the first try of job ``key`` writes its process id into ``fifo`` and waits
    to be killed; every other call (the rerun included) runs ``fn(job)``."""
    if job.key == key:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            with open(fifo, "w") as out:
                out.write(str(os.getpid()))
            threading.Event().wait()  # the test kills this process
    return fn(job)


class Signalling:
    def __init__(self, inner, fifo: Path, marker: Path, key: str):
        self.inner, self.args = inner, (str(fifo), str(marker), key)

    def map(self, fn, jobs):
        return self.inner.map(functools.partial(_signal_then_run, fn, *self.args), jobs)


def test_a_worker_killed_mid_grid_changes_nothing(executor, serial_rows, tmp_path):
    fifo, marker, cache = tmp_path / "started", tmp_path / "marker", tmp_path / "cache"
    os.mkfifo(fifo)
    victim = grid()[2]
    killed = {}

    def kill_when_started():
        with open(fifo) as f:  # blocks until the victim job opens it
            text = f.read()
        if text:
            killed["pid"] = int(text)
            os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    try:
        rows = run_jobs(grid(), executor=Signalling(executor, fifo, marker, victim.key),
                        cache=cache, progress=False)
    finally:
        if killer.is_alive():  # the victim never started: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        killer.join()
    assert marker.exists() and "pid" in killed, "the victim job never started"
    pd.testing.assert_frame_equal(rows[COLUMNS], serial_rows[COLUMNS])
    # nothing half-written: every folder is a finished, verified job
    assert jc.remove_incomplete(cache, dry_run=True) == []
    assert all(jc.has(cache, j.key) for j in grid())


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    return 10 * x


def test_failures_are_reported_with_their_config_after_the_rest(executor):
    out = []
    with pytest.raises(JobsFailed) as err:
        for value in executor.map(_fail_on_three, [1, 2, 3, 4]):
            out.append(value)
    assert sorted(out) == [10, 20, 40], "the other jobs finish"
    assert len(err.value.failures) == 1 and "three is bad" in str(err.value)
    failed = JobsFailed([(grid()[1].describe(), {"method": "kd"}, "ValueError: x")], 4)
    assert "1 of 4 jobs failed" in str(failed) and '"method": "kd"' in str(failed)
    assert grid()[1].key[:12] in str(failed)


def test_gpu_workers_are_pinned_round_robin():
    specs = local_worker_specs(None, ["2", "5"])
    assert [s["options"]["env"].get("CUDA_VISIBLE_DEVICES") for s in specs.values()] == ["2", "5"]
    specs = local_worker_specs(3, ["7"])  # three small jobs sharing one GPU
    assert {s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()} == {"7"}
    assert len(specs) == 3 and all(s["options"]["nthreads"] == 1 for s in specs.values())
    cpu = local_worker_specs(None, [])
    assert len(cpu) == 2
    assert all("CUDA_VISIBLE_DEVICES" not in s["options"]["env"] for s in cpu.values())
    assert all(s["options"]["env"][PARENT_ENV] == str(os.getpid()) for s in cpu.values())


# ----------------------------------------------------------------------------- orphans
def _death_signal() -> tuple[int, int]:
    """In a worker: (its parent's pid, the signal it gets when that parent dies; 0: none)."""
    import ctypes

    value = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
    return os.getppid(), value.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_local_workers_ask_to_be_killed_with_this_process(executor):
    # every worker connected now (one killed by an earlier test may still be restarting)
    told = executor.client.run(_death_signal)
    assert len(told) >= 1
    assert set(told.values()) == {(os.getpid(), signal.SIGKILL)}


KILLED_PARENT = """
import os, sys, threading
from distributed import Event
from cmkd.jobs.cluster import DaskExecutor

def hold(i):  # a job that runs until its worker is killed
    Event(f"started-{i}").set()
    threading.Event().wait()

ex = DaskExecutor.local(2, gpus=[], quiet=True)
held = [ex.client.submit(hold, i, key=f"hold-{i}") for i in range(2)]
for i in range(2):
    if not Event(f"started-{i}", client=ex.client).wait(timeout=600):
        sys.exit("the jobs never started")
print("WORKERS", *sorted(ex.client.run(os.getpid).values()), flush=True)
threading.Event().wait()
"""
DEADLINE = 600.0  # seconds: two workers importing torch on a loaded 2-core machine


def _line(proc: subprocess.Popen, deadline: float) -> str:
    """The next line ``proc`` prints, waiting for it at most ``deadline`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], deadline)
    if not ready:
        raise AssertionError(f"no line from the process within {deadline:.0f} s")
    return proc.stdout.readline()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd and prctl are Linux's")
def test_killing_the_process_that_started_a_local_cluster_kills_its_workers():
    """The process holding a LocalCluster is killed with -9 while each worker runs a job; no
    worker survives.  The workers are stopped (SIGSTOP) first, as a worker stuck in native code
    would be: Dask's own guard (a thread of the worker reading a pipe) cannot act then, the
    kernel's death signal can.  Each worker's end is awaited on its pidfd (no polling)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "lib"),
                                                      os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PARENT], env=env,
                            stdout=subprocess.PIPE, text=True)
    fds: dict[int, int] = {}
    try:
        line = _line(proc, DEADLINE)
        assert line.startswith("WORKERS "), f"the cluster did not start: {line!r}"
        pids = [int(p) for p in line.split()[1:]]
        fds = {pid: os.pidfd_open(pid) for pid in pids}  # before any pid can be reused
        for pid in pids:  # the workers are this process's children, not a nanny's
            stat = Path(f"/proc/{pid}/stat").read_text()
            assert int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid
            os.kill(pid, signal.SIGSTOP)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    try:
        assert len(fds) == 2
        waiting = dict(fds)
        end = time.monotonic() + 60
        while waiting and time.monotonic() < end:
            ended, _, _ = select.select(list(waiting.values()), [], [], end - time.monotonic())
            waiting = {pid: fd for pid, fd in waiting.items() if fd not in ended}
        assert not waiting, f"worker(s) {sorted(waiting)} outlived the killed process"
    finally:  # what a failure leaves behind goes now
        for fd in fds.values():
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(fd)


# ----------------------------------------------------------------------------- the choice
SLURM = """kind: slurm
jobs: 4
queue: gpu
cores: 8
memory: 32GB
walltime: "04:00:00"
job_extra_directives: [--gres=gpu:1]
job_script_prologue: [source /opt/cmkd/.venv/bin/activate]
"""


@pytest.mark.parametrize("text, words", [
    ("kind: slurm\nqueue: [unclosed", "is not valid YAML"),
    ("- a list", "must be a YAML mapping"),
    ("kind: kubernetes", "kind must be one of slurm, pbs"),
    ("kind: slurm\njobs: 0", "jobs (how many batch jobs to submit) must be an integer >= 1"),
    ("kind: slurm\nwalltim: '01:00:00'", "unknown key 'walltim' for kind slurm (did you mean "
                                         "'walltime'?)"),
    ("kind: slurm\njob_extra_directives: --gres=gpu:1", "job_extra_directives must be a list"),
])
def test_bad_cluster_files_are_named(tmp_path, text, words):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ExecutorError) as err:
        read_cluster_file(path)
    assert words in str(err.value)


def test_a_slurm_cluster_file_and_its_job_script(tmp_path):
    import dask_jobqueue

    path = tmp_path / "cluster.yaml"
    path.write_text(SLURM)
    name, jobs, options = read_cluster_file(path)
    assert (name, jobs) == ("SLURMCluster", 4) and options["queue"] == "gpu"
    job = dask_jobqueue.SLURMCluster.job_cls(scheduler="tcp://127.0.0.1:8786", **options)
    script = job.job_script()  # what would be submitted (nothing is)
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    assert "source /opt/cmkd/.venv/bin/activate" in script and "#SBATCH -t 04:00:00" in script


@pytest.mark.parametrize("choice, words", [
    (ExecutorChoice("threads"), "executor must be one of serial, local, dask"),
    (ExecutorChoice("dask"), "needs exactly one of a scheduler address"),
    (ExecutorChoice("dask", cluster="/nonexistent/c.yaml"), "does not exist"),
    (ExecutorChoice("local", workers=0), "workers must be an integer >= 1"),
    (ExecutorChoice("local", scheduler="tcp://x:1"), "is for executor dask, not local"),
    (ExecutorChoice("dask", workers=2, scheduler="tcp://x:1"), "workers is for executor local"),
])
def test_bad_choices_are_named(choice, words):
    with pytest.raises(ExecutorError) as err:
        choice.check()
    assert words in str(err.value)


def test_the_choice_travels_through_the_environment(monkeypatch, tmp_path):
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert ExecutorChoice.from_env() is None and configured_executor() is None
    choice = ExecutorChoice("local", workers=3, retries=1)
    assert ExecutorChoice.from_env(choice.env()) == choice
    assert choice.record() == {"executor": "local", "workers": 3}
    monkeypatch.setenv(ENV["executor"], "serial")
    assert isinstance(configured_executor(), SerialExecutor)
    monkeypatch.setenv(ENV["workers"], "many")
    with pytest.raises(ExecutorError, match="CMKD_WORKERS must be an integer"):
        ExecutorChoice.from_env()


@pytest.mark.parametrize("argv, words", [
    (["--executor", "dask"], "--executor: executor dask needs exactly one of"),
    (["--executor", "dask", "--cluster", "missing.yaml"], "missing.yaml does not exist"),
    (["--scheduler", "tcp://x:1"], "is for executor dask, not serial"),
])
def test_cmkd_reproduce_checks_the_executor_before_anything_runs(argv, words, monkeypatch,
                                                                 tmp_path):
    import cmkd.reproduce

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran before the executor was checked")

    monkeypatch.setattr(cmkd.reproduce, "validate_all", must_not_run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        cli.main(["reproduce", "--profile", "smoke", *argv])
    assert words in str(err.value)
