"""Notebook 04 (MFH case study): the job grid, the builder's model overrides, the summaries and
claims on planted results, and the paper-profile path end to end on an AV-MNIST fixture in the
MultiBench layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cmkd import params
from cmkd.experiments import NOTEBOOKS
from cmkd.experiments import case_studies as cs
from cmkd.params import ParamError
from cmkd.reporting import paper_value

ROOT = Path(__file__).resolve().parents[1]


def _config(**over) -> cs.Config:
    base = yaml.safe_load((ROOT / "params/smoke/04_case_studies.yaml").read_text())
    return params.from_mapping(cs.Config, {**base, **over}, source="test")


def test_registered_and_every_profile_validates():
    assert NOTEBOOKS["04_case_studies"] == "cmkd.experiments.case_studies"
    for profile in ("smoke", "default", "paper"):
        raw = yaml.safe_load((ROOT / f"params/{profile}/04_case_studies.yaml").read_text())
        params.from_mapping(cs.Config, raw, source=profile)
    with pytest.raises(ParamError, match="rhos"):
        _config(rhos=[1.5])


def test_grid_uses_mfh_b1_networks_and_eq1_weights():
    config = _config(n_runs=2, rhos=[0.0, 0.5])
    grid = cs.jobs(config)
    assert len(grid) == 2 * (4 + 2 * 2)
    audio_t = grid["audio_teacher", None, 0]
    fusion_t = grid["fusion_teacher", None, 0]
    assert audio_t.model == "audio_cnn6" and audio_t.inputs == ("audio",)
    assert grid["image", None, 0].model == "lenet5" and grid["image", None, 0].inputs == ("image",)
    assert fusion_t.model == "fusion_concat" and fusion_t.inputs == ("image", "audio")
    assert tuple(fusion_t.model_options["encoders"]) == ("lenet5", "audio_cnn5")
    for rho in (0.0, 0.5):
        um, cm = grid["umkd", rho, 1], grid["cmkd", rho, 1]
        assert um.model == cm.model == "audio_cnn3"
        assert um.teacher == grid["audio_teacher", None, 1]
        assert cm.teacher == grid["fusion_teacher", None, 1]
        # MFH Eq. (1): rho * CE + (1 - rho) * KL; KD's loss through kd_nullified keeping every
        # channel of the teacher's classifier input (audio_cnn6: 192; LeNet-5 84 + audio_cnn5
        # 96 = 180), so the teacher's stored features serve every epoch
        for job, width in ((um, 192), (cm, 180)):
            assert job.method == "kd_nullified" and job.hparams["layer"] == "pooled"
            assert job.hparams["keep"] == list(range(width))
            assert job.hparams["ce_weight"] == rho and job.hparams["kd_weight"] == 1 - rho
    assert grid["nokd", None, 0].teacher is None
    # runs differ in seed; the roles of one run share it
    assert audio_t.seed == fusion_t.seed != grid["audio_teacher", None, 1].seed
    assert audio_t.dataset_options["per_class"] == 4
    # teachers and the image network: their own batch size and learning rate
    config = _config(batch_size=32, lr=0.001, teacher_batch_size=128, teacher_lr=0.002)
    grid = cs.jobs(config)
    for key in (("audio_teacher", None, 0), ("fusion_teacher", None, 0), ("image", None, 0)):
        assert grid[key].batch_size == 128 and grid[key].optim.lr == 0.002
    for key in (("nokd", None, 0), ("umkd", 0.5, 0), ("cmkd", 0.5, 0)):
        assert grid[key].batch_size == 32 and grid[key].optim.lr == 0.001


def test_default_profile_shares_the_teacher_and_the_image_network_with_notebook_05():
    """Notebook 05's default teacher (audio_cnn6) and image network (LeNet-5) are notebook 04's
    jobs (same keys), so `cmkd reproduce --only 04 05` trains each once."""
    from cmkd.experiments import feature_ranking as fr

    def load(module, name):
        raw = yaml.safe_load((ROOT / f"params/default/{name}.yaml").read_text())
        return params.from_mapping(module.Config, raw, source="default")

    grid = cs.jobs(load(cs, "04_case_studies"))
    base = fr.base_jobs(load(fr, "05_feature_ranking"))
    assert grid["audio_teacher", None, 0].key == base["teacher", 0].key
    assert grid["image", None, 0].key == base["other", 0].key


def test_table7_pseudo_labels_soft_or_hard():
    soft = cs.t7_jobs(_config())["specific_teacher", 0]
    hard = cs.t7_jobs(_config(t7_pseudo_labels="hard"))["specific_teacher", 0]
    assert soft.method == "kd" and soft.hparams["ce_weight"] == 0.0
    assert soft.hparams["kd_weight"] == 1.0
    assert hard.method == "pseudo_label" and hard.teacher == soft.teacher
    assert hard.teacher.inputs == ("xa",)  # the image network labels it
    hard.check()
    with pytest.raises(ParamError, match="t7_pseudo_labels"):
        _config(t7_pseudo_labels="argmax")


def _planted(runs: int = 6, n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Results with known accuracies: teachers 80 / 95, students 60 (no KD), UM-KD 66 and CM-KD
    62 (rho 0.5), 65 / 65 (rho 0)."""
    rng = np.random.default_rng(seed)
    truth = {("image", None): 70, ("audio_teacher", None): 80, ("fusion_teacher", None): 95,
             ("nokd", None): 60, ("umkd", 0.5): 66, ("cmkd", 0.5): 62, ("umkd", 0.0): 65,
             ("cmkd", 0.0): 65}
    rows = []
    for (role, rho), p in truth.items():
        for r in range(runs):
            correct = rng.random(n) < p / 100
            rows.append({"role": role, "rho": np.nan if rho is None else rho, "run": r,
                         "acc": 100 * correct.mean(), "val": np.nan, "best_epoch": 3,
                         "epochs_run": 5, "test_correct": "".join("1" if c else "0"
                                                                  for c in correct),
                         "key": f"{role}{rho}{r}"})
    df = pd.DataFrame(rows)
    df.attrs["n_test"] = n
    return df


