"""The verified cache: every job folder carries a manifest (its key, every file's sha256); a
truncated, edited, deleted or copied file is caught on read, named in one line, moved to
quarantine/ and the job trained again; `cmkd cache verify` and `cmkd cache prune` act on bad
folders; where the cache is (a relative $CMKD_CACHE, a file in the way).  Tiny MLP jobs."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

import cmkd.engine
import cmkd.reporting
from cmkd import cli
from cmkd.jobs import cache as jc
from cmkd.jobs import load_model, run_jobs
from cmkd.reproduce import profile_lock
from cmkd.runtime import torch_threads
from test_jobs import mvd_teacher

ROOT = Path(__file__).resolve().parents[1]
A = mvd_teacher(runs=(), seed=1)
B = mvd_teacher(runs=(), seed=2)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, dict]:
    """A cache holding jobs A and B, trained once for the module, and their scores."""
    cache = tmp_path_factory.mktemp("pristine")
    with torch_threads(1):
        rows = run_jobs([A, B], cache=cache, progress=False)
    return cache, dict(zip(rows["key"], rows["test_at_best_val"]))


@pytest.fixture
def cache(pristine, tmp_path) -> Path:
    """A copy of the pristine cache of this test's own."""
    return Path(shutil.copytree(pristine[0], tmp_path / "cache"))


@pytest.fixture
def scores(pristine) -> dict:
    return pristine[1]


@pytest.fixture
def fits(monkeypatch) -> list:
    """The keys of the jobs trained (cmkd.engine.fit calls), one thread each."""
    calls = []
    real = cmkd.engine.fit

    def counting(method, *args, **kwargs):
        calls.append(method.name)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(cmkd.engine, "fit", counting)
    with torch_threads(1):
        yield calls


def aside(cache: Path) -> list[Path]:
    """The folders moved to quarantine/."""
    q = cache / jc.QUARANTINE
    return sorted(q.iterdir()) if q.is_dir() else []


def warned(capsys, key: str, *words: str) -> str:
    """The one warning line about job ``key`` (stderr), checked for ``words``."""
    lines = [line for line in capsys.readouterr().err.splitlines() if key[:12] in line]
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ----------------------------------------------------------------------------- the manifest
def test_store_writes_a_manifest_of_every_file(cache):
    for job in (A, B):
        path = cache / job.key
        manifest = json.loads((path / jc.MANIFEST).read_text())
        assert manifest["key"] == job.key and manifest["algorithm"] == "sha256"
        others = sorted(p.name for p in path.iterdir() if p.name != jc.MANIFEST)
        assert sorted(manifest["files"]) == others == sorted([*jc.JOB_FILES, jc.MARKER])
        for name, digest in manifest["files"].items():
            assert jc.sha256_file(path / name) == digest
        assert jc.check(path).state == "ok" and jc.has(cache, job.key)


# ----------------------------------------------------------------------------- caught on read
def test_truncated_result_is_named_moved_aside_and_recomputed(cache, scores, fits, capsys):
    truncate(cache / A.key / jc.RESULT)
    rows = run_jobs([A], cache=cache, progress=False)
    assert fits == ["nokd"], "the bad job was not trained again"
    assert rows["test_at_best_val"][0] == scores[A.key]
    line = warned(capsys, A.key, "is bad", "result.json does not match its checksum",
                  f"moved to {jc.QUARANTINE}/")
    [moved] = aside(cache)
    assert moved.name.startswith(A.key) and moved.name in line
    why = json.loads((moved / jc.WHY).read_text())
    assert why["key"] == A.key and "result.json" in why["problem"]
    assert jc.check(cache / A.key).state == "ok"


