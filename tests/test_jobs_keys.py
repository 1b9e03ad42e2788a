"""What a job's key covers (cmkd.jobs.keys): for each kind of edit, which jobs of a small grid
get a new key, i.e. run again (run_jobs runs exactly the keys it does not find in the cache).

The code edits are made in a copy of the package (the key reads the files of ``keys._PACKAGE``);
user modules are written to a temporary folder on sys.path.  The expected sets are what the
grid's jobs import: a method's module is run by its jobs only, a loader by its dataset's jobs
(and by the students of its teachers), the runner by all."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import cmkd.engine
from cmkd import data, methods
from cmkd.jobs import Job, keys, run_jobs
from cmkd.jobs import cache as jc
from cmkd.jobs.run import REFRESH_ENV
from cmkd.methods.base import REGISTRY
from cmkd.runtime import torch_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """Every test starts and ends with nothing remembered, its fingerprints in its own cache."""
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(REFRESH_ENV, raising=False)
    keys.forget()
    yield
    keys.forget()


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """A copy of the cmkd package whose files the keys read."""
    copy = tmp_path / "pkg" / "cmkd"
    shutil.copytree(ROOT / "lib" / "cmkd", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(keys, "_PACKAGE", copy)
    return copy


def grid() -> dict[str, Job]:
    """New job objects (a key is computed once per object): two datasets, three methods."""
    a_t = Job("avdigits", "avdigits_cnn", ("image",), kind="teacher",
              model_options={"modality": "image"}, seed=7)
    m_t = Job("mfeat", "mlp", ("fou",), kind="teacher",
              model_options={"in_features": 76, "classes": 10}, seed=7)
    a = dict(dataset="avdigits", model="avdigits_cnn", inputs=("audio",),
             model_options={"modality": "audio"}, teacher=a_t)
    m = dict(dataset="mfeat", model="mlp", inputs=("fac",),
             model_options={"in_features": 216, "classes": 10}, teacher=m_t)
    return {"avdigits teacher": a_t, "avdigits kd": Job(method="kd", **a),
            "avdigits dkd": Job(method="dkd", **a), "mfeat teacher": m_t,
            "mfeat kd": Job(method="kd", **m)}


def rerun(edit, make=grid) -> set[str]:
    """The names of the jobs of ``make()`` whose key changes with ``edit()``."""
    keys.forget()
    before = {name: job.key for name, job in make().items()}
    edit()
    keys.forget()
    after = {name: job.key for name, job in make().items()}
    return {name for name in before if before[name] != after[name]}


def append(path: Path, text: str = "\n# an edit\n") -> None:
    with open(path, "a") as fh:
        fh.write(text)


ALL = set(grid())
AVDIGITS = {"avdigits teacher", "avdigits kd", "avdigits dkd"}


# ----------------------------------------------------------------------------- code
def test_a_method_module_reruns_that_methods_jobs_only(package):
    assert rerun(lambda: append(package / "methods" / "kd.py")) == {"avdigits kd", "mfeat kd"}
    assert rerun(lambda: append(package / "methods" / "dkd.py")) == {"avdigits dkd"}
    # a loss module counts for the methods that import it (DKD's loss: DKD only)
    assert rerun(lambda: append(package / "distill" / "dkd.py")) == {"avdigits dkd"}


def test_a_loader_or_its_embedded_data_reruns_that_datasets_jobs_only(package):
    assert rerun(lambda: append(package / "data" / "avdigits.py")) == AVDIGITS
    assert rerun(lambda: append(package / "data" / "embedded" / "mfeat.npz", "x")) == {
        "mfeat teacher", "mfeat kd"}


def test_a_model_module_reruns_the_jobs_of_that_model(package):
    assert rerun(lambda: append(package / "models" / "mlp.py")) == {"mfeat teacher", "mfeat kd"}


def test_the_runner_reruns_everything_and_orchestration_nothing(package):
    assert rerun(lambda: append(package / "engine.py")) == ALL
    assert rerun(lambda: append(package / "jobs" / "run.py")) == ALL

    def orchestration():
        for rel in ("reporting.py", "reproduce.py", "cli.py", "params.py", "jobs/cache.py",
                    "jobs/executors.py", "jobs/builders.py", "verdicts.py",
                    "experiments/__init__.py", "methods/c2kd.py", "data/cremad.py",
                    "models/resnet.py", "distill/c2kd.py"):
            append(package / rel)

    assert rerun(orchestration) == set()


# ----------------------------------------------------------------------------- environment
def test_loader_workers_and_the_same_device_type_rerun_nothing():
    here = keys.device_type("auto")

    def variants():
        return {name: job.replace(workers=3, device=here,
                                  teacher=None if job.teacher is None else
                                  job.teacher.replace(workers=2, device=here))
                for name, job in grid().items()}

    before = {name: job.key for name, job in grid().items()}
    assert {name: job.key for name, job in variants().items()} == before
    other = "cpu" if here != "cpu" else "cuda"  # another device type is another job
    assert grid()["avdigits teacher"].replace(device=other).key != before["avdigits teacher"]


def test_torch_or_the_locked_compute_packages_rerun_everything(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.lock"
    shutil.copy(ROOT / "requirements.lock", lock)
    monkeypatch.setattr(keys, "lock_path", lambda: lock)
    text = lock.read_text()
    assert "\ntorch==" in text and "\npytest==" in text

    def pin(name: str, version: str):
        return lambda: lock.write_text("\n".join(
            f"{name}=={version} \\" if line.startswith(f"{name}==") else line
            for line in text.splitlines()) + "\n")

    assert rerun(pin("torch", "9.9.9")) == ALL
    lock.write_text(text)
    assert rerun(pin("numpy", "0.0.1")) == ALL
    lock.write_text(text)
    assert rerun(pin("pytest", "0.0.1")) == set()  # a test runner computes nothing
    lock.write_text(text)
    assert rerun(lambda: monkeypatch.setattr(torch, "__version__", "9.9.9+other")) == ALL


# ----------------------------------------------------------------------------- data
def _folder(root: Path, rows: str) -> Path:
    root.mkdir(parents=True)
    (root / "texts").mkdir()
    (root / "train.tsv").write_text(rows)
    (root / "texts" / "a.txt").write_text("some text")
    (root / ".DS_Store").write_text("ignored")
    return root


@pytest.fixture
def users(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path for user modules."""
    folder = tmp_path / "user"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def real_grid(tmp_path: Path):
    crisis, cremad = tmp_path / "crisismmd", tmp_path / "cremad"

    def make() -> dict[str, Job]:
        text = dict(dataset="crisismmd", model="mlp", inputs=("text",), data_root=str(crisis),
                    model_options={"in_features": 16, "classes": 8})
        return {"crisis enc_a": Job(dataset_options={"text_encoder": "enc_a:text"}, **text),
                "crisis enc_b": Job(dataset_options={"text_encoder": "enc_b:text"}, **text),
                "cremad": Job("cremad", "mlp", ("audio",), data_root=str(cremad),
                              model_options={"in_features": 8, "classes": 6})}

    return crisis, cremad, make


