"""Notebook 09's module: settings, scoring against independent computations, the hook."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cmkd import params
from cmkd.experiments import diagnostic_validation as dv
from cmkd.params import ParamError

BASE = dict(seed=0, seeds=2, epochs=1, patience=1, batch_size=64, lr=0.01, omega=0.0,
            permutations=1, mfeat_pairs=[], av_datasets=[], mvd_classes=[2],
            mvd_gammas=[1.0], mvd_directions=["a2b"], mvd_n_train=64, mvd_hidden=4,
            mvd_lr=0.05, bootstrap=200, device="cpu")


def config(**kw):
    return params.from_mapping(dv.Config, {**BASE, **kw})


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, (5, 30)).astype(float)  # a 3-level prediction: many ties
    y = rng.normal(size=(5, 30)) + x
    want = [stats.spearmanr(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(dv._spearman(x, y), want, rtol=1e-12)


def _frame(pred, meas, gain):
    return pd.DataFrame({"pred_kd": pred, "meas_kd": meas, "gain_kd": gain,
                         "family": "mfeat", "real": True})


def test_scores_count_unclear_as_its_own_verdict():
    pred = ["help", "hurt", "unclear", "help", "unclear"]
    meas = ["help", "hurt", "unclear", "unclear", "hurt"]
    s = dv.scores(_frame(pred, meas, [3.0, -2.0, 0.1, 0.2, -1.0]), "kd", n_boot=300)
    assert s["agreement"].estimate == pytest.approx(3 / 5)
    assert s["always_unclear"].estimate == pytest.approx(2 / 5)
    assert s["decided"] == 2 and s["sign"].estimate == pytest.approx(1.0)
    assert s["spearman"].estimate == pytest.approx(
        stats.spearmanr([1, -1, 0, 1, 0], [3.0, -2.0, 0.1, 0.2, -1.0]).statistic)
    assert s["agreement"].low <= s["agreement"].estimate <= s["agreement"].high


def test_a_perfect_rule_is_held_and_a_wrong_one_not():
    n = 40
    meas = np.array(["help", "hurt"] * (n // 2))
    gain = np.where(meas == "help", 2.0, -2.0) + np.linspace(0, 0.1, n)
    good = dv.scores(_frame(meas, meas, gain), "kd", n_boot=300)
    assert good["agreement"].verdict == "held" and good["spearman"].verdict == "held"
    wrong = dv.scores(_frame(meas[::-1], meas, gain), "kd", n_boot=300)
    assert wrong["agreement"].verdict == "NOT held" and wrong["spearman"].verdict == "NOT held"


def test_mfeat_pairs_share_unimodal_models_and_teachers():
    cfg = config(mfeat_pairs=list(dv.MFEAT_PAIRS), mvd_classes=[])
    sets = dv.mfeat_settings(cfg)
    assert len(sets) == 30
    uni = {dv._ref(v)[0].key for st in sets for v in [*st.teacher.values(),
                                                      *st.student.values()]}
    assert len(uni) == 6  # one stack of the seeds per view
    for st in sets:
        assert sorted(st.teacher) == list(dv._seeds(cfg))
        for m in cfg.methods:
            for s, (job, run) in st.students[m].items():
                t_job, t_run = st.teacher[s]
                s_job, s_run = st.student[s]
                assert run == t_run == s_run and job.runs[run]["seed"] == s
                assert job.teacher.key == t_job.key
                assert job.inputs == s_job.inputs  # the student modality's view
                assert job.model_options == s_job.model_options


def test_mvd_settings_both_directions_share_data_and_models():
    cfg = config(mvd_classes=[2, 5], mvd_gammas=[0.0, 1.0], mvd_directions=["a2b", "b2a"])
    sets = dv.mvd_settings(cfg)
    assert len(sets) == 8
    a2b, b2a = sets[0], sets[1]
    assert a2b.teacher[0] == b2a.student[0] and a2b.student[0] == b2a.teacher[0]
    # one stack per K and modality: every (gamma, seed) a run reading its own data draw
    job, run = a2b.teacher[0]
    other, run1 = sets[2].teacher[0]  # gamma 1.0, same K and direction
    assert job.key == other.key and run != run1
    assert job.run_dataset_options(run)["overlap"] == 0
    assert job.run_dataset_options(run1)["overlap"] == 10
    assert {dv._ref(v)[0].key for st in sets for v in st.teacher.values()} == {
        dv._ref(st.teacher[0])[0].key for st in sets}
    assert len(dv._jobs(sets)) == 2 * (2 + 2 * len(cfg.methods))


def test_mvd_alpha_settings_are_mfh_fig3():
    """Settings across alpha: the loader's Fig. 3 layout ('extra' per run: alpha = e / (e + 10),
    beta 0), x^a 50-d, after the gamma settings, with stacks of their own."""
    cfg = config(mvd_gammas=[1.0], mvd_alphas=[0.5, 0.8], mvd_directions=["a2b", "b2a"])
    sets = dv.mvd_settings(cfg)
    assert len(sets) == 2 + 4
    gam, alph = sets[:2], sets[2:]
    assert all("gamma=1.00" in st.name for st in gam)
    assert [st.name for st in alph[::2]] == ["MVD K=2 alpha=0.50 (beta=0) xa>xb",
                                             "MVD K=2 alpha=0.80 (beta=0) xa>xb"]
    job, run = alph[2].teacher[0]
    assert job.run_dataset_options(run)["extra"] == 40
    assert job.model_options["in_features"] == 50 and job.inputs == ("xa",)
    assert dv._ref(gam[0].teacher[0])[0].model_options["in_features"] == 25
    assert dv._ref(gam[0].teacher[0])[0].key != job.key
    assert [st.info["beta"] for st in alph] == [0.0] * 4
    assert [st.info["gamma"] for st in alph[::2]] == pytest.approx([0.5, 0.2])
    with pytest.raises(ParamError, match="mvd_alphas"):
        config(mvd_alphas=[0.9])  # not reachable in the Fig. 3 layout (at most 0.8)
    assert len(dv.mvd_settings(config(mvd_gammas=[], mvd_alphas=[0.5]))) == 1


def test_av_settings_both_directions_share_unimodal_models():
    """The AV path (no training here): each direction's students read the student modality
    and learn from the teacher modality's unimodal model of the same seed."""
    cfg = config(av_datasets=["avdigits"], mvd_classes=[], methods=["kd"])
    sets = dv.av_settings(cfg)
    assert [st.name for st in sets] == ["avdigits audio>visual", "avdigits visual>audio"]
    a2v, v2a = sets
    for s in dv._seeds(cfg):
        assert a2v.teacher[s].key == v2a.student[s].key
        assert a2v.student[s].key == v2a.teacher[s].key
        for st in sets:
            kd = st.students["kd"][s]
            assert kd.teacher.key == st.teacher[s].key and kd.seed == s
            assert kd.inputs == st.student[s].inputs != st.teacher[s].inputs
    assert set(a2v.students) == {"kd"}