def test_a_read_names_the_bad_file(cache, capsys):
    truncate(cache / A.key / jc.RESULT)
    with pytest.raises(FileNotFoundError, match="result.json does not match its checksum"):
        jc.read_result(cache, A.key)
    warned(capsys, A.key, "result.json")
    assert not (cache / A.key).exists() and len(aside(cache)) == 1
    with pytest.raises(FileNotFoundError, match="has no finished result"):
        jc.read_rows(cache, A.key)  # now simply missing
    truncate(cache / B.key / jc.HISTORY)
    with pytest.raises(FileNotFoundError, match="history.csv does not match its checksum"):
        jc.history_file(cache, B.key)
    warned(capsys, B.key, "history.csv")


def test_an_edited_score_is_caught(cache, scores, fits, capsys):
    path = cache / A.key / jc.RESULT
    row = json.loads(path.read_text())
    row["test_at_best_val"] = 0.123
    path.write_text(json.dumps(row, indent=1) + "\n")
    rows = run_jobs([A], cache=cache, progress=False)
    assert fits == ["nokd"] and rows["test_at_best_val"][0] == scores[A.key] != 0.123
    warned(capsys, A.key, "result.json does not match its checksum")


def test_a_folder_copied_over_another_is_caught(cache, scores, fits, capsys):
    assert scores[A.key] != scores[B.key]
    shutil.rmtree(cache / B.key)
    shutil.copytree(cache / A.key, cache / B.key)  # cp -a .cache/jobs/<A> .cache/jobs/<B>
    rows = run_jobs([B], cache=cache, progress=False)
    assert fits == ["nokd"] and rows["test_at_best_val"][0] == scores[B.key]
    warned(capsys, B.key, f"checksums.json names job {A.key[:12]}", "another job's folder")
    assert jc.has(cache, A.key)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_checkpoint_is_named_and_recomputed(cache, fits, capsys, damage):
    path = cache / A.key / jc.CHECKPOINT
    if damage == "truncated":
        truncate(path)
        words = "does not match its checksum"
    else:
        path.unlink()
        words = "is missing"
    with pytest.raises(FileNotFoundError, match=f"checkpoint.pt {words}"):
        load_model(A, cache)
    warned(capsys, A.key, f"checkpoint.pt {words}")
    run_jobs([A], cache=cache, progress=False)
    assert fits == ["nokd"]
    assert not load_model(A, cache).training


def test_a_damaged_checkpoint_is_recomputed_by_run_jobs(cache, fits, capsys):
    truncate(cache / A.key / jc.CHECKPOINT)
    run_jobs([A, B], cache=cache, progress=False)
    assert fits == ["nokd"], "only the damaged job is trained again"
    warned(capsys, A.key, "checkpoint.pt does not match its checksum")


def test_a_deleted_result_is_named(cache, scores, fits, capsys):
    (cache / A.key / jc.RESULT).unlink()
    with pytest.raises(FileNotFoundError, match="result.json is missing"):
        jc.read_rows(cache, A.key)
    warned(capsys, A.key, "result.json is missing")
    (cache / B.key / jc.RESULT).unlink()
    rows = run_jobs([B], cache=cache, progress=False)  # not "did the executor run ...?"
    assert fits == ["nokd"] and rows["test_at_best_val"][0] == scores[B.key]
    warned(capsys, B.key, "result.json is missing")


# ----------------------------------------------------------------------------- legacy folders
def _legacy(cache: Path, job) -> None:
    """Make ``job``'s folder one written before manifests (as cmkd before them did)."""
    path = cache / job.key
    (path / jc.MANIFEST).unlink()
    marker = json.loads((path / jc.MARKER).read_text())
    del marker["manifest"]
    (path / jc.MARKER).write_text(json.dumps(marker) + "\n")


def test_a_deleted_manifest_does_not_pass_for_a_legacy_folder(cache, capsys):
    (cache / A.key / jc.MANIFEST).unlink()
    assert not jc.has(cache, A.key)
    warned(capsys, A.key, "checksums.json is missing")


