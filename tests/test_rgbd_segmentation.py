"""Notebook 10 (RGB-D segmentation, C2KD Table 4, MFH Tables 1 / 3 / 6): the paper profile end to
end on NYU Depth V2 fixtures in both layouts (through `cmkd reproduce` and papermill for the
SA-Gate layout, through the experiment module for the CEN layout), the grids, and the checks
before any compute."""

import json
import shutil

import pandas as pd
import pytest
import yaml

from cmkd.experiments import rgbd_segmentation as seg
from cmkd.params import ParamError, from_mapping, read_yaml
from cmkd.reporting import paper_entry
from cmkd.reproduce import reproduce
from test_data_loaders import make_nyu_cen, make_nyu_sagate

TINY = dict(n_seeds=1, height=16, width=16, resnet_width=4, mobilenet_width=0.1, head_width=8,
            epochs=1, teacher_epochs=1, batch_size=2, device="cpu",
            method_hparams={"cirkd": {"pixel_memory": 32, "region_memory": 8}})


def load_params(path, cls, overrides=None):
    return from_mapping(cls, {**read_yaml(path), **(overrides or {})}, str(path))


@pytest.fixture
def project(root, tmp_path, monkeypatch):
    proj = tmp_path / "project"
    for sub in ("notebooks", "params"):
        shutil.copytree(root / sub, proj / sub)
    monkeypatch.setenv("CMKD_CACHE", str(tmp_path / "cache"))
    return proj


def test_paper_profile_on_nyu_sagate_fixture(project, tmp_path):
    nyu = tmp_path / "NYUDepthv2"
    make_nyu_sagate(nyu)
    path = project / "params/paper/10_rgbd_segmentation.yaml"
    values = dict(yaml.safe_load(path.read_text()), nyudv2_root=str(nyu), pairs=["rn18_mnv2"],
                  methods=["nokd", "kd", "c2kd", "c2kd_dist", "cirkd"], val_fraction=0.2,
                  **TINY)
    path.write_text(yaml.safe_dump(values))
    assert reproduce("paper", ["10"], root=project) == 0
    out = project / "reports/paper"
    table = (out / "tables/c2kd_table4.csv").read_text()
    assert "RGB RN18 (depth MNV2 teacher) mean" in table
    assert "depth MNV2 (RGB RN18 teacher) mean" in table
    manifest = json.loads((out / "manifest/10_rgbd_segmentation.json").read_text())
    ids = {c["id"] for c in manifest["comparisons"]}
    for d in ("d2rgb", "rgb2d"):
        for m in ("nokd", "kd", "c2kd", "c2kd_dist", "cirkd"):
            assert paper_entry(table=4, dataset="nyu", direction=d, method=m,
                               variant="rgbrn18_depthmnv2")["id"] in ids
    assert {c["claim"] for c in manifest["claims"]} >= {"C2KD beats KD in both directions"}
    # MFH Tables 6 and 3 on the same fixture: every cell beside the paper's, every claim scored
    t6 = (out / "tables/mfh_table6.csv").read_text()
    assert "SA-Gate" in t6 and "CEN" in t6 and "51.14" in t6     # CEN's CM-KD teacher
    assert "37.47" in (out / "tables/mfh_table3.csv").read_text()
    for arch in ("sagate", "cen"):
        for role in ("umkd", "cmkd"):
            assert f"mfh.table6.{arch}.{role}.student_miou" in ids
            assert f"mfh.table6.{arch}.{role}.teacher_miou" in ids
    assert {"mfh.table3.general_kd.teacher_miou", "mfh.table3.regular_kd.student_miou",
            "mfh.table3.nokd.student_miou"} <= ids
    arts = [c["artefact"] for c in manifest["claims"]]
    assert arts.count("MFH Table 3") == 2 and arts.count("MFH Table 6") == 2


def test_paper_path_on_nyu_cen_fixture(root, tmp_path):
    nyu = tmp_path / "nyudv2"
    make_nyu_cen(nyu)
    config = load_params(root / "params/paper/10_rgbd_segmentation.yaml", seg.Config,
                         overrides=dict(dataset="nyudv2_cen", nyudv2_cen_root=str(nyu),
                                        pairs=["mnv2_rn18"], directions=["d2rgb"],
                                        methods=["nokd", "shake", "dist", "nkd"],
                                        mfh_teachers=["general"], val_fraction=0.25, **TINY))
    runs = seg.run(config, cache=tmp_path / "cache", progress=False)
    assert len(runs) == 4 and runs.miou.between(0, 100).all()
    assert runs.teacher_miou.notna().sum() == 3   # every method but no-KD has the teacher
    ids = seg.paper_ids(runs)
    assert paper_entry(table=4, dataset="nyu", direction="d2rgb", method="shake",
                       variant="rgbmnv2_depthrn18")["id"] in ids
    hist = seg.histories(config, tmp_path / "cache")
    assert set(hist.method) == set(config.methods)
    mfh = seg.run_mfh(config, cache=tmp_path / "cache", progress=False)
    assert list(mfh.role) == ["nokd", "regular_kd", "general_kd"]
    assert mfh.miou.between(0, 100).all() and mfh.teacher_miou.iloc[1:].between(0, 100).all()
    # the depth teacher of Regular-KD is Table 4's d2rgb teacher of the RN18 depth network
    regular = seg.mfh_student_job(config, "regular_kd", 0).teacher
    assert regular.key == seg.teacher_job(config, "depth", "rn18", 0).key
    table = seg.mfh_table3(mfh)
    assert list(table["paper student"]) == [46.36, 46.89, 47.93]
    assert set(seg.mfh_claims(mfh).artefact) == {"MFH Table 3"}