def test_relabelled_data_or_a_user_encoder_reruns_their_jobs_only(tmp_path, users):
    crisis, cremad, make = real_grid(tmp_path)
    _folder(crisis, "id\tlabel\n1\tnot_humanitarian\n")
    _folder(cremad, "file,label\nx.wav,ANG\n")
    for name in ("enc_a", "enc_b"):
        (users / f"{name}.py").write_text("def text(s):\n    return s\n")
    assert rerun(lambda: (crisis / "train.tsv").write_text("id\tlabel\n1\tinfrastructure\n"),
                 make) == {"crisis enc_a", "crisis enc_b"}
    assert rerun(lambda: (cremad / "texts" / "b.txt").write_text("new file"), make) == {"cremad"}
    assert rerun(lambda: append(users / "enc_a.py"), make) == {"crisis enc_a"}
    assert "enc_a" not in sys.modules and "enc_b" not in sys.modules  # found, never imported
    # hidden files and an unchanged rewrite change nothing
    assert rerun(lambda: (crisis / ".DS_Store").write_text("other"), make) == set()
    assert rerun(lambda: (crisis / "train.tsv").write_text(
        (crisis / "train.tsv").read_text()), make) == set()


def test_a_fingerprint_is_remembered_on_disk_and_reread_when_a_file_changes(tmp_path):
    root = _folder(tmp_path / "data", "id\tlabel\n1\ta\n")
    store = tmp_path / "store"
    true = keys.data_fingerprint(root, store)
    [memo] = store.iterdir()
    saved = memo.read_text()
    # a remembered (size, mtime) is trusted: planted hashes show that the files were not read
    planted = saved.replace(keys.file_sha256.__wrapped__(str(root / "train.tsv")), "0" * 64)
    assert planted != saved
    memo.write_text(planted)
    keys.forget()
    assert keys.data_fingerprint(root, store) != true
    keys.forget()
    later = time.time() + 5
    os.utime(root / "train.tsv", (later, later))  # same bytes, new mtime: read again
    assert keys.data_fingerprint(root, store) == true
    keys.forget()
    assert keys.data_fingerprint(tmp_path / "nothing", store) == "absent"