def test_folders_without_a_manifest_are_used_when_sound(cache, scores, fits, capsys):
    _legacy(cache, A)
    _legacy(cache, B)
    rows = run_jobs([A, B], cache=cache, progress=False)
    assert fits == [] and list(rows["test_at_best_val"]) == [scores[A.key], scores[B.key]]
    assert jc.check(cache / A.key).state == "legacy" and capsys.readouterr().err == ""
    # what can be caught without checksums is: a copy (the rows' key), a cut checkpoint
    shutil.rmtree(cache / B.key)
    shutil.copytree(cache / A.key, cache / B.key)
    truncate(cache / A.key / jc.CHECKPOINT)
    assert not jc.has(cache, B.key) and not jc.has(cache, A.key)
    warned(capsys, B.key, f"result.json holds the rows of job {A.key[:12]}")
    moved = {p.name[:64]: p for p in aside(cache)}
    assert sorted(moved) == sorted([A.key, B.key])
    assert jc.check(moved[A.key]).problem == "checkpoint.pt is not a whole zip archive (truncated?)"


# ----------------------------------------------------------------------------- where the cache is
def test_a_relative_cmkd_cache_is_taken_from_the_project_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CMKD_ROOT", raising=False)
    monkeypatch.setenv("CMKD_CACHE", "relcache")
    monkeypatch.chdir(ROOT / "notebooks")  # where papermill runs a notebook
    assert jc.cache_dir() == ROOT / "relcache"
    monkeypatch.setenv("CMKD_ROOT", str(tmp_path))
    monkeypatch.chdir(ROOT)
    assert jc.cache_dir() == tmp_path.resolve() / "relcache"

    def nowhere():
        raise FileNotFoundError("no project")

    monkeypatch.setattr(cmkd.reporting, "repo_root", nowhere)  # an installed package alone
    monkeypatch.chdir(tmp_path)
    assert jc.cache_dir() == tmp_path / "relcache"
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "abs"))
    assert jc.cache_dir() == tmp_path / "abs"


