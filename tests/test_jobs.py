"""cmkd.jobs: job keys, validation, the atomic cache, skipping, shared teachers, resuming after a
kill, pruning, the `cmkd cache` command and determinism (embedded avdigits, tiny CNNs)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import cmkd.engine
from cmkd import cli
from cmkd.jobs import (
    Job,
    SerialExecutor,
    keys,
    load_model,
    read_history,
    run_job,
    run_jobs,
)
from cmkd.jobs import cache as jc
from cmkd.params import ParamError
from cmkd.runtime import torch_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def fits(monkeypatch):
    """Counts the calls of cmkd.engine.fit (each is one training run)."""
    calls = []
    real = cmkd.engine.fit

    def counting(method, *args, **kwargs):
        calls.append(method.name)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(cmkd.engine, "fit", counting)
    return calls


def teacher(**kw) -> Job:
    base = dict(dataset="avdigits", model="avdigits_cnn", inputs=("image",), kind="teacher",
                model_options={"modality": "image"}, epochs=1, batch_size=128, seed=7)
    return Job(**{**base, **kw})


def student(**kw) -> Job:
    base = dict(dataset="avdigits", model="avdigits_cnn", inputs=("image",), method="kd",
                hparams={"temperature": 2.0}, teacher=teacher(),
                model_options={"modality": "image"}, epochs=2, batch_size=128, seed=0)
    return Job(**{**base, **kw})


def folders(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ----------------------------------------------------------------------------- keys
def test_same_job_same_key_and_round_trips():
    a, b = student(), student()
    assert a == b and a.key == b.key and hash(a) == hash(b)
    assert len(a.key) == 64 and int(a.key, 16) >= 0
    assert Job.from_config(json.loads(a.to_json())).key == a.key
    assert pickle.loads(pickle.dumps(a)).key == a.key
    # options and hyperparameters are completed with their defaults
    explicit = student(hparams={"temperature": 2.0, "ce_weight": 1.0, "kd_weight": 1.0,
                                "reduction": "mean"},
                       model_options={"modality": "image", "classes": 10},
                       dataset_options={"energy_removed": 0.75}, optim={"lr": 0.01})
    assert explicit.key == a.key
    assert a.hparams["kd_weight"] == 1.0 and a.dataset_options["standardize"] is True


def test_every_field_but_workers_changes_the_key(monkeypatch):
    """Every field names other results, except ``workers`` (loader processes) and a
    ``device`` of the same type (tests/test_jobs_keys.py: what else the key covers)."""
    base = student()
    changes = {
        "dataset": None, "model": None,  # checked below with a second dataset / model
        "inputs": ("audio",), "kind": "teacher", "method": "nokd",
        "hparams": {"temperature": 4.0}, "teacher": teacher(seed=8),
        "dataset_options": {"energy_removed": 0.5}, "data_root": "/elsewhere",
        "model_options": {"modality": "image", "classes": 5},
        "optim": {"lr": 0.02}, "epochs": 3, "batch_size": 64, "seed": 1,
        "device": "cuda" if keys.device_type("auto") != "cuda" else "cpu",
        "metric": "f1_macro", "workers": 1, "runs": [{"seed": 0}], "test_every": 2,
            "patience": 3,
    }
    assert set(changes) == {f.name for f in dataclasses.fields(Job)}, "a field is not tested"
    seen = {base.key}
    for name, value in changes.items():
        if name in ("dataset", "model"):
            continue
        if name == "kind":
            job = base.replace(kind="teacher", method="nokd", hparams={}, teacher=None)
        elif name == "method":
            job = base.replace(method="nokd", hparams={}, teacher=None)
        elif name == "teacher":
            job = base.replace(teacher=value)
        elif name == "data_root":
            job = base.replace(data_root=value, teacher=teacher(data_root=value))
        elif name == "runs":  # a stack of one run is not the single run
            job = base.replace(runs=value, teacher=teacher(runs=value))
        else:
            job = base.replace(**{name: value})
        if name == "workers":
            assert job.key == base.key
            continue
        assert job.key not in seen, name
        seen.add(job.key)
    same_type = keys.device_type("auto")
    assert base.replace(device=same_type).key == base.key
    other_model = Job("avdigits", "mlp", ("image",), model_options={"in_features": 64,
                                                                    "classes": 10})
    nokd = base.replace(method="nokd", hparams={}, teacher=None)
    assert other_model.key != nokd.key
    other_data = Job("rgbd_scenes", "avdigits_cnn", ("image",),
                     model_options={"modality": "image"})
    assert other_data.key != nokd.replace(dataset_options={}).key
    # what the run depends on is part of the key
    monkeypatch.setattr(keys, "environment", lambda: {"torch": "0", "lock": None})
    assert student().key not in seen  # a new job object: a key is computed once per object


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change, field, words", [
    ({"dataset": "avdigit"}, "dataset", "unknown dataset"),
    ({"model": "avdigits_cn"}, "model", "unknown model"),
    ({"method": "kdd"}, "method", "unknown method"),
    ({"model_options": {"modality": "image", "clases": 10}}, "model_options", "clases"),
    ({"model_options": {}}, "model_options", "missing required option(s) modality"),
    ({"dataset_options": {"energy": 0.5}}, "dataset_options", "energy"),
    ({"dataset_options": [0.5]}, "dataset_options", "must be a mapping"),
    ({"model_options": "image"}, "model_options", "must be a mapping"),
    ({"hparams": {"temprature": 2.0}}, "temprature", "unknown parameter"),
    ({"hparams": {"temperature": -1.0}}, "temperature", ""),
    ({"teacher": None}, "teacher", "needs a teacher"),
    ({"teacher": "t"}, "teacher", "must be a Job"),
    ({"epochs": 0}, "epochs", ">= 1"),
    ({"batch_size": 2.5}, "batch_size", "int"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"device": "tpu"}, "device", "cuda:N"),
    ({"metric": "acc"}, "metric", "accuracy"),
    ({"inputs": ()}, "inputs", "batch keys"),
    ({"optim": {"lr": 0}}, "lr", ""),
    ({"kind": "pupil"}, "kind", "teacher"),
    ({"kind": "teacher", "teacher": None}, "kind", "distils it from a teacher job"),
    ({"kind": "teacher", "method": "nokd", "hparams": {}}, "kind", "trains its model alone"),
])
def test_bad_fields_are_named(change, field, words):
    with pytest.raises(ParamError) as err:
        student(**change)
    assert f"'{field}'" in str(err.value) and words in str(err.value)


def test_teacher_job_must_be_a_teacher_on_the_same_data():
    with pytest.raises(ParamError, match="kind 'teacher'"):
        student(teacher=student(method="nokd", hparams={}, teacher=None))
    with pytest.raises(ParamError, match="dataset"):
        student(teacher=teacher(dataset_options={}, data_root="/x"))


def test_check_refuses_bad_values_before_training(tmp_path, fits):
    bad = student(model_options={"modality": "video"})  # a name check passes, the value not
    with pytest.raises(ParamError, match="modality"):
        bad.check()
    mismatch = student(teacher=teacher(model_options={"modality": "image", "classes": 5}))
    with pytest.raises(ParamError, match="classes"):
        mismatch.check()
    with pytest.raises(ParamError, match="modality"):
        run_jobs([student(seed=3), bad], cache=tmp_path / "c", progress=False)
    assert fits == [] and folders(tmp_path / "c") == []


def test_real_dataset_without_root_stops_before_compute():
    job = Job("cremad", "resnet18", ("audio",), model_options={"classes": 6, "in_channels": 1})
    with pytest.raises(ParamError, match="data_root"):
        job.check()


# ----------------------------------------------------------------------------- running
def test_run_jobs_rows_in_input_order_and_rerun_skips(tmp_path, fits):
    cache = tmp_path / "cache"
    jobs = [student(seed=1), student(method="nokd", hparams={}, teacher=None), student(seed=1)]
    rows = run_jobs(jobs, cache=cache, progress=False)
    assert fits == ["nokd", "nokd", "kd"]  # jobs without a teacher (the teacher among them)
    # first, then the students of a teacher; each distinct job once
    assert list(rows["key"]) == [j.key for j in jobs]
    assert list(rows["method"]) == ["kd", "nokd", "kd"]
    t = teacher()
    assert (cache / t.key / jc.MARKER).is_file()
    for name in (jc.RESULT, jc.HISTORY, jc.CHECKPOINT, jc.JOB):
        assert (cache / jobs[0].key / name).is_file()
    row = rows.iloc[0]
    assert row["teacher_key"] == t.key and row["hp_temperature"] == 2.0
    assert 0 <= row["test_at_best_val"] <= 1 and row["device"] == "cpu"
    history = pd.read_csv(cache / jobs[0].key / jc.HISTORY)
    assert list(history["epoch"]) == [0, 1] and "kd" in history
    again = run_jobs(jobs, cache=cache, progress=False)
    assert len(fits) == 3, "a rerun trained again"
    pd.testing.assert_frame_equal(again, rows)


def test_teacher_trained_once_and_shared(tmp_path, fits):
    cache = tmp_path / "cache"
    a, b = student(seed=1), student(seed=2, hparams={"temperature": 4.0})
    rows = run_jobs([a, b], cache=cache, progress=False)
    assert fits == ["nokd", "kd", "kd"]
    t_row = jc.read_result(cache, teacher().key)
    assert list(rows["teacher_test"]) == [t_row["test_at_best_val"]] * 2
    ckpt = torch.load(cache / teacher().key / jc.CHECKPOINT, weights_only=True)
    assert ckpt["which"] == "best" and set(ckpt["model"]) >= {"classifier.weight"}
    # another notebook that builds the same teacher job (a separate object) reuses it
    c = Job("avdigits", "avdigits_cnn", ("image",), method="kd",
            teacher=teacher(), model_options={"modality": "image"}, epochs=1, batch_size=128)
    run_jobs([c, teacher()], cache=cache, progress=False)
    assert fits == ["nokd", "kd", "kd", "kd"]


def test_run_job_trains_a_missing_teacher_first(tmp_path, fits):
    row = run_job(student(seed=5), tmp_path / "cache")
    assert fits == ["nokd", "kd"] and row["kind"] == "student"
    assert jc.has(tmp_path / "cache", teacher().key)
    assert run_job(student(seed=5), tmp_path / "cache") == row and len(fits) == 2


def test_jobs_survive_pickling_executor(tmp_path, fits):
    """A process-crossing executor: the function and each job go through pickle."""

    class PickleExecutor:
        def map(self, fn, jobs):
            for job in reversed(jobs):  # any order
                yield pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(job)))

    jobs = [student(seed=1), student(seed=2)]
    rows = run_jobs(jobs, executor=PickleExecutor(), cache=tmp_path / "c", progress=False)
    assert list(rows["seed"]) == [1, 2] and len(fits) == 3
    serial = run_jobs(jobs, executor=SerialExecutor(), cache=tmp_path / "d", progress=False)
    cols = ["key", "best_val", "test_at_best_val", "test_last", "teacher_test"]
    pd.testing.assert_frame_equal(rows[cols], serial[cols])


def test_deterministic_across_two_caches(tmp_path):
    jobs = [student(seed=3), student(method="nokd", hparams={}, teacher=None, seed=3)]
    one = run_jobs(jobs, cache=tmp_path / "one", progress=False)
    two = run_jobs(jobs, cache=tmp_path / "two", progress=False)
    pd.testing.assert_frame_equal(one.drop(columns="seconds"), two.drop(columns="seconds"))
    for job in [*jobs, teacher()]:
        h1 = (tmp_path / "one" / job.key / jc.HISTORY).read_text()
        assert h1 == (tmp_path / "two" / job.key / jc.HISTORY).read_text()
        c1 = torch.load(tmp_path / "one" / job.key / jc.CHECKPOINT, weights_only=True)
        c2 = torch.load(tmp_path / "two" / job.key / jc.CHECKPOINT, weights_only=True)
        assert c1["which"] == c2["which"] and c1["epoch"] == c2["epoch"]
        for k, v in c1["model"].items():
            assert torch.equal(v, c2["model"][k]), (job.kind, k)
    # the same seed gives the same student initialisation with or without a teacher
    kd_hist = pd.read_csv(tmp_path / "one" / jobs[0].key / jc.HISTORY)
    assert kd_hist["test_accuracy"].notna().all()


def test_a_cpu_job_trains_on_one_thread_whatever_the_caller_set(tmp_path, monkeypatch):
    """A job's result must not follow the caller's (the machine's) torch thread count: the key
    does not record it, and the order of parallel sums changes the scores."""
    seen = []
    real = cmkd.engine.fit

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(cmkd.engine, "fit", recording)
    job = student(method="nokd", hparams={}, teacher=None, epochs=1, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_job(job, cache=tmp_path / "two")
        assert torch.get_num_threads() == 2  # the caller's count is given back
    finally:
        torch.set_num_threads(before)
    run_job(job, cache=tmp_path / "one")
    assert seen == [1, 1]
    c2 = torch.load(tmp_path / "two" / job.key / jc.CHECKPOINT, weights_only=True)["model"]
    c1 = torch.load(tmp_path / "one" / job.key / jc.CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(v, c1[k]) for k, v in c2.items())


# ----------------------------------------------------------------------------- the cache
def test_store_is_atomic_on_interrupt(tmp_path):
    def write(tmp):
        (tmp / jc.RESULT).write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jc.store(tmp_path, "a" * 64, write)
    assert folders(tmp_path) == []


def test_ctrl_c_loses_only_the_job_in_flight(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    jobs = [student(method="nokd", hparams={}, teacher=None, seed=s) for s in (1, 2, 3)]
    real, calls = cmkd.engine.fit, []

    def interrupted_second(method, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(method, *args, **kwargs)

    monkeypatch.setattr(cmkd.engine, "fit", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, cache=cache, progress=False)
    assert folders(cache) == [jobs[0].key]
    monkeypatch.setattr(cmkd.engine, "fit", real)
    rows = run_jobs(jobs, cache=cache, progress=False)
    assert list(rows["seed"]) == [1, 2, 3] and folders(cache) == sorted(j.key for j in jobs)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake(cache: Path, name: str, pid: int | None = None, job: Job | None = None) -> Path:
    path = cache / name
    path.mkdir(parents=True)
    (path / jc.RESULT).write_text('{"test_at_best_val": 0.99}')
    if job is not None:
        (path / jc.JOB).write_text(job.to_json())
    if pid is not None:
        (path / jc.OWNER).write_text(json.dumps({"host": os.uname().nodename, "pid": pid}))
    return path


def test_incomplete_folders_are_ignored_and_removed(tmp_path, fits, monkeypatch):
    monkeypatch.setattr(jc.socket, "gethostname", lambda: os.uname().nodename)
    cache = tmp_path / "cache"
    job = student(method="nokd", hparams={}, teacher=None)
    _fake(cache, job.key)                                      # no completion marker
    dead = _fake(cache, f"{jc.TMP_PREFIX}{job.key}-dead", _dead_pid())
    live = _fake(cache, f"{jc.TMP_PREFIX}{job.key}-live", os.getpid())
    assert not jc.has(cache, job.key)
    with pytest.raises(FileNotFoundError):
        jc.read_result(cache, job.key)
    rows = run_jobs([job], cache=cache, progress=False)
    assert fits == ["nokd"] and rows["test_at_best_val"][0] != 0.99
    assert jc.has(cache, job.key) and not dead.exists() and live.exists()
    assert [e["live"] for e in jc.entries(cache) if not e["complete"]] == [True]
    assert jc.prune(cache) == [] and live.exists()             # a live writer is left alone
    assert [e["path"] for e in jc.prune(cache, everything=True)] == [live, cache / job.key]
    assert folders(cache) == []


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "elsewhere"))
    assert jc.cache_dir() == tmp_path / "elsewhere"
    assert jc.cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("CMKD_CACHE")
    monkeypatch.setenv("CMKD_ROOT", str(ROOT))
    assert jc.cache_dir() == ROOT / ".cache" / "jobs"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q",
                              ".cache/jobs/x/result.json"])
    assert ignored.returncode == 0, ".cache/ is not git-ignored"


def test_cmkd_cache_list_and_prune(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CMKD_CACHE", str(cache))
    monkeypatch.setenv("CMKD_ROOT", str(tmp_path))  # no cmkd reproduce holds the cache there
    t, s = teacher(), student(seed=4)
    run_jobs([s], progress=False)                               # into $CMKD_CACHE
    _fake(cache, "f" * 64, job=s)                               # incomplete
    old = cache / t.key / jc.MARKER
    two_days = time.time() - 2 * 86400
    os.utime(old, (two_days, two_days))

    assert cli.main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"job cache {cache}: 2 finished job(s)" in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.startswith("  ")}
    assert lines[t.key[:12]].split()[1:5] == ["teacher", "avdigits", "nokd", "7"]
    assert lines[t.key[:12]].split()[-1] == "2.0d"
    assert lines[s.key[:12]].split()[1:5] == ["student", "avdigits", "kd", "4"]
    assert "(incomplete)" in lines["f" * 12] and "KiB" in lines[s.key[:12]]

    assert cli.main(["cache", "prune", "--all", "--dry-run"]) == 0
    assert "would remove 3 folder(s)" in capsys.readouterr().out
    assert len(folders(cache)) == 3
    assert cli.main(["cache", "prune"]) == 0                   # incomplete ones only
    out = capsys.readouterr().out
    assert f"removed {'f' * 12} (incomplete" in out and "removed 1 folder(s)" in out
    assert folders(cache) == sorted([t.key, s.key])
    assert cli.main(["cache", "prune", "--older-than", "1", "--cache", str(cache)]) == 0
    assert f"removed {t.key[:12]} (finished, teacher nokd" in capsys.readouterr().out
    assert folders(cache) == [s.key]
    assert cli.main(["cache", "prune", "--older-than", "-1"]) == 2
    assert "older_than_days must be >= 0" in capsys.readouterr().err
    assert cli.main(["cache", "prune", "--all"]) == 0
    assert folders(cache) == []
    assert cli.main(["cache", "list"]) == 0
    assert "0 finished job(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a kill
# The run is stopped at a known point, whatever the machine's speed: the second job to be stored
# writes all its files into its temporary folder, then the process says so in a file and blocks
# for good (it never completes that folder); the test SIGKILLs it there.  So one job is
# finished, one is half-stored (files written, no completion marker) and one never started.
SCRIPT = """
import json, signal, sys, torch
from pathlib import Path
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_jobs import student
from cmkd.jobs import cache as jc, run_jobs
from cmkd.jobs.executors import die_with_parent

die_with_parent()  # never outlive the test, even if it fails before the kill
real_store, stored = jc.store, []


def store(cache, key, write):
    def write_then_block(tmp):
        write(tmp)
        stored.append(key)
        if len(stored) == 2:
            Path({blocked!r}).write_text(json.dumps({{"key": key, "tmp": tmp.name}}))
            while True:
                signal.pause()  # until the test's SIGKILL

    return real_store(cache, key, write_then_block)


jc.store = store
jobs = [student(method="nokd", hparams={{}}, teacher=None, seed=s, epochs=5, batch_size=64)
        for s in (11, 12, 13)]
print(" ".join(j.key for j in jobs), flush=True)
run_jobs(jobs, progress=False)
"""


def test_killed_run_resumes_and_redoes_only_the_missing_jobs(tmp_path, fits):
    cache, blocked = tmp_path / "cache", tmp_path / "blocked.json"
    env = {**os.environ, "CMKD_CACHE": str(cache), "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    script = SCRIPT.format(tests=str(ROOT / "tests"), blocked=str(blocked))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        keys = proc.stdout.readline().split()
        assert len(keys) == 3
        deadline = time.monotonic() + 900  # generous: only a bound, the event is the file
        while not blocked.is_file():
            assert proc.poll() is None, "the run ended before it stored its second job"
            assert time.monotonic() < deadline, "the run did not store two jobs in 900 s"
            time.sleep(0.1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    half = json.loads(blocked.read_text())
    done = [k for k in keys if jc.has(cache, k)]
    assert len(done) == 1 and half["key"] in keys and half["key"] not in done
    # the killed job's files are all there, but in a temporary folder without the marker
    assert folders(cache) == sorted([done[0], half["tmp"]])
    assert (cache / half["tmp"] / jc.RESULT).is_file()
    assert not (cache / half["tmp"] / jc.MARKER).exists()
    # every folder is either finished or incomplete (never read); nothing half-finished is used
    jobs = [student(method="nokd", hparams={}, teacher=None, seed=s, epochs=5, batch_size=64)
            for s in (11, 12, 13)]
    assert [j.key for j in jobs] == keys
    rows = run_jobs(jobs, cache=cache, progress=False)
    assert len(fits) == 3 - len(done), "finished jobs were trained again"
    assert list(rows["key"]) == keys
    assert all(jc.has(cache, k) for k in keys)
    assert not any(name.startswith(jc.TMP_PREFIX) for name in folders(cache))
    # the resumed result is the one an uninterrupted run gives
    fresh = run_job(jobs[2], tmp_path / "fresh")
    assert fresh["test_at_best_val"] == rows["test_at_best_val"][2]


def test_partial_of_run_job_is_picklable():
    fn = functools.partial(run_job, cache="/tmp/x", progress=False)
    assert pickle.loads(pickle.dumps(fn)).keywords == {"cache": "/tmp/x", "progress": False}


def test_method_hooks_through_jobs(tmp_path):
    """A fusion teacher trained with OGM-GE, DLB's paired batches, and the updated teacher's
    accuracy recorded for a bidirectional method (NaN for a frozen teacher)."""
    fused = teacher(model="fusion_ogm_ge", inputs=("audio", "image"), method="ogm_ge",
                    model_options={"classes": 10, "modalities": ("audio", "image"),
                                   "encoders": ("avdigits_cnn", "avdigits_cnn"),
                                   "encoder_options": ({}, {})})
    jobs = [student(teacher=fused, method="nkd", hparams={}),
            student(teacher=None, method="dlb", hparams={}),
            student(method="c2kd", hparams={"proxy": False})]
    rows = run_jobs(jobs, cache=tmp_path, progress=False)
    assert rows.teacher_test.notna().iloc[0] and rows.teacher_end_test.isna().iloc[0]
    assert rows.teacher_test.isna().iloc[1]
    assert 0 <= rows.teacher_end_test.iloc[2] <= 1
    history = pd.read_csv(tmp_path / jobs[1].key / jc.HISTORY)
    assert (history.dlb > 0).all(), "DLB's consistency term needs its paired batches"
    assert (history.steps > 0).all()


def test_process_executor_gives_the_serial_results(tmp_path):
    from cmkd.jobs import ProcessExecutor

    jobs = [student(seed=s) for s in (0, 1)]
    serial = run_jobs(jobs, cache=tmp_path / "a", progress=False)
    parallel = run_jobs(jobs, executor=ProcessExecutor(2), cache=tmp_path / "b",
                        progress=False)
    cols = ["key", "test_at_best_val", "test_last", "best_val", "teacher_test"]
    pd.testing.assert_frame_equal(serial[cols], parallel[cols])


# ----------------------------------------------------------------------------- stacks of runs
#: two runs of the synthetic MVD data: their own seed and their own draw (overlap, run)
RUNS = [{"seed": 3, "dataset_options": {"overlap": 2, "run": 0}},
        {"seed": 4, "dataset_options": {"overlap": 8, "run": 1}}]
MVD_DATA = {"n_train": 48, "n_val": 24, "n_test": 40}


def mvd_teacher(**kw) -> Job:
    base = dict(dataset="mvd", model="mlp", inputs=("xa",), kind="teacher",
                model_options={"in_features": 25, "classes": 2, "hidden": [8],
                               "modality": "xa"},
                dataset_options=MVD_DATA, runs=RUNS, epochs=2, batch_size=16, seed=1)
    return Job(**{**base, **kw})


def mvd_student(**kw) -> Job:
    base = dict(dataset="mvd", model="mlp", inputs=("xb",), method="kd",
                model_options={"in_features": 50, "classes": 2, "hidden": [8],
                               "modality": "xb"},
                dataset_options=MVD_DATA, runs=RUNS, teacher=mvd_teacher(), epochs=2,
                batch_size=16, seed=1)
    return Job(**{**base, **kw})


@pytest.mark.parametrize("runs, words", [
    ("abc", "'runs': must be a list of mappings {seed, dataset_options}"),
    ({"seed": 1}, "'runs': must be a list of mappings"),
    ([{"dataset_options": {}}], "'runs': run 0 must be a mapping with a 'seed'"),
    ([{"seed": 1}, 5], "'runs': run 1 must be a mapping with a 'seed'"),
    ([{"seed": 1, "data": {}}], "'runs': run 0 has unknown key(s) ['data']"),
    ([{"seed": -1}], "'runs[0].seed': must be an int >= 0, got -1"),
    ([{"seed": 1.5}], "'runs[0].seed': must be an int >= 0"),
    ([{"seed": 1, "dataset_options": {"overlapp": 3}}], "'dataset_options'"),
    ([{"seed": 1, "dataset_options": [2]}], "'runs[0].dataset_options': must be a mapping"),
    ([{"seed": 1}, {"seed": 2, "dataset_options": {2: 8}}],
     "'runs[1].dataset_options': keys must be option names (strings), got 2"),
])
def test_bad_runs_are_named(runs, words):
    with pytest.raises(ParamError) as err:
        mvd_teacher(runs=runs)
    assert words in str(err.value)
    if "overlapp" in repr(runs):
        assert "overlapp" in str(err.value)


def test_a_stack_needs_a_teacher_stack_of_the_same_data():
    with pytest.raises(ParamError, match=r"'teacher': a stack of 2 run\(s\) needs a teacher "
                                         r"stack of the same runs' data; the teacher job has 0 "
                                         r"run\(s\)$"):
        mvd_student(teacher=mvd_teacher(runs=()))
    other = [RUNS[0], {"seed": 4, "dataset_options": {"overlap": 8, "run": 2}}]
    with pytest.raises(ParamError, match=r"the teacher job has 2 run\(s\) with other data"):
        mvd_student(teacher=mvd_teacher(runs=other))
    with pytest.raises(ParamError, match=r"'teacher': a stack of 0 run\(s\)"):
        mvd_student(runs=(), teacher=mvd_teacher())
    # the runs' seeds may differ: only their data must be the same
    reseeded = [dict(r, seed=r["seed"] + 10) for r in RUNS]
    assert mvd_student(teacher=mvd_teacher(runs=reseeded)).teacher.run_seeds() == [13, 14]


def test_stack_fields_and_helpers():
    job = mvd_student()
    assert job.stacked and job.run_seeds() == [3, 4]
    assert job.runs[0] == {"dataset_options": {"overlap": 2, "run": 0}, "seed": 3}
    assert job.run_dataset_options(1) == {**job.dataset_options, "overlap": 8, "run": 1}
    assert job.run_dataset_options() == dict(job.dataset_options)
    assert job.method_stack() == {"runs": True, "seeds": [3, 4]}
    assert "x 2 runs" in job.describe()
    # a run without dataset_options has its own data = the job's; it is stored as {}
    plain = mvd_teacher(runs=[{"seed": 5}])
    assert plain.key == mvd_teacher(runs=[{"seed": 5, "dataset_options": {}}]).key
    assert plain.run_dataset_options(0) == dict(plain.dataset_options)
    single = mvd_teacher(runs=())
    assert not single.stacked and single.method_stack() == {}
    assert Job.from_config(json.loads(job.to_json())).key == job.key
    model = job.build_model()
    assert model.n_runs == 2
    ref = mvd_student(runs=[RUNS[1]], teacher=mvd_teacher(runs=[RUNS[1]])).build_model()
    assert torch.equal(model[0].weight[1], ref[0].weight[0])  # run r from its own seed
    job.check()


def test_a_stacked_job_gives_one_row_per_run(tmp_path, fits):
    cache = tmp_path / "cache"
    job = mvd_student()
    rows = run_jobs([job], cache=cache, progress=False)
    assert fits == ["nokd", "kd"], "one training per stack"
    assert len(rows) == 2 and list(rows["key"]) == [job.key] * 2
    assert list(rows["run"]) == [0, 1] and list(rows["run_seed"]) == [3, 4]
    assert list(rows["data_overlap"]) == [2, 8] and list(rows["data_run"]) == [0, 1]
    assert (rows["data_n_train"] == 48).all() and (rows["seed"] == 1).all()
    t_rows = jc.read_rows(cache, mvd_teacher().key)
    assert [r["run"] for r in t_rows] == [0, 1]
    assert list(rows["teacher_test"]) == [r["test_at_best_val"] for r in t_rows]
    assert isinstance(json.loads((cache / job.key / jc.RESULT).read_text()), list)
    assert run_job(job, cache) == jc.read_rows(cache, job.key) and len(fits) == 2
    # a single-run job's result is one row (not a list) and has no run columns
    single = mvd_student(runs=(), teacher=None, method="nokd", hparams={})
    one = run_jobs([single, job], cache=cache, progress=False)
    assert list(one["key"]) == [single.key, job.key, job.key]
    assert one["run"].isna().iloc[0] and isinstance(jc.read_result(cache, single.key), dict)


def test_rows_carry_early_stopping_and_per_item_correctness(tmp_path):
    job = mvd_student(epochs=8, patience=1, teacher=mvd_teacher(epochs=8, patience=1))
    rows = run_jobs([job], cache=tmp_path / "cache", progress=False)
    history = read_history(job, tmp_path / "cache")
    for _, row in rows.iterrows():
        h = history[history.run == row.run]
        assert row.epochs_run == len(h) <= 8
        assert row.since_best == row.epochs_run - 1 - row.best_epoch
        if row.epochs_run < 8:  # stopped: every run had stalled for one epoch
            assert (history[history.epoch == row.epochs_run - 1].since_best >= 1).all()
        assert len(row.test_correct) == MVD_DATA["n_test"]
        assert set(row.test_correct) <= {"0", "1"}
        assert row.test_correct.count("1") / MVD_DATA["n_test"] == pytest.approx(
            row.test_at_best_val)


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean(-1)


def test_load_model_and_read_history(tmp_path):
    from cmkd import data

    cache = tmp_path / "cache"
    job = mvd_student()
    with pytest.raises(FileNotFoundError):
        load_model(job, cache)
    with pytest.raises(FileNotFoundError, match="has no finished result"):
        read_history(job, cache)
    single = mvd_student(runs=(), teacher=mvd_teacher(runs=()))
    rows = run_jobs([job, single], cache=cache, progress=False)
    state = torch.get_rng_state()
    model = load_model(job, cache)
    assert torch.equal(torch.get_rng_state(), state), "load_model moved the global generator"
    assert not model.training and model.n_runs == 2
    ckpt = torch.load(cache / job.key / jc.CHECKPOINT, weights_only=True)
    assert ckpt["which"] == "final"
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
    fresh = job.build_model().state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in model.state_dict().items())
    # the trained weights give the reported final test accuracy, run by run
    for r in range(2):
        test = data.load("mvd", None, "test", **job.run_dataset_options(r)).tensors
        acc = _accuracy(model, test["xb"].expand(2, -1, -1), test["label"])[r]
        assert float(acc) == pytest.approx(rows["test_last"].iloc[r]), r
    one = load_model(single, cache)
    test = data.load("mvd", None, "test", **single.dataset_options).tensors
    assert float(_accuracy(one, test["xb"], test["label"])) == pytest.approx(
        rows["test_last"].iloc[2])
    # a teacher job's checkpoint is its best-validation model
    teacher_ckpt = torch.load(cache / mvd_teacher().key / jc.CHECKPOINT, weights_only=True)
    assert teacher_ckpt["which"] == "best"
    for k, v in load_model(mvd_teacher(), cache).state_dict().items():
        assert torch.equal(v, teacher_ckpt["model"][k]), k
    # the history: one row per epoch and run for a stack
    history = read_history(job, cache)
    assert sorted(zip(history["run"], history["epoch"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert "kd" in history and history["kd"].notna().all()
    assert "run" not in read_history(single, cache)
