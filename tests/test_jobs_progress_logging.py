"""The job runner's progress file (job counts for `cmkd reproduce`), reproduce's progress lines
read from it, and opt-in TensorBoard event files per job (which change no key and no result)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from cmkd.jobs import Job, read_history, run_jobs
from cmkd.jobs.run import PROGRESS_ENV, TENSORBOARD_ENV, Progress


@pytest.fixture
def jobs(tmp_path):
    """A teacher and two students (nokd, kd) on a small pairs file: three jobs."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    np.savez(tmp_path / "p.npz", a=rng.normal(size=(90, 5)) + y[:, None],
             b=rng.normal(size=(90, 4)) - y[:, None], y=y)
    common = dict(dataset="pairs", data_root=str(tmp_path / "p.npz"), model="mlp", epochs=2,
                  batch_size=16, device="cpu")
    teacher = Job(inputs=("a",), kind="teacher", model_options={"in_features": 5, "classes": 3},
                  **common)
    return [Job(inputs=("b",), method=m, teacher=teacher if m == "kd" else None,
                model_options={"in_features": 4, "classes": 3}, **common)
            for m in ("nokd", "kd")]


def test_the_progress_file_counts_done_and_cached_jobs(jobs, tmp_path, monkeypatch):
    progress = tmp_path / "progress.json"
    monkeypatch.setenv(PROGRESS_ENV, str(progress))
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    run_jobs(jobs[:1], cache=tmp_path / "cache", progress=False)
    state = json.loads(progress.read_text())
    assert (state["total"], state["cached"], state["todo"], state["done"]) == (1, 0, 1, 1)
    assert state["running"] == 0 and state["failed"] == 0 and state["eta_seconds"] == 0
    run_jobs(jobs, cache=tmp_path / "cache", progress=False)   # + the teacher and kd
    state = json.loads(progress.read_text())
    assert (state["total"], state["cached"], state["todo"], state["done"]) == (3, 1, 2, 2)
    assert not list(tmp_path.glob(".progress.json.*"))         # written through a renamed file


def test_progress_counts_a_failure_and_estimates_from_finished_jobs(tmp_path):
    path = tmp_path / "p.json"
    p = Progress(total=5, cached=1, todo=4, parallel=2, path=path)
    first = json.loads(path.read_text())
    assert (first["running"], first["eta_seconds"]) == (2, None)
    p.start -= 10.0                                           # 10 s in, one job done
    p.finished()
    state = json.loads(path.read_text())
    assert state["done"] == 1 and state["running"] == 2
    assert state["eta_seconds"] == pytest.approx(10.0 * 3, abs=0.5)
    p.fail()
    state = json.loads(path.read_text())
    assert (state["failed"], state["running"], state["eta_seconds"]) == (1, 0, None)


def test_reproduce_prints_a_line_when_the_counts_change(tmp_path, capsys, monkeypatch):
    from cmkd import reproduce

    monkeypatch.setattr(reproduce, "POLL_SECONDS", 0.05)
    path = tmp_path / "p.json"
    script = (f"import json, os, time\n"
              f"for done in (0, 0, 1, 2):\n"
              f"    tmp = {str(path)!r} + '.tmp'\n"
              f"    open(tmp, 'w').write(json.dumps(dict(total=3, cached=1, todo=2, done=done,"
              f" running=min(1, 2 - done), failed=0, elapsed=1.0, eta_seconds=None if not done"
              f" else 75.0)))\n"
              f"    os.replace(tmp, {str(path)!r})\n"
              f"    time.sleep(0.6)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    assert reproduce._wait(proc, "06_c2kd", path) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert lines == [
        "  06_c2kd: jobs 0/2 done, 1 running, 1 cached (of 3)",
        "  06_c2kd: jobs 1/2 done, 1 running, 1 cached (of 3), about 1 min 15 s left",
        "  06_c2kd: jobs 2/2 done, 0 running, 1 cached (of 3), about 1 min 15 s left"]


def test_tensorboard_event_files_hold_the_history_and_change_nothing(jobs, tmp_path,
                                                                     monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    plain = run_jobs(jobs, cache=tmp_path / "plain" / "jobs", progress=False)
    assert not (tmp_path / "plain" / "tb").exists()           # off: nothing written
    logged = run_jobs(jobs, cache=tmp_path / "logged" / "jobs", progress=False,
                      tensorboard=True)
    assert plain.key.tolist() == logged.key.tolist()
    scores = ["best_val", "test_at_best_val", "test_last", "test_correct"]
    assert plain[scores].equals(logged[scores])
    for job in jobs:
        folder = tmp_path / "logged" / "tb" / job.key
        assert list(folder.glob("events.out.tfevents.*"))
        events = EventAccumulator(str(folder))
        events.Reload()
        history = read_history(job, tmp_path / "logged" / "jobs")
        numeric = [c for c in history.columns if c not in ("epoch", "run")
                   and history[c].dtype.kind in "if" and history[c].notna().all()]
        assert set(numeric) <= set(events.Tags()["scalars"])
        assert {"total", "lr", "val_accuracy", "test_accuracy"} <= set(numeric)
        for tag in numeric:
            got = [(e.step, e.value) for e in events.Scalars(tag)]
            assert got == [(int(e), pytest.approx(v, rel=1e-6)) for e, v in
                           zip(history.epoch, history[tag])]
    # the environment switch (cmkd reproduce --tensorboard) writes them too
    monkeypatch.setenv(TENSORBOARD_ENV, "1")
    run_jobs(jobs[:1], cache=tmp_path / "env" / "jobs", progress=False)
    assert list((tmp_path / "env" / "tb" / jobs[0].key).glob("events.out.tfevents.*"))