def test_tables_and_paper_ids_on_planted_results():
    df = _planted()
    t5 = cs.table5(df).set_index("KD")
    assert list(t5.index) == ["No-KD", "UM-KD", "CM-KD"]
    assert abs(t5.loc["CM-KD", "teacher acc mean"] - 95) < 3
    assert abs(t5.loc["UM-KD", "rho=0.5 mean"] - 66) < 3
    assert t5.loc["No-KD", "rho=0 mean"] == t5.loc["No-KD", "rho=0.5 mean"]
    uni = cs.unimodal(df).set_index("network")
    assert abs(uni.loc[cs.ROLES["image"], "mean"] - 70) < 3
    m = cs.measured(df)
    assert set(m) == set(cs.PAPER_IDS.values())
    for key in m:
        assert paper_value(key)["artefact"] == "MFH Table 5"
    assert paper_value("mfh.table5.rho_0.5.cmkd_acc")["value"] == 69.73


def test_claims_follow_the_planted_truth():
    out = cs.claims(_planted(runs=8, n=2000)).set_index("claim")
    assert out.verdict.iloc[0] == "held"          # 95 vs 80
    assert out.verdict.iloc[1] == "held"          # CM-KD 62 < UM-KD 66, 65 = 65
    # a crossmodal student clearly better than the unimodal one is NOT held
    df = _planted(runs=8, n=2000)
    swap = df.role.isin(["umkd", "cmkd"]) & (df.rho == 0.5)
    df.loc[swap, "role"] = df.loc[swap, "role"].map({"umkd": "cmkd", "cmkd": "umkd"})
    assert cs.claims(df).verdict.iloc[1] == "NOT held"


def test_runs_short_of_their_plateau_make_a_claim_undecided():
    df = _planted(runs=8, n=2000)
    swap = df.role.isin(["umkd", "cmkd"]) & (df.rho == 0.5)
    df.loc[swap, "role"] = df.loc[swap, "role"].map({"umkd": "cmkd", "cmkd": "umkd"})
    df["converged"], df["still_improving"] = True, False
    df.attrs["window"] = 3
    out = cs.claims(df)
    assert list(out.verdict) == ["held", "NOT held", "held"]
    # the same intervals, but one UM-KD run at rho 0.5 was still gaining when the cap hit
    df.loc[(df.role == "umkd") & (df.rho == 0.5) & (df.run == 2), "converged"] = False
    out2 = cs.claims(df)
    assert list(out2.verdict) == ["held", "undecided", "NOT held"]
    assert out2.interval.iloc[1] == out.interval.iloc[1]
    assert "NOT CONVERGED" in out2.evidence.iloc[1] and "rho 0.5, run 2" in out2.evidence.iloc[1]
    assert "NOT CONVERGED" not in out2.evidence.iloc[0]
    assert "not converged: UM-KD student (A teacher), rho 0.5, run 2" in out2.evidence.iloc[2]
    conv = cs.convergence(df).set_index("job")
    assert conv.loc["UM-KD student (A teacher), rho 0.5", "not_converged"] == 1
    assert conv.not_converged.sum() == 1 and (conv.runs == 8).all()


def _avmnist_fixture(root: Path, n_train: int = 60, n_test: int = 30) -> Path:
    """AV-MNIST in the MultiBench layout (image rows 784, audio 112 x 112, labels), class-
    dependent so the networks have something to learn."""
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        image = rng.integers(0, 60, (n, 784)).astype(np.float32)
        image[np.arange(n), y * 70] = 255
        audio = rng.integers(0, 60, (n, 112, 112)).astype(np.float32)
        audio[np.arange(n), y * 10, :] = 255
        (root / "image").mkdir(parents=True, exist_ok=True)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        np.save(root / "image" / f"{part}_data.npy", image)
        np.save(root / "audio" / f"{part}_data.npy", audio)
        np.save(root / f"{part}_labels.npy", y)
    return root


