"""What `cmkd reproduce` publishes stays true: scratch runs outside it, published files checked
by their sha256 before a notebook is skipped, any folder of params/ as a profile, `--set`
overrides, stale flags in REPORT.md, one line for a file that cannot be written, and the
progress of a notebook's bars printed while it runs.

The notebook runs use one tiny notebook (a tqdm loop, then a table) on a profile of the test's
own, ``mine``; the other tests need no kernel."""
import errno
import hashlib
import json
import re
import sys
import types
from dataclasses import dataclass, field

import nbformat
import pandas as pd
import pytest

import cmkd.reproduce as rep
from cmkd import experiments
from cmkd.params import spec
from cmkd.reporting import STAGING_ENV, Report, profiles, write_report
from cmkd.reproduce import parse_overrides, reproduce, stale_reasons, validate_all

NB = "00_tiny"
NB_SOURCE = '''
import time
import pandas as pd
from tqdm.auto import tqdm
from cmkd.reporting import Report
report = Report("00_tiny", profile, "a tiny notebook")
for step in tqdm(range(3), desc="work", unit="step"):
    time.sleep(0.3)
if fail:
    raise RuntimeError("planted failure")
report.save_table(pd.DataFrame({"value": [value]}), "tiny", "a table", "nothing")
'''


@dataclass(frozen=True)
class _TinyConfig:
    value: int = field(metadata=spec("the number saved", low=0))
    fail: bool = field(metadata=spec("raise before saving"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    proj = tmp_path / "project"
    (proj / "notebooks").mkdir(parents=True)
    (proj / "params/mine").mkdir(parents=True)
    (proj / "params/smoke").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "mine"\nvalue = 1\nfail = False',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(NB_SOURCE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, proj / f"notebooks/{NB}.ipynb")
    (proj / f"params/mine/{NB}.yaml").write_text("value: 1\nfail: false\n")
    module = types.ModuleType("cmkd_test_tiny")
    module.Config = _TinyConfig
    monkeypatch.setitem(sys.modules, "cmkd_test_tiny", module)
    monkeypatch.setitem(experiments.NOTEBOOKS, NB, "cmkd_test_tiny")
    monkeypatch.delenv(STAGING_ENV, raising=False)
    return proj


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _publish_by_hand(project, value=1):
    """reports/mine/ as a successful reproduce of 00_tiny leaves it, without a kernel."""
    out = project / "reports/mine"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "tables/tiny.csv").write_text(f"value\n{value}\n")
    record = {"notebook": NB, "title": "a tiny notebook", "profile": "mine",
              "source": f"notebooks/{NB}.ipynb", "params": f"params/mine/{NB}.yaml",
              "figures": [], "comparisons": [], "claims": [],
              "tables": [{"name": "tiny", "caption": "a table", "reproduces": "nothing",
                          "files": ["tables/tiny.csv"]}],
              "params_sha256": _sha(project / f"params/mine/{NB}.yaml"),
              "sha256": {"tables/tiny.csv": _sha(out / "tables/tiny.csv")}}
    (out / "manifest").mkdir(exist_ok=True)
    (out / f"manifest/{NB}.json").write_text(json.dumps(record))
    (out / ".state").mkdir(exist_ok=True)
    (out / f".state/{NB}.json").write_text(json.dumps({
        "inputs": rep.inputs_hash(project, NB, "mine"), "ok": True,
        "manifest_sha256": _sha(out / f"manifest/{NB}.json")}))
    return out


# ----------------------------------------------------------------------------- scratch runs
def test_an_interactive_report_writes_to_scratch_and_leaves_the_report_alone(project, capsys):
    out = _publish_by_hand(project)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    report = Report(NB, "mine", "a tiny notebook", root=project)
    assert capsys.readouterr().out == ""  # the stored outputs of the notebooks stay as they were
    saved = report.save_table(pd.DataFrame({"value": [7]}), "tiny", "a table", "nothing")
    assert saved.value.tolist() == [7]
    assert {p: p.read_bytes() for p in out.rglob("*")
            if p.is_file() and "scratch" not in p.parts} == before
    assert (out / "scratch/tables/tiny.csv").read_text() == "value\n7\n"
    assert json.loads((out / f"scratch/manifest/{NB}.json").read_text())["tables"]


def test_under_reproduce_a_report_writes_to_its_staging_folder(project, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staged"))
    report = Report(NB, "mine", "a tiny notebook", root=project)
    report.save_table(pd.DataFrame({"value": [7]}), "tiny", "a table", "nothing")
    assert capsys.readouterr().out == ""
    assert (tmp_path / "staged/tables/tiny.csv").is_file()
    assert not (project / "reports").exists()


# ----------------------------------------------------------------------------- profiles, --set
def test_every_folder_of_params_is_a_profile(project):
    assert profiles(project) == ["mine", "smoke"]
    with pytest.raises(SystemExit) as err:
        reproduce("nosuch", root=project)
    assert str(err.value) == ("cmkd reproduce: no profile 'nosuch' (no folder params/nosuch/); "
                              "the profiles are the folders of params/: mine, smoke")
    for bad in ("../mine", "bench", ".hidden"):
        with pytest.raises(SystemExit, match="cmkd reproduce: --profile: "):
            reproduce(bad, root=project)


def test_set_values_are_read_as_yaml_per_notebook():
    available = ["00_tiny", "06_c2kd"]
    assert parse_overrides(["06.epochs=3", "06_c2kd.directions=[a2v, v2a]", "0.value=x"],
                           available) == {"06_c2kd": {"epochs": 3, "directions": ["a2v", "v2a"]},
                                          "00_tiny": {"value": "x"}}
    for item, message in [("06epochs=3", "expected NN.PARAM=VALUE"),
                          ("07.epochs=3", "no notebook matches '07'"),
                          ("06.profile=paper", "'profile' is chosen by --profile"),
                          ("06.epochs=[1", "the value is not valid YAML")]:
        with pytest.raises(SystemExit, match=re.escape(message)):
            parse_overrides([item], available)
    with pytest.raises(SystemExit, match="gives 06_c2kd's 'epochs' twice"):
        parse_overrides(["06.epochs=3", "6.epochs=4"], available)


def test_set_values_are_checked_like_the_params_file(project):
    assert validate_all(project, "mine", [NB], {NB: {"value": 5}}) == {
        NB: {"value": 5, "fail": False}}
    with pytest.raises(SystemExit) as err:
        validate_all(project, "mine", [NB], {NB: {"value": -1}})
    assert (f"params/mine/{NB}.yaml with --set value=-1: parameter 'value': " in str(err.value))
    with pytest.raises(SystemExit, match="did you mean 'value'"):
        validate_all(project, "mine", [NB], {NB: {"valeu": 5}})


def test_set_must_name_a_selected_notebook(project):
    (project / "notebooks/01_other.ipynb").write_bytes(
        (project / f"notebooks/{NB}.ipynb").read_bytes())
    (project / "params/mine/01_other.yaml").write_text("value: 1\nfail: false\n")
    with pytest.raises(SystemExit, match="--set names 00_tiny, which --only does not select"):
        reproduce("mine", ["01"], root=project, overrides=["00.value=2"])


# ----------------------------------------------------------------------------- stale flags
def test_report_flags_changed_params_failed_runs_and_edited_files_as_stale(project):
    out = _publish_by_hand(project)
    assert stale_reasons(project, "mine", [NB]) == {}
    text = write_report("mine", [NB], project, stale={}).read_text()
    assert "stale" not in text.lower()

    (project / f"params/mine/{NB}.yaml").write_text("value: 2\nfail: false\n")
    state = json.loads((out / f".state/{NB}.json").read_text())
    (out / f".state/{NB}.json").write_text(json.dumps(dict(state, ok=False)))
    (out / "tables/tiny.csv").write_text("value\n9\n")
    why = stale_reasons(project, "mine", [NB])[NB]
    assert why == ("its last run failed; params/mine/00_tiny.yaml changed since these artefacts "
                   "were made; files changed since `cmkd reproduce` published them "
                   "(tables/tiny.csv)")
    text = write_report("mine", [NB], project, stale={NB: why}).read_text()
    assert f"- [{NB}](#{NB}): a tiny notebook **(stale: {why})**" in text
    assert f"## {NB}: a tiny notebook (stale)" in text
    assert f"> **Stale**: {why}; `cmkd reproduce --profile mine --only 00` redoes them." in text
    assert "the scorecard below still counts them): [00_tiny](#00_tiny)\n" in text

    (out / f".state/{NB}.json").write_text(json.dumps(dict(state, ok=False, running=True)))
    assert stale_reasons(project, "mine", [NB])[NB].startswith("its last run was interrupted")


def test_overrides_are_shown_beside_the_params_file(project):
    out = _publish_by_hand(project)
    record = json.loads((out / f"manifest/{NB}.json").read_text())
    record["overrides"] = {"value": 3, "tags": ["a", "b"]}
    (out / f"manifest/{NB}.json").write_text(json.dumps(record))
    text = write_report("mine", [NB], project).read_text()
    assert (f"params: [params/mine/{NB}.yaml](../../params/mine/{NB}.yaml) · overrides: "
            'value=3, tags=["a", "b"] · executed copy') in text


# ----------------------------------------------------------------------------- writes that fail
def test_a_reports_folder_that_cannot_be_written_is_found_before_any_compute(project, capsys):
    (project / "reports/mine").mkdir(parents=True)
    (project / "reports/mine/figures").write_text("a file where a folder should be")
    with pytest.raises(SystemExit) as err:
        reproduce("mine", root=project)
    assert str(err.value).startswith(
        f"cmkd reproduce: cannot write under {project}/reports/mine/figures: ")
    assert "\n" not in str(err.value)
    assert not (project / "reports/mine/.state").exists()


def _full_disk_at(monkeypatch, folder_name):
    """Every write through reproduce's atomic writer into a folder named ``folder_name`` fails
    as on a full disk (the error names no file, as a failing write's does)."""
    real = rep.atomic_write_bytes

    def write(path, data):
        if path.parent.name == folder_name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(rep, "atomic_write_bytes", write)


def test_a_full_disk_before_the_run_is_one_line_naming_the_file(project, capsys, monkeypatch):
    _full_disk_at(monkeypatch, ".state")
    assert reproduce("mine", root=project) == 1
    err = capsys.readouterr().err
    assert err == (f"cmkd reproduce: cannot write reports/mine/.state/{NB}.json: No space left "
                   "on device; free some space and rerun (what was published stays; the "
                   "notebook being published is redone)\n")
    assert (project / "reports/mine/REPORT.md").is_file()


# ----------------------------------------------------------------------------- with a kernel
def test_full_disk_while_publishing_is_one_line(project, capsys, monkeypatch):
    _full_disk_at(monkeypatch, "manifest")
    assert reproduce("mine", root=project) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"cmkd reproduce: cannot write reports/mine/manifest/{NB}.json: No "
                            "space left on device; free some space and rerun (what was "
                            "published stays; the notebook being published is redone)\n")
    assert "Traceback" not in captured.out
    state = json.loads((project / f"reports/mine/.state/{NB}.json").read_text())
    assert state["ok"] is False  # the next run redoes it
    assert not (project / "reports/mine/.staging").exists()


def test_publish_skip_tamper_override_fail(project, capsys, monkeypatch):
    out = project / "reports/mine"
    assert reproduce("mine", root=project) == 0
    printed = capsys.readouterr().out
    assert f"{NB}: ok in" in printed
    record = json.loads((out / f"manifest/{NB}.json").read_text())
    assert record["sha256"] == {p: _sha(out / p) for p in ("tables/tiny.csv", "tables/tiny.md")}
    assert record["params_sha256"] == _sha(project / f"params/mine/{NB}.yaml")
    assert "overrides" not in record
    published = {p: _sha(out / p) for p in ("tables/tiny.csv", "tables/tiny.md")}
    monkeypatch.setenv("TQDM_DISABLE", "1")

    assert reproduce("mine", root=project) == 0
    assert "skipped (inputs unchanged" in capsys.readouterr().out

    # an edited and a removed artefact: the notebook runs again and puts them back
    (out / "tables/tiny.csv").write_text("value\n99\n")
    (out / "tables/tiny.md").unlink()
    assert "files changed since" in stale_reasons(project, "mine", [NB])[NB]
    assert reproduce("mine", root=project) == 0
    printed = capsys.readouterr().out
    assert (f"  {NB}: artefacts changed since the last run (tables/tiny.csv, tables/tiny.md "
            "(removed)): rerunning") in printed
    assert f"{NB}: ok in" in printed
    assert {p: _sha(out / p) for p in published} == published
    assert "stale" not in (out / "REPORT.md").read_text().lower()

    # an override: not skipped, recorded, shown
    assert reproduce("mine", root=project, overrides=["00.value=3"]) == 0
    assert f"{NB}: ok in" in capsys.readouterr().out
    assert (out / "tables/tiny.csv").read_text() == "value\n3\n"
    record = json.loads((out / f"manifest/{NB}.json").read_text())
    assert record["overrides"] == {"value": 3}
    assert "· overrides: value=3 ·" in (out / "REPORT.md").read_text()
    assert reproduce("mine", root=project, overrides=["00.value=3"]) == 0
    assert "skipped (inputs unchanged" in capsys.readouterr().out

    # a failed run: the earlier artefacts stay, flagged stale in the contents and the section
    assert reproduce("mine", root=project, overrides=["00.fail=true"]) == 1
    printed = capsys.readouterr().out
    assert f"{NB}: FAILED at cell 2, line 9 `raise RuntimeError(" in printed
    assert (out / "tables/tiny.csv").read_text() == "value\n3\n"
    text = (out / "REPORT.md").read_text()
    assert f"- [{NB}](#{NB}): a tiny notebook **(stale: its last run failed)**" in text
    assert f"## {NB}: a tiny notebook (stale)" in text


def test_refresh_jobs_reruns_the_notebook_with_its_cached_jobs_stale(project, capsys,
                                                                     monkeypatch):
    """--refresh-jobs: the notebook runs although its inputs are unchanged, its kernel gets
    $CMKD_REFRESH_JOBS (the run's start time: run_jobs trains every job cached before it), and
    the manifest's provenance says so."""
    import os
    import time

    from cmkd.jobs.run import REFRESH_ENV

    monkeypatch.delenv(REFRESH_ENV, raising=False)
    path = project / f"notebooks/{NB}.ipynb"
    nb = nbformat.read(path, 4)
    nb.cells[1].source = ("import os\nfrom pathlib import Path\n"
                          "Path(os.environ['CMKD_ROOT'], 'refresh.txt').write_text("
                          f"os.environ.get({REFRESH_ENV!r}, 'unset'))\n" + nb.cells[1].source)
    nbformat.write(nb, path)
    out, seen = project / "reports/mine", project / "refresh.txt"
    assert reproduce("mine", root=project) == 0
    assert seen.read_text() == "unset"
    assert "refresh_jobs" not in json.loads((out / f"manifest/{NB}.json").read_text())[
        "provenance"]
    capsys.readouterr()
    start = time.time()
    assert reproduce("mine", root=project, refresh_jobs=True) == 0
    assert f"{NB}: ok in" in capsys.readouterr().out  # not skipped
    assert start <= float(seen.read_text()) <= time.time()
    record = json.loads((out / f"manifest/{NB}.json").read_text())
    assert record["provenance"]["refresh_jobs"] is True
    assert REFRESH_ENV not in os.environ
