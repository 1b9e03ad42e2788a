"""The processes a run starts: errors raised in a pool worker come back with their message and
the job; a pool worker killed with -9 is named with its job; killing the process that runs the
jobs takes every process below it along (pool workers and their DataLoader workers).

Waits poll the process table or a file against a generous deadline; none is a bare sleep."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cmkd.data.files import ItemError
from cmkd.jobs import Job, ProcessExecutor
from cmkd.jobs.executors import JobError, WorkerDied, _exit_code
from cmkd.params import ParamError
from cmkd.text import TextError

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 300.0  # seconds: spawning a worker imports torch, slow on a loaded machine


def job(**kw) -> Job:
    base = dict(dataset="avdigits", model="avdigits_cnn", inputs=("image",), kind="teacher",
                model_options={"modality": "image"}, batch_size=256, seed=3)
    return Job(**{**base, **kw})


def wait_for(condition, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {deadline:.0f} s waiting for {what}")


# ----------------------------------------------------------------------------- errors
class Unpicklable(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(f"code {code}: {text}")


def raise_param_error(job):  # runs in a pool worker
    raise ParamError("lr", "must be > 0, got -1", "params/x.yaml")


def raise_unpicklable(job):  # runs in a pool worker
    raise Unpicklable(7, "a custom failure")


def wait_to_be_killed(job):  # runs in a pool worker: says where it is, then waits
    Path(os.environ["CMKD_TEST_PID_FILE"]).write_text(str(os.getpid()))
    threading.Event().wait(DEADLINE)
    return "not killed"


def test_the_packages_errors_survive_pickling():
    for err in (ParamError("seed", "must be <= 2**63-1", "params/smoke/06.yaml"),
                ParamError(None, "no name"), ItemError("/data/x.pkl", "not a pickle"),
                TextError("params/a.yaml", 3, 5, "invalid start byte")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)


def test_an_error_in_a_worker_comes_back_with_its_message_and_job():
    j = job()
    with pytest.raises(ParamError) as caught:
        list(ProcessExecutor(processes=1).map(raise_param_error, [j]))
    assert str(caught.value) == "params/x.yaml: parameter 'lr': must be > 0, got -1"
    [note] = caught.value.__notes__
    assert j.describe() in note and '"seed":3' in note  # the job and its config
    with pytest.raises(JobError, match=r"Unpicklable: code 7: a custom failure") as caught:
        list(ProcessExecutor(processes=1).map(raise_unpicklable, [j]))
    assert j.describe() in caught.value.__notes__[0]


def test_a_pool_worker_killed_with_9_is_named_with_its_job(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("CMKD_TEST_PID_FILE", str(pid_file))
    j = job(seed=11)
    caught = []

    def consume():
        try:
            list(ProcessExecutor(processes=1).map(wait_to_be_killed, [j]))
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            caught.append(err)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    pid = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text(), "the worker"))
    os.kill(pid, signal.SIGKILL)
    thread.join(DEADLINE)
    assert not thread.is_alive()
    [err] = caught
    assert isinstance(err, WorkerDied)
    assert f"worker pid {pid} (killed by SIGKILL)" in str(err)
    assert j.describe() in str(err) and '"seed":11' in str(err)



class ReapedElsewhere:
    """A dead worker whose exit code another thread (the pool's manager) is storing: our own
    ``join`` sees the process gone (its waitpid fails with ECHILD) and ``exitcode`` reads None
    until that thread has stored the code, here after the third join."""

    def __init__(self, code):
        self.code, self.joins = code, 0

    def join(self, timeout=None):
        self.joins += 1

    @property
    def exitcode(self):
        return self.code if self.joins >= 3 else None


def test_the_exit_code_stored_by_the_pool_thread_is_waited_for():
    dead = ReapedElsewhere(-signal.SIGKILL)
    assert _exit_code(dead) == -signal.SIGKILL and dead.joins == 3
    assert _exit_code(None) is None
    never = ReapedElsewhere(0)
    never.joins = -10**9  # the code never appears: give up after the timeout, report None
    assert _exit_code(never, timeout=0.2) is None

# ----------------------------------------------------------------------------- orphans
def children() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> dict[int, int]:
    """pid -> depth below ``pid`` of its living descendants."""
    table = children()
    out, frontier = {}, [(pid, 0)]
    while frontier:
        parent, depth = frontier.pop()
        for child, ppid in table.items():
            if ppid == parent and child not in out:
                out[child] = depth + 1
                frontier.append((child, depth + 1))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


SCRIPT = """
import sys
from cmkd.jobs import Job, ProcessExecutor, run_jobs
job = Job("avdigits", "avdigits_cnn", ("image",), kind="teacher", epochs=100000,
          model_options={"modality": "image"}, batch_size=32, workers=2, seed=5)
run_jobs([job], executor=ProcessExecutor(processes=1), cache=sys.argv[1], progress=False)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_runner_leaves_no_pool_or_loader_worker(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"),
                                                      os.environ.get("PYTHONPATH", "")]),
               TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "cache")], env=env)
    try:
        # the runner -> its pool worker -> the worker's DataLoader workers (depth 2)
        tree = wait_for(lambda: (lambda d: d if sum(v >= 2 for v in d.values()) >= 2 else None)(
            descendants(proc.pid)), "the DataLoader workers of the pool worker")
    finally:
        proc.kill()
        proc.wait()
    try:  # a loader worker still importing when its parent died ends when it starts its work
        wait_for(lambda: not any(alive(pid) for pid in tree),
                 "every process below the killed runner to end")
    finally:  # what a failure leaves behind goes now
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