def test_a_stacked_runs_head_gives_that_runs_logits():
    import torch

    from cmkd.models import stacked

    model = stacked("mlp", [3, 7], in_features=5, hidden=[4, 6], classes=3).eval()
    x = torch.randn(2, 11, 5)
    with torch.no_grad():
        logits, feats = model.forward_features(x)
        for r in range(2):
            head = dv._RunHead(model, r).classifier
            torch.testing.assert_close(head(feats["pooled"][r]), logits[r])


def test_a_run_still_improving_at_the_cap_is_flagged():
    row = pd.Series({"epochs": 20, "epochs_run": 20, "since_best": 0})
    assert dv._still_improving(row)
    assert not dv._still_improving(pd.Series({"epochs": 20, "epochs_run": 20,
                                              "since_best": 1}))  # best one epoch ago
    assert not dv._still_improving(pd.Series({"epochs": 20, "epochs_run": 14,
                                              "since_best": 3}))  # early stopping


def test_config_errors_before_any_compute():
    with pytest.raises(ParamError, match="mfeat_pairs"):
        config(mfeat_pairs=["fou>fou"])
    with pytest.raises(ParamError, match="mvd_gammas"):
        config(mvd_gammas=[0.3])  # not reachable in the Fig. 2 layout
    with pytest.raises(ParamError, match="no setting"):
        config(mvd_classes=[])
    cfg = config(extra_settings=["nullified"])
    with pytest.raises(ParamError, match="not registered"):
        cfg.preflight()


def test_registered_settings_join(monkeypatch):
    extra = dv.mvd_settings(config())[0]
    extra = dataclasses.replace(extra, name="planted", family="planted")
    monkeypatch.setitem(dv.EXTRA, "planted", lambda cfg: [extra])
    names = [st.name for st in dv.settings(config(extra_settings=["planted"]))]
    assert names[-1] == "planted" and len(names) == 2


def test_no_kd_baseline_is_the_unimodal_model(tmp_path):
    """The unimodal model of the student modality and a no-KD 'student' job of the same
    settings train identically (the notebook uses the former as the baseline)."""
    from cmkd.jobs import run_jobs

    cfg = config(epochs=2)
    uni = dv._mvd_job(cfg, 2, ("overlap", 10), "xb", 0)
    nokd = dataclasses.replace(uni, kind="student")
    assert uni.key != nokd.key
    rows = run_jobs([uni, nokd], cache=tmp_path, progress=False).set_index("kind")
    assert rows.loc["teacher"].test_correct == rows.loc["student"].test_correct
    assert rows.loc["teacher"].best_val == rows.loc["student"].best_val


def test_run_end_to_end_on_a_tiny_grid(tmp_path):
    cfg = config(mvd_gammas=[0.0, 1.0], mvd_directions=["a2b", "b2a"])
    df = dv.run(cfg, cache=tmp_path, progress=False)
    # one K: a stack per modality, and per direction and method (each stack: gammas x seeds)
    assert len(df) == 4 and df.attrs["jobs"] == 2 + 2 * 2
    assert set(df.pred_kd) <= set(dv.SCORE) and set(df.meas_kd) <= set(dv.SCORE)
    assert ((df.low_kd <= df.gain_kd) & (df.gain_kd <= df.high_kd)).all()
    # the same unimodal models seen from both directions: opposite advantages, same KRC
    a2b, b2a = df.iloc[0], df.iloc[1]
    assert a2b.advantage == pytest.approx(-b2a.advantage)
    assert a2b.krc_mean == pytest.approx(b2a.krc_mean)
    table = dv.claims(df, n_boot=200)
    assert set(table.verdict) <= {"held", "NOT held", "undecided"}
    # the diagnosis in worker processes gives the serial numbers
    from cmkd.jobs import ProcessExecutor

    sets = dv.settings(cfg)
    pooled = dv.predictions(sets, cfg, tmp_path, ProcessExecutor(1), progress=False)
    assert pd.DataFrame(pooled).equals(df[list(pooled[0])])