def test_a_cache_path_that_is_a_file_stops_before_training(monkeypatch, tmp_path, fits, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    monkeypatch.setenv("CMKD_CACHE", str(afile))
    with pytest.raises(NotADirectoryError, match=r"afile \(\$CMKD_CACHE=.*\) is a file"):
        run_jobs([A], progress=False)
    with pytest.raises(NotADirectoryError, match="cannot be created: .*afile is a file"):
        run_jobs([A], cache=afile / "jobs", progress=False)
    assert fits == []
    assert cli.main(["cache", "list"]) == 2
    assert "cmkd cache list: the job cache" in capsys.readouterr().err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_cache_disk_stops_before_training(monkeypatch, tmp_path, fits, code):
    """The disk's answer is simulated where the probe writes (the tests may run as root, whom
    file modes do not stop); the real write path is the same os.write."""
    real_write = os.write

    def refused(fd, data):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(jc.TMP_PREFIX):
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(jc.os, "write", refused)
    with pytest.raises(OSError, match=rf"the job cache .*jobs cannot be written "
                                      rf"\({os.strerror(code)}\): no job was trained") as e:
        run_jobs([A], cache=tmp_path / "jobs", progress=False)
    assert e.value.errno == code and "\n" not in str(e.value)
    assert fits == []
    assert not [p for p in (tmp_path / "jobs").iterdir()]  # the probe removed


# ----------------------------------------------------------------------------- the commands
def test_cmkd_cache_verify(cache, capsys):
    path = cache / B.key / jc.RESULT
    row = json.loads(path.read_text())
    row["best_val"] = 1.0
    path.write_text(json.dumps(row))
    _legacy(cache, A)
    assert cli.main(["cache", "verify", "--cache", str(cache)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"bad {B.key[:12]} (teacher mvd nokd seed 2): result.json does not match "
                      "its checksum (changed or truncated since it was stored)")
    assert out[1].startswith(f"job cache {cache}: 2 finished job(s): 0 verified, 1 stored "
                             "before checksums") and ", 1 bad (--fix" in out[1]
    assert len(out) == 2 and aside(cache) == []  # nothing moved without --fix
    assert cli.main(["cache", "verify", "--cache", str(cache), "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"bad {A.key[:12]} (teacher mvd nokd seed 1): written before checksums" in out
    assert "2 bad" in out
    assert cli.main(["cache", "verify", "--cache", str(cache), "--fix"]) == 1
    out = capsys.readouterr().out
    assert f"bad {B.key[:12]}" in out and f"moved to {jc.QUARANTINE}/{B.key}" in out
    assert [p.name[:64] for p in aside(cache)] == [B.key] and not (cache / B.key).exists()
    assert cli.main(["cache", "verify", "--cache", str(cache), "--seal"]) == 0
    out = capsys.readouterr().out
    assert "1 finished job(s): 1 verified (1 sealed now), 0 bad, 1 in quarantine/" in out
    assert cli.main(["cache", "verify", "--cache", str(cache), "--strict"]) == 0
    assert jc.check(cache / A.key).state == "ok"
    (cache / A.key / jc.MANIFEST).unlink()  # a sealed folder does not turn legacy again
    assert jc.check(cache / A.key).problem == "checksums.json is missing"


def test_cmkd_cache_prune_removes_bad_and_quarantined_folders(cache, capsys, monkeypatch):
    monkeypatch.setenv("CMKD_ROOT", str(cache))  # no cmkd reproduce runs there
    truncate(cache / A.key / jc.HISTORY)
    assert cli.main(["cache", "prune", "--cache", str(cache), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (f"would remove {A.key[:12]} (bad: history.csv does not match its checksum" in out
            and "would remove 1 folder(s)" in out and (cache / A.key).exists())
    assert cli.main(["cache", "prune", "--cache", str(cache)]) == 0
    assert "removed 1 folder(s)" in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == [B.key]  # quarantine/ gone too
    assert not (cache / A.key).exists() and aside(cache) == [] and jc.has(cache, B.key)
    # a folder moved aside by a reader is removed by the next prune
    truncate(cache / B.key / jc.RESULT)
    assert not jc.has(cache, B.key) and len(aside(cache)) == 1
    capsys.readouterr()
    assert cli.main(["cache", "list", "--cache", str(cache)]) == 0
    assert f"1 bad folder(s) in {cache / jc.QUARANTINE}" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--cache", str(cache)]) == 0
    assert f"removed {B.key[:12]} (in quarantine/, result.json does not match" in \
        capsys.readouterr().out
    assert aside(cache) == []


def test_cmkd_cache_prune_keeps_finished_jobs_while_a_reproduce_runs(cache, capsys, monkeypatch,
                                                                     tmp_path):
    project = tmp_path / "project"
    monkeypatch.setenv("CMKD_ROOT", str(project))
    truncate(cache / A.key / jc.RESULT)
    with profile_lock(project.resolve(), "smoke"):
        assert cli.reproduce_running() == [f"profile smoke, pid {os.getpid()}"]
        assert cli.main(["cache", "prune", "--all", "--cache", str(cache)]) == 1
        err = capsys.readouterr().err
        assert f"is in use (cmkd reproduce (profile smoke, pid {os.getpid()}))" in err
        assert "add --force" in err and (cache / B.key).exists() and (cache / A.key).exists()
        assert cli.main(["cache", "prune", "--older-than", "0", "--cache", str(cache)]) == 1
        # the bad folder still goes: no reader uses it
        assert cli.main(["cache", "prune", "--cache", str(cache)]) == 0
        out, err = capsys.readouterr()
        assert "warning: the cache is in use" in err and "removed 1 folder(s)" in out
        assert sorted(p.name for p in cache.iterdir()) == [B.key]
        assert cli.main(["cache", "prune", "--all", "--force", "--cache", str(cache)]) == 0
        assert list(cache.iterdir()) == []
    assert cli.reproduce_running() == []