def _mmimdb_fixture(root: Path, n: int = 60) -> Path:
    """MM-IMDB in Arevalo's hdf5 layout (tests/test_data_loaders.make_mmimdb), with drama and
    comedy readable from the text and the image features so the networks have something to
    learn."""
    import h5py

    from test_data_loaders import make_mmimdb

    make_mmimdb(root, n=n)
    with h5py.File(root / "multimodal_imdb.hdf5", "r+") as f:
        genres = f["genres"][:]
        text, image = f["features"][:], f["vgg_features"][:]
        genres[:, 0] = text[:, 0] > 0
        genres[:, 1] = image[:, 0] + text[:, 1] > 0
        f["genres"][:] = genres
    return root


def test_paper_profile_path_runs_end_to_end_on_a_fixture(tmp_path):
    root = _avmnist_fixture(tmp_path / "avmnist")
    mmimdb = _mmimdb_fixture(tmp_path / "mmimdb")
    paper = yaml.safe_load((ROOT / "params/paper/04_case_studies.yaml").read_text())
    over = dict(avmnist_root=str(root), avmnist_n_valid=20, n_runs=2, teacher_epochs=1,
                epochs=1, patience=0, batch_size=32, device="cpu", mmimdb_root=str(mmimdb),
                mmimdb_boundaries=[40, 50], t7_runs=2, t7_epochs=1, t7_patience=0,
                t7_hidden=[32, 32])
    config = params.from_mapping(cs.Config, {**paper, **over}, source="test")
    assert config.dataset == "avmnist"
    df = cs.run(config, cache=tmp_path / "cache", progress=False)
    assert len(df) == 2 * (4 + 2 * len(config.rhos)) and df.attrs["n_test"] == 30
    assert df.acc.between(0, 100).all()
    assert set(cs.table5(df)["KD"]) == {"No-KD", "UM-KD", "CM-KD"}
    curves = cs.histories(config, tmp_path / "cache")
    assert set(curves.role) == set(cs.ROLES)
    # one epoch without early stopping: no run can have converged, so nothing is decided
    assert not df.converged.any() and df.still_improving.all()
    out = cs.claims(df)
    assert list(out.verdict) == ["undecided", "undecided", "NOT held"]
    assert set(cs.measured(df)) == set(cs.PAPER_IDS.values())
    cs.plot_table5(df)
    cs.plot_curves(curves)
    # Table 7 on MM-IMDB: the loader's layout, drama and comedy, 20 / 20 training rows
    assert config.t7_dataset == "mmimdb"
    grid = cs.t7_jobs(config)
    assert grid["text_teacher", 0].dataset_options["half"] == "first"
    assert grid["umkd", 0].dataset_options["half"] == "second"
    assert grid["specific_teacher", 0].teacher == grid["image_net", 0]
    assert grid["specific_teacher", 0].hparams["ce_weight"] == 0
    assert grid["regular_kd", 0].teacher == grid["regular_teacher", 0]
    assert grid["regular_kd", 0].hparams["ce_weight"] == cs.T7_RHO == 0
    t7 = cs.run7(config, cache=tmp_path / "cache", progress=False)
    assert len(t7) == 2 * len(cs.T7_ROLES) and t7.attrs["n_test"] == 10
    assert t7[["f1_micro", "f1_macro"]].stack().between(0, 100).all()
    # the job's own score (torchmetrics in the training loop) is the recomputed micro F1
    np.testing.assert_allclose(t7.f1_micro, t7.row_test, atol=1e-4)
    assert list(cs.table7(t7).KD) == ["No-KD", "UM-KD", "Modality-specific-KD", "Regular-KD",
                                      "(image network)"]
    assert set(cs.measured7(t7)) == {r["id"] for r in _reference("mfh.table7.")}
    assert list(cs.claims7(t7).verdict) == ["undecided", "undecided", "NOT held"]
    cs.plot_t7_curves(cs.t7_histories(config, tmp_path / "cache"))


def _reference(prefix: str) -> list[dict]:
    return [r for r in yaml.safe_load((ROOT / "lib/cmkd/reference/mfh.yaml").read_text())
            if r["id"].startswith(prefix)]


def test_paper_profile_names_a_missing_folder_before_any_compute(tmp_path):
    paper = yaml.safe_load((ROOT / "params/paper/04_case_studies.yaml").read_text())
    config = params.from_mapping(cs.Config, {**paper, "avmnist_root": str(tmp_path / "none")},
                                 source="test")
    with pytest.raises(ParamError, match="avmnist_root"):
        cs.run(config, cache=tmp_path / "cache", progress=False)


def test_table7_on_mmimdb_names_a_missing_folder_before_any_compute(tmp_path):
    smoke = yaml.safe_load((ROOT / "params/smoke/04_case_studies.yaml").read_text())
    config = params.from_mapping(cs.Config, {**smoke, "t7_dataset": "mmimdb",
                                             "mmimdb_root": str(tmp_path / "none")},
                                 source="test")
    with pytest.raises(ParamError, match="mmimdb_root"):
        cs.run7(config, cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
