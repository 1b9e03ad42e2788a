"""`cmkd reproduce` under interruption, in real subprocesses stopped by real signals: Ctrl-C
(SIGINT) leaves the previous artefacts and REPORT.md exactly as they were and says so in one
line; SIGKILL leaves nothing a rerun trusts; a second reproduce of the same profile is refused;
leftovers are removed by the next run.

Nothing here depends on the machine's speed: the test notebook saves its first table, then (when
its ``release`` parameter names a file) says so in a file and waits for ``release`` to exist.
The interrupted runs never create it, so the notebook is certainly still running when the
signal comes; the runs that must succeed pass ``release: ''`` and do not wait.  Every wait of
the test itself polls for an event with a generous deadline."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from cmkd.jobs.executors import die_with_parent

NB = "00_sleepy"
TIMEOUT = 600  # seconds: a generous bound on any single wait, never a synchronisation

MODULE = '''
from dataclasses import dataclass, field
from cmkd.params import spec

@dataclass(frozen=True)
class Config:
    release: str = field(metadata=spec("a file the notebook waits for between its two "
                                       "tables ('' does not wait)"))
    value: int = field(metadata=spec("the number it saves", low=0))
'''

RUNNER = '''
import sys
from cmkd import experiments, cli
experiments.NOTEBOOKS["00_sleepy"] = "cmkd_test_sleepy"
sys.exit(cli.main(sys.argv[1:]))
'''


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "smoke"\nrelease = ""\nvalue = 1',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(textwrap.dedent('''
            import os
            import time
            from pathlib import Path
            import pandas as pd
            from cmkd.reporting import Report
            report = Report("00_sleepy", profile, "a notebook that waits for a file")
            report.save_table(pd.DataFrame({"value": [value]}), "sleepy_first", "first",
                              "nothing")
            if release:
                # tell the test that this kernel (its pid) now waits, then wait for the file
                waiting = Path(release + ".waiting")
                Path(release + ".tmp").write_text(str(os.getpid()))
                os.replace(release + ".tmp", waiting)
                while not Path(release).exists():
                    time.sleep(0.05)
            report.save_table(pd.DataFrame({"value": [value * 2]}), "sleepy_second", "second",
                              "nothing")''')),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "project"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "params/smoke").mkdir(parents=True)
    nbformat.write(_notebook(), proj / f"notebooks/{NB}.ipynb")
    _set_release(proj, "")
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods/cmkd_test_sleepy.py").write_text(MODULE)
    (tmp_path / "mods/runner.py").write_text(RUNNER)
    yield proj
    # a failed test must not leave a run (or its kernel) waiting for a file that never comes
    for proc in _STARTED.pop(proj, []):
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    for marker in tmp_path.glob("*.waiting"):
        _kill_if_kernel(int(marker.read_text()))


_STARTED: dict[Path, list[subprocess.Popen]] = {}


def _env(project):
    env = {k: v for k, v in os.environ.items() if k != "CMKD_ROOT"}
    mods = str(project.parent / "mods")
    env["PYTHONPATH"] = os.pathsep.join([mods] + [p for p in [env.get("PYTHONPATH")] if p])
    env["TQDM_DISABLE"] = "1"
    return env


def _start(project, *args):
    proc = subprocess.Popen([sys.executable, str(project.parent / "mods/runner.py"), "reproduce",
                             "--profile", "smoke", "--only", "00", *args], cwd=project,
                            env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=die_with_parent)
    _STARTED.setdefault(project, []).append(proc)
    return proc


def _run(project, *args):
    proc = _start(project, *args)
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def _release(project) -> Path:
    """The file the interrupted runs' notebook waits for; no test creates it."""
    return project.parent / "release"


def _set_release(project, release):
    """The params file: ``release: ''`` runs straight through, a path makes the notebook wait."""
    (project / f"params/smoke/{NB}.yaml").write_text(
        f"release: {json.dumps(str(release))}\nvalue: 1\n")


def _published(project):
    """The published artefacts and manifests (REPORT.md apart: a stop rebuilds it)."""
    out = project / "reports/smoke"
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()
            and not {".state", "notebooks", ".staging"} & set(p.parts)
            and p.name not in (".lock", "REPORT.md")}


def _wait_running(project, proc) -> int:
    """Until the notebook's kernel has written its first table to the staging folder and waits
    for the release file; returns the kernel's pid."""
    staged = project / f"reports/smoke/.staging/{NB}/tables/sleepy_first.csv"
    waiting = Path(str(_release(project)) + ".waiting")
    _until(lambda: waiting.is_file(), "the notebook never reached its wait", proc)
    assert staged.is_file(), "the notebook waits but its first table is not staged"
    return int(waiting.read_text())


def _until(condition, message, proc=None, timeout=TIMEOUT):
    """Poll until ``condition()`` holds; fail with ``message`` after ``timeout`` seconds (or at
    once if ``proc``, which must keep running meanwhile, ends)."""
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{message}: the run ended with status {proc.returncode}\n"
                                 f"{out}\n{err}")
        assert time.monotonic() < end, f"{message} (waited {timeout} s)"
        time.sleep(0.1)


