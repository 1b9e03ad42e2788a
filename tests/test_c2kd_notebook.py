"""Notebook 06's paper-profile code path, end to end through `cmkd reproduce` and papermill, on
tiny fixture datasets in the real on-disk layouts of CREMA-D, AVE and VGGSound (ResNet-18s, a
few clips, one epoch, small frames) and CrisisMMD (MLPs on the features of stub encoders given by
import path, tests/stub_encoders.py); and a missing dataset or encoder stopping the paper profile
at once."""
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import stub_encoders
from cmkd.experiments import c2kd_benchmark as c2
from cmkd.params import ParamError, load_params
from cmkd.reproduce import reproduce
from test_data_loaders import make_ave, make_cremad, make_crisismmd, make_vggsound

TESTS = Path(__file__).resolve().parent
STUBS = {"crisismmd_text_encoder": "stub_encoders:text",
         "crisismmd_image_encoder": "stub_encoders:image",
         "crisismmd_text_dim": stub_encoders.TEXT_DIM,
         "crisismmd_image_dim": stub_encoders.IMAGE_DIM}


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
    _paper_params(project, datasets=["cremad", "ave", "vggsound"], n_seeds=1,
                  directions=["a2v"], sections=["table5"], epochs=1, teacher_epochs=1,
                  batch_size=4, image_size=32, workers=0, processes=1, device="cpu",
                  cremad_root=str(data / "CREMA-D"),
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


def test_paper_profile_on_fixture_crisismmd(project, tmp_path, monkeypatch):
    """CrisisMMD with encoders given by import path: the text teacher distils into the image
    student (a2v: the paper's Image column, reference direction t2i)."""
    # the papermill kernel is another process: it must import the stub module too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    data = tmp_path / "datasets" / "CrisisMMD_v2.0"
    make_crisismmd(data)
    _paper_params(project, datasets=["crisismmd"], n_seeds=1, directions=["a2v"],
                  sections=["table5"], epochs=1, teacher_epochs=1, batch_size=4, image_size=32,
                  workers=0, processes=1, device="cpu", crisismmd_root=str(data), **STUBS)
    assert reproduce("paper", ["06"], root=project) == 0
    out = project / "reports/paper"
    table = (out / "tables/c2kd_table5.csv").read_text()
    assert "crisismmd Image mean" in table and "Visual" not in table
    manifest = json.loads((out / "manifest/06_c2kd.json").read_text())
    ids = {c["id"] for c in manifest["comparisons"]}
    for name in ("nokd", "kd", "c2kd_bd", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd_noproxy", "c2kd"):
        assert f"c2kd_t5_crisismmd_t2i_{name}" in ids
    assert not any("i2t" in i or "a2v" in i for i in ids)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 7 + 1, "7 rows and the text teacher, each trained once"


def test_grid_maps_crisismmd_directions_to_text_and_image(root):
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["crisismmd"], "sections": ["table5"],
                          "n_seeds": 1, **STUBS})
    jobs, tags = c2.grid(config)
    kd = {r.direction: jobs[r.job] for r in tags[tags.label == "(a) KD"].itertuples()}
    assert kd["a2v"].inputs == ("image",) and kd["a2v"].teacher.inputs == ("text",)
    assert kd["v2a"].inputs == ("text",) and kd["v2a"].teacher.inputs == ("image",)
    assert kd["a2v"].model == "mlp" and kd["a2v"].model_options["in_features"] == 12
    assert kd["a2v"].teacher.model_options["in_features"] == 16
    assert kd["a2v"].dataset_options["text_encoder"] == "stub_encoders:text"
    assert [c2.reference_direction("crisismmd", d) for d in ("a2v", "v2a")] == ["t2i", "i2t"]
    assert [c2.column("crisismmd", d) for d in ("a2v", "v2a")] == ["Image", "Text"]


@pytest.mark.parametrize("param, value, message", [
    ("crisismmd_text_encoder", "", "crisismmd_text_encoder is empty; set it to the import path "
                                   "'package.module:callable'"),
    ("crisismmd_image_encoder", "no_such_module_xyz:f", "cannot import module "
                                                         "'no_such_module_xyz'"),
    ("crisismmd_image_encoder", "stub_encoders:NOT_CALLABLE", "is not callable"),
    ("crisismmd_text_encoder", "stub_encoders", "not an import path"),
])
def test_preflight_refuses_an_unusable_encoder(root, tmp_path, param, value, message):
    make_crisismmd(tmp_path)
    config = load_params(root / "params/paper/06_c2kd.yaml", c2.Config)
    config = c2.Config(**{**config.__dict__, "datasets": ["crisismmd"],
                          "crisismmd_root": str(tmp_path), **dict(STUBS, **{param: value})})
    with pytest.raises(ParamError) as err:
        config.preflight()
    assert err.value.name == param and message in str(err.value)


def test_the_paper_profile_without_encoders_refuses_to_start(project, tmp_path):
    make_crisismmd(tmp_path / "CrisisMMD_v2.0")
    _paper_params(project, datasets=["crisismmd"],
                  crisismmd_root=str(tmp_path / "CrisisMMD_v2.0"))
    with pytest.raises(SystemExit) as err:
        reproduce("paper", ["06"], root=project)
    msg = str(err.value)
    assert "params/paper/06_c2kd.yaml: parameter 'crisismmd_text_encoder': dataset " \
           "'crisismmd' is selected but crisismmd_text_encoder is empty" in msg
    assert "nothing was run" in msg
    assert not (tmp_path / "cache").exists()


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