def test_grid_pairs_and_directions(root, tmp_path):
    make_nyu_sagate(tmp_path)
    config = load_params(root / "params/paper/10_rgbd_segmentation.yaml", seg.Config,
                         {"nyudv2_root": str(tmp_path)})
    cells = seg.grid(config)
    assert len(cells) == 3 * 2 * 8 * 3
    job = next(c["job"] for c in cells if c["pair"] == "rn18_mnv2" and c["direction"] == "rgb2d"
               and c["method"] == "c2kd")
    assert job.model == "deeplabv3plus_mobilenet_v2" and job.inputs == ("depth",)
    assert job.model_options["in_channels"] == 1 and job.model_options["classes"] == 40
    assert job.teacher.model == "deeplabv3plus_resnet18" and job.teacher.inputs == ("rgb",)
    assert job.epochs * 50 == 40_000 and job.optim.lr == 0.02 and job.batch_size == 16


def test_mfh_grid_teachers_and_students(root, tmp_path):
    make_nyu_sagate(tmp_path)
    config = load_params(root / "params/paper/10_rgbd_segmentation.yaml", seg.Config,
                         {"nyudv2_root": str(tmp_path)})
    cells = {c["role"]: c["job"] for c in seg.mfh_grid(config) if c["seed"] == 0}
    assert list(cells) == ["nokd", "umkd", "cmkd_sagate", "cmkd_cen", "regular_kd",
                           "general_kd"]
    for role, job in cells.items():     # every student: the RGB RN18 network
        assert job.model == "deeplabv3plus_resnet18" and job.inputs == ("rgb",)
        assert (job.teacher is None) == (role == "nokd")
    assert cells["nokd"].key == seg.student_job(config, "rn18_rn18", "d2rgb", "nokd", 0).key
    assert cells["cmkd_sagate"].teacher.model == "deeplabv3plus_sagate_resnet18"
    assert cells["cmkd_cen"].teacher.inputs == ("rgb", "depth")
    assert cells["umkd"].teacher.inputs == ("rgb",)
    assert cells["regular_kd"].teacher.inputs == ("depth",)
    assert cells["general_kd"].teacher.model == "deeplabv3plus_general_resnet18"
    hp = cells["umkd"].hparams
    assert hp["ce_weight"] == 0.5 and hp["kd_weight"] == 0.5 and hp["temperature"] == 1


def test_missing_dataset_and_weights_stop_before_compute(root, tmp_path):
    path = root / "params/paper/10_rgbd_segmentation.yaml"
    config = load_params(path, seg.Config, overrides={"nyudv2_root": str(tmp_path / "none")})
    with pytest.raises(ParamError, match="(?s)nyudv2_root.*expected layout"):
        seg.run(config, cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    with pytest.raises(ParamError, match="resnet18_weights"):
        load_params(path, seg.Config, overrides={"dataset": "rgbd_scenes", "height": 32,
                                                 "width": 32, "resnet18_weights": "nope.pth"})
    with pytest.raises(ParamError, match="square"):
        load_params(path, seg.Config, overrides={"dataset": "rgbd_scenes"})


def _planted_runs(gain, converged):
    """Table 4 rows of one pair, both directions, 4 seeds: C2KD = KD + ``gain`` (+ a small
    seed-dependent wobble), every run converged but C2KD's seed 0 when ``converged`` is False."""
    rows = []
    for d in ("d2rgb", "rgb2d"):
        for s in range(4):
            for m, base in (("nokd", 20.0), ("kd", 21.0), ("c2kd", 21.0 + gain)):
                rows.append({"pair": "rn18_rn18", "direction": d, "method": m, "seed": s,
                             "miou": base + 0.1 * (s % 2), "epochs_run": 12,
                             "converged": converged or not (m == "c2kd" and s == 0),
                             "teacher_epochs_run": float("nan") if m == "nokd" else 15,
                             "teacher_converged": float("nan") if m == "nokd" else True})
    return pd.DataFrame(rows)


def test_claims_need_converged_runs():
    """A clear planted gain holds on converged runs; the same numbers with one C2KD run ended
    by the epoch cap are undecided, and the evidence names that run."""
    held = seg.claims(_planted_runs(5.0, True)).set_index("claim")
    assert held.loc["C2KD beats KD in both directions", "verdict"] == "held"
    short = seg.claims(_planted_runs(5.0, False)).set_index("claim")
    row = short.loc["C2KD beats KD in both directions"]
    assert row.verdict == "undecided" and "NOT CONVERGED" in row.evidence
    assert "C2KD (Ours) rn18_rn18 d2rgb, seed 0" in row.evidence


def test_convergence_claim_counts_each_job_once():
    runs = _planted_runs(5.0, False)
    jobs = seg.jobs_trained(runs, pd.DataFrame())
    # 2 directions x 3 methods x 4 seeds students, and 2 teachers x 4 seeds (shared by KD, C2KD)
    assert len(jobs) == 2 * 3 * 4 + 2 * 4
    claim = seg.convergence_claim(runs, pd.DataFrame())
    assert claim["verdict"] == "NOT held" and "30 of 32 jobs" in claim["evidence"]
    table = seg.convergence_table(runs, pd.DataFrame())
    assert table.converged.sum() == 30 and (table.runs == 4).all()


def test_late_gain_measures_the_last_epochs():
    """The plateau rule on planted curves: the gain of the last window over the best before."""
    assert seg.late_gain(pd.Series([0.1, 0.2, 0.3, 0.30, 0.302, 0.301]), 3) == pytest.approx(0.2)
    assert seg.late_gain(pd.Series([0.1, 0.3, 0.2, 0.25, 0.29]), 3) == 0.0
    assert seg.late_gain(pd.Series([0.1, 0.2]), 3) == float("inf")
