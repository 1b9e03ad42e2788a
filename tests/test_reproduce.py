"""`cmkd reproduce` end to end on a copy of the project: papermill, reports, skipping, failures."""
import hashlib
import json
import os
import shutil
import sys
import types
from dataclasses import dataclass, field

import nbformat
import pytest
import yaml

from cmkd import experiments
from cmkd.params import spec
from cmkd.reproduce import reproduce

TINY = dict(n_runs=2, epochs=20, n_test=100, gammas=[0.0, 1.0], alphas=[0.0, 0.8], device="cpu")


@pytest.fixture
def project(root, tmp_path):
    dst = tmp_path / "project"
    for sub in ("notebooks", "params"):
        shutil.copytree(root / sub, dst / sub)
    path = dst / "params/smoke/01_mvd_synthetic_sweeps.yaml"
    path.write_text(yaml.safe_dump(dict(yaml.safe_load(path.read_text()), **TINY)))
    return dst


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".state" not in p.parts
            and "notebooks" not in p.parts}


def test_reproduce_writes_report_skips_and_is_bit_identical(project, capsys):
    assert reproduce("smoke", ["01"], root=project) == 0
    assert "CMKD_ROOT" not in os.environ or os.environ["CMKD_ROOT"] != str(project)
    out = project / "reports/smoke"
    report = (out / "REPORT.md").read_text()
    for name in ("mfh_fig2_vary_gamma.png", "mfh_fig2_vary_gamma.svg", "mfh_fig3_vary_alpha.png"):
        assert (out / "figures" / name).stat().st_size > 1000
        assert name.rsplit(".", 1)[0] in report
    assert (out / "tables/mfh_fig2_fig3_summary.csv").is_file()
    assert "params/smoke/01_mvd_synthetic_sweeps.yaml" in report
    assert "| MFH Fig. 2 | crossmodal KD student accuracy minus no-KD" in report
    assert "2.10" in report  # the paper's value beside ours
    executed = nbformat.read(out / "notebooks/01_mvd_synthetic_sweeps.ipynb", 4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "epochs = 20" in injected[0].source
    first = _digests(out)
    capsys.readouterr()

    assert reproduce("smoke", ["01"], root=project) == 0
    assert "skipped (inputs unchanged" in capsys.readouterr().out
    assert reproduce("smoke", ["01"], force=True, root=project) == 0
    assert "ok in" in capsys.readouterr().out
    assert _digests(out) == first, "a forced rerun must leave every artefact bit-identical"
    assert not list(out.rglob("*.tmp"))

    # a changed params file makes the notebook run again
    path = project / "params/smoke/01_mvd_synthetic_sweeps.yaml"
    path.write_text(path.read_text().replace("epochs: 20", "epochs: 21"))
    assert reproduce("smoke", ["01"], root=project) == 0
    assert "ok in" in capsys.readouterr().out


@dataclass(frozen=True)
class _BrokenConfig:
    x: int = field(metadata=spec("a number", low=0))


def test_a_failing_notebook_is_named_and_the_others_still_run(project, capsys, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('profile = "smoke"\nx = 1',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("y = x + 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('planted failure')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, project / "notebooks/00_broken.ipynb")
    (project / "params/smoke/00_broken.yaml").write_text("x: 1\n")
    module = types.ModuleType("cmkd_test_broken")
    module.Config = _BrokenConfig
    monkeypatch.setitem(sys.modules, "cmkd_test_broken", module)
    monkeypatch.setitem(experiments.NOTEBOOKS, "00_broken", "cmkd_test_broken")

    assert reproduce("smoke", ["00", "01"], root=project) == 1
    captured = capsys.readouterr()
    assert "00_broken: FAILED at cell 3, line 1 `raise RuntimeError('planted failure')`: " \
           "RuntimeError: planted failure" in captured.out
    assert "01_mvd_synthetic_sweeps: ok" in captured.out
    report = (project / "reports/smoke/REPORT.md").read_text()
    assert "Failed in the last run" in report and "00_broken" in report
    assert (project / "reports/smoke/notebooks/00_broken.failed.ipynb").is_file()
    state = json.loads((project / "reports/smoke/.state/00_broken.json").read_text())
    assert state["ok"] is False
