"""Notebook 06's paper-profile code path, end to end through `cmkd reproduce` and papermill, on
tiny fixture datasets in the real on-disk layouts of CREMA-D, AVE and VGGSound (ResNet-18s, a
few clips, one epoch, small frames); and a missing dataset stopping the paper profile at once."""
import json
import shutil

import pytest
import yaml

from cmkd.experiments import c2kd_benchmark as c2
from cmkd.params import ParamError, load_params
from cmkd.reproduce import reproduce
from test_data_loaders import make_ave, make_cremad, make_vggsound


@pytest.fixture
def project(root, tmp_path, monkeypatch):
    proj = tmp_path / "project"
    for sub in ("notebooks", "params"):
        shutil.copytree(root / sub, proj / sub)
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "cache"))
    return proj


def _paper_params(proj, **change):
    path = proj / "params/paper/06_c2kd.yaml"
    values = dict(yaml.safe_load(path.read_text()), **change)
    path.write_text(yaml.safe_dump(values))
    return path


def test_paper_profile_on_fixture_datasets(project, tmp_path):
    data = tmp_path / "datasets"
    make_cremad(data / "CREMA-D")
    make_ave(data / "AVE_Dataset")
    make_vggsound(data / "VGGSound")
    _paper_params(project, n_seeds=1, directions=["a2v"], sections=["table5"], epochs=1,
                  teacher_epochs=1, batch_size=4, image_size=32, workers=0, processes=1,
                  device="cpu", cremad_root=str(data / "CREMA-D"),
                  ave_root=str(data / "AVE_Dataset"), vggsound_root=str(data / "VGGSound"))
    assert reproduce("paper", ["06"], root=project) == 0
    out = project / "reports/paper"
    table = (out / "tables/c2kd_table5.csv").read_text()
    for column in ("cremad Visual mean", "ave Visual mean", "vggsound Visual mean"):
        assert column in table
    manifest = json.loads((out / "manifest/06_c2kd.json").read_text())
    ids = {c["id"] for c in manifest["comparisons"]}
    # Table 5 publishes AVE and VGGSound (not CREMA-D): every row stands beside the paper's
    for dataset in ("ave", "vggsound"):
        for name in ("nokd", "kd", "c2kd_bd", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd_noproxy",
                     "c2kd"):
            assert f"c2kd_t5_{dataset}_a2v_{name}" in ids
    assert not any("cremad" in i for i in ids)
    assert "C2KD Table 5" in (out / "REPORT.md").read_text()
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 3 * (7 + 1), "7 rows and one teacher per dataset, each trained once"


def test_a_missing_dataset_stops_the_paper_profile_at_once(project, tmp_path):
    _paper_params(project, cremad_root=str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["06"], root=project)
    msg = str(err.value)
    assert "params/paper/06_c2kd.yaml: parameter 'cremad_root': dataset 'cremad' is not usable" \
        in msg
    assert "Expected layout" in msg and "AudioWAV" in msg and "nothing was run" in msg
    assert not (project / "reports/paper/notebooks").exists()
    assert not (tmp_path / "cache").exists()


def test_an_empty_root_is_named_with_its_layout(root):
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["ave"], "ave_root": ""})
    with pytest.raises(ParamError, match=r"(?s)parameter 'ave_root': dataset 'ave' is selected "
                                         r"but ave_root is empty.*Expected layout"):
        config.preflight()


def test_grid_shares_teachers_and_rows(root):
    config = load_params(root / "params/default/06_c2kd.yaml", c2.Config)
    jobs, tags = c2.grid(config)
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys))
    teachers = {j.teacher.key for j in jobs if j.teacher is not None
                and j.teacher.model == "avdigits_cnn"}
    assert len(teachers) == 2 * config.n_seeds, "one unimodal teacher per modality and seed"
    # Table 5's (a) and (d) are Table 3's KD and Ours-full: the same jobs
    t = tags.set_index(["section", "direction", "seed", "label"]).job
    assert t[("table5", "a2v", 0, "(a) KD")] == t[("table3", "a2v", 0, "KD")]
    assert t[("table5", "a2v", 0, "(d) C2KD")] == t[("table3", "a2v", 0, "Ours‡ (full)")]
    assert t[("fig4", "a2v", 0, "krc")].size == len(config.fig4_omegas)