# ----------------------------------------------------------------------------- registries
def test_a_user_method_or_loader_module_reruns_its_jobs_only(tmp_path, users):
    (users / "my_method.py").write_text(textwrap.dedent("""\
        from cmkd.methods.base import Method, register


        @register
        class Mine(Method):
            name = "mine_for_keys"
            needs_teacher = False

            def step(self, batch, epoch):
                ce = self.supervised_loss(self.student_forward(batch), batch["label"])
                return {"total": ce, "ce": ce.detach()}
        """))
    (users / "my_loader.py").write_text(textwrap.dedent("""\
        from cmkd.data import load


        def my_load(root, split="train"):
            return load("avdigits", None, split)
        """))
    importlib.import_module("my_method")
    loader = importlib.import_module("my_loader")
    data.register("avdigits_mine", loader.my_load, classes=10)
    try:
        def make():
            base = dict(model="avdigits_cnn", inputs=("image",), kind="teacher",
                        model_options={"modality": "image"})
            return {"mine": Job("avdigits", method="mine_for_keys", **base),
                    "nokd": Job("avdigits", **base),
                    "my data": Job("avdigits_mine", **base)}

        assert "my_method" in [m.__module__ for m in methods.REGISTRY.values()]
        assert rerun(lambda: append(users / "my_method.py"), make) == {"mine"}
        assert rerun(lambda: append(users / "my_loader.py"), make) == {"my data"}
    finally:
        REGISTRY.pop("mine_for_keys", None)
        data.unregister("avdigits_mine")
        sys.modules.pop("my_method", None)
        sys.modules.pop("my_loader", None)


# ----------------------------------------------------------------------------- running
@pytest.fixture
def fits(monkeypatch):
    calls = []
    real = cmkd.engine.fit

    def counting(method, *args, **kwargs):
        calls.append(method.name)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(cmkd.engine, "fit", counting)
    return calls


def test_run_jobs_reruns_what_the_keys_say_and_refresh_reruns_each_once(tmp_path, fits,
                                                                          monkeypatch):
    cache = tmp_path / "cache"
    t = Job("avdigits", "avdigits_cnn", ("image",), kind="teacher", batch_size=256,
            model_options={"modality": "image"}, seed=7)
    s = Job("avdigits", "avdigits_cnn", ("audio",), method="kd", teacher=t, batch_size=256,
            model_options={"modality": "audio"})
    with torch_threads(1):
        first = run_jobs([s], cache=cache, progress=False)
        assert fits == ["nokd", "kd"]
        # other loader workers, the device type it had: served from the cache
        same = s.replace(workers=1, device=keys.device_type("auto"),
                         teacher=t.replace(device=keys.device_type("auto")))
        run_jobs([same], cache=cache, progress=False)
        assert fits == ["nokd", "kd"]
        stored = jc.finished_at(cache, s.key)
        # refresh: both jobs (the teacher too) again, the results replaced by the new ones
        again = run_jobs([s], cache=cache, progress=False, refresh=True)
        assert fits == ["nokd", "kd"] * 2
        assert jc.finished_at(cache, s.key) > stored and jc.has(cache, s.key)
        assert again["test_at_best_val"].tolist() == first["test_at_best_val"].tolist()
        # the environment variable of `cmkd reproduce --refresh-jobs`: a job stored since
        # its time is not run again (a job shared by two notebooks runs once)
        monkeypatch.setenv(REFRESH_ENV, repr(time.time()))
        run_jobs([s], cache=cache, progress=False)
        run_jobs([s], cache=cache, progress=False)
        assert fits == ["nokd", "kd"] * 3
    monkeypatch.setenv(REFRESH_ENV, "soon")
    with pytest.raises(ValueError, match="CMKD_REFRESH_JOBS"):
        run_jobs([s], cache=cache, progress=False)