def _papermill_alive(project):
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "papermill" in line and str(project) in line]


def _ps(pid, field) -> str:
    return subprocess.run(["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True,
                          text=True).stdout.strip()


def _alive(pid) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as ended)."""
    state = _ps(pid, "stat")
    return bool(state) and not state.startswith("Z")


def _kill_if_kernel(pid):
    if "ipykernel" in _ps(pid, "args"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ctrl_c_kill_and_a_second_run(project):
    code, out, err = _run(project)
    assert code == 0, err
    before = _published(project)
    report = (project / "reports/smoke/REPORT.md").read_bytes()
    assert "tables/sleepy_second.csv" in before and b"stale" not in report
    manifest = json.loads((project / f"reports/smoke/manifest/{NB}.json").read_text())
    prov = manifest["provenance"]
    for key in ("commit", "dirty", "lock_sha256", "python", "torch", "cuda", "device",
                "wall_seconds", "peak_rss_mib"):
        assert key in prov
    assert prov["peak_rss_mib"] > 10 and prov["wall_seconds"] > 0 and prov["device"] == "cpu"
    # what the run cost (make bench ONLY=notebooks): papermill and its kernel used CPU time, the
    # notebook trains no job, and the load average is the machine's three
    assert 0 < prov["cpu_seconds"] and prov["jobs_trained"] == 0
    assert len(prov["load_average"]) == 3
    assert b"## Environment" in report

    # Ctrl-C while the notebook runs: one line, the artefacts as they were, REPORT.md rebuilt
    # with them flagged stale (made with other params, last run interrupted), the next run
    # redoes it
    _set_release(project, _release(project))  # a file that never comes: the notebook waits
    proc = _start(project)
    kernel = _wait_running(project, proc)
    code2, _, err2 = _run(project)  # a second reproduce of the same profile is refused
    assert code2 != 0 and "another reproduce of profile 'smoke' is running" in err2
    assert proc.poll() is None, "the notebook must still be waiting for its release file"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and f"interrupted while running {NB}" in lines[0]
    assert _published(project) == before
    text = (project / "reports/smoke/REPORT.md").read_text()
    assert text != report.decode() and f"## {NB}: a notebook that waits for a file (stale)" in text
    assert (f"**(stale: its last run was interrupted; params/smoke/{NB}.yaml changed since these "
            "artefacts were made)**") in text
    assert not (project / "reports/smoke/.staging").exists()
    assert not list((project / "reports/smoke/notebooks").glob(".*.ipynb"))
    _until(lambda: not _papermill_alive(project), "papermill still runs after Ctrl-C")
    _until(lambda: not _alive(kernel), "the notebook's kernel still runs after Ctrl-C")
    state = json.loads((project / f"reports/smoke/.state/{NB}.json").read_text())
    assert state["ok"] is False

    # SIGKILL: leftovers stay, but nothing that a rerun trusts
    Path(str(_release(project)) + ".waiting").unlink()
    proc = _start(project)
    kernel = _wait_running(project, proc)
    assert proc.poll() is None, "the notebook must still be waiting for its release file"
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    _until(lambda: not _papermill_alive(project),
           "the papermill child must die with its parent")
    _until(lambda: not _alive(kernel), "the notebook's kernel must end with papermill")
    assert (project / "reports/smoke/.staging").exists()
    assert _published(project) == before

    # a rerun without --force redoes the notebook and removes what the killed run left
    _set_release(project, "")
    code, out, err = _run(project)
    assert code == 0, err
    assert "removed reports/smoke/.staging (left by an interrupted run)" in err
    assert f"{NB}: ok in" in out and "skipped" not in out
    assert not (project / "reports/smoke/.staging").exists()
    assert not list((project / "reports/smoke/notebooks").glob(".*.ipynb"))
    assert not _release(project).exists()


def test_a_failure_then_a_success_removes_the_failed_copy_and_files_follow_the_umask(project):
    _set_release(project, "")
    path = project / f"notebooks/{NB}.ipynb"
    good = path.read_bytes()
    nb = _notebook()
    nb.cells.append(nbformat.v4.new_code_cell("x = 1\nundefined_name + 1"))
    nbformat.write(nb, path)
    code, out, err = _run(project)
    assert code == 1
    assert "FAILED at cell 3, line 2 `undefined_name + 1`: NameError" in out
    failed = project / f"reports/smoke/notebooks/{NB}.failed.ipynb"
    assert failed.is_file()
    path.write_bytes(good)
    old = os.umask(0o022)
    try:
        code, out, err = _run(project)
    finally:
        os.umask(old)
    assert code == 0, err
    assert not failed.exists()
    for name in ("tables/sleepy_first.csv", f"manifest/{NB}.json", "REPORT.md"):
        mode = (project / "reports/smoke" / name).stat().st_mode & 0o777
        assert mode == 0o644, f"{name}: mode {oct(mode)}"


def test_unwritable_reports_folder_is_one_line(project):
    (project / "reports").write_text("not a folder")
    code, out, err = _run(project)
    assert code != 0
    assert "Traceback" not in err
    assert err.strip().startswith("cmkd reproduce: cannot write under")
    assert len(err.strip().splitlines()) == 1
