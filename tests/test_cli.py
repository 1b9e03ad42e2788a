"""The `cmkd` command: --version, and output piped into a reader that stops early."""
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

import cmkd
from cmkd.cli import main, version


def _env():
    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [lib] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as code:
        main(["--version"])
    assert code.value.code == 0
    assert capsys.readouterr().out == f"cmkd {version()}\n"
    try:
        assert version() == metadata.version("cmkd")
    except metadata.PackageNotFoundError:
        assert version() == cmkd.__version__


def test_version_falls_back_to_the_package_attribute(monkeypatch):
    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", absent)
    assert version() == cmkd.__version__


def _fill_cache(cache, n):
    """``n`` finished job folders: enough `cmkd cache list` lines to overflow a pipe's buffer."""
    for i in range(n):
        folder = cache / f"{i:064x}"
        folder.mkdir(parents=True)
        (folder / "job.json").write_text(json.dumps({"kind": "student", "dataset": "avdigits",
                                                     "method": "kd", "seed": i}))
        (folder / "complete.json").write_text("{}")


def test_output_piped_to_a_reader_that_stops_is_quiet(tmp_path):
    """`cmkd cache list | head -1`: the reader takes one line and closes the pipe while cmkd is
    still writing (its output is larger than the pipe holds, so it blocks until then)."""
    _fill_cache(tmp_path / "cache", 3000)
    proc = subprocess.Popen([sys.executable, "-m", "cmkd.cli", "cache", "list", "--cache",
                             str(tmp_path / "cache")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert first.startswith(b"job cache ")
    assert err == b"", err.decode(errors="replace")
    assert proc.returncode == 141  # as a Unix tool killed by SIGPIPE: 128 + 13


def test_a_broken_pipe_that_is_not_stdout_is_not_hidden():
    """A BrokenPipeError while stdout's reader is still there (a worker's pipe) is an error."""
    code = ("import sys, cmkd.cli as cli\n"
            "def broken(argv):\n"
            "    print('some output')\n"
            "    raise BrokenPipeError(32, \"a worker's pipe\")\n"
            "cli._main = broken\n"
            "sys.exit(cli.main([]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert res.returncode == 1 and res.stdout == "some output\n"
    assert "BrokenPipeError: [Errno 32] a worker's pipe" in res.stderr


def test_reproduce_refresh_jobs_reaches_reproduce(monkeypatch):
    import cmkd.reproduce

    seen = {}

    def fake(profile, only, force, overrides=None, refresh_jobs=False, **other):
        seen.update(profile=profile, only=only, force=force, refresh_jobs=refresh_jobs)
        return 0

    monkeypatch.setattr(cmkd.reproduce, "reproduce", fake)
    assert main(["reproduce", "--profile", "smoke", "--only", "06", "--refresh-jobs"]) == 0
    assert seen == {"profile": "smoke", "only": ["06"], "force": False, "refresh_jobs": True}
    assert main(["reproduce", "--only", "06"]) == 0 and seen["refresh_jobs"] is False
