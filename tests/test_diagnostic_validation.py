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
    monkeypatch.setitem(dv.EXTRA, "planted", lambda cfg, cache: [extra])
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


# ----------------------------------------------------------------------------- notebook 05's
# feature-nullified teachers (extra_settings: feature_nullified)
def test_a_nullified_model_ignores_every_channel_outside_keep():
    """The derived teacher the diagnostic sees: its logits are notebook 05's
    (nullified_logits), its pooled features are zero outside ``keep``, and noise planted on a
    dropped channel of the nullified layer cannot change the logits (on a kept one it does)."""
    import torch

    from cmkd import models
    from cmkd.mfh import NullifiedModel, nullified_logits

    torch.manual_seed(0)
    net = models.build("audio_cnn3", classes=4, channels=4).eval()
    x = torch.randn(6, 1, 16, 16)
    keep, dropped = [1, 3, 8, 12], [0, 2, 15]
    model = NullifiedModel(net, "pooled", keep)
    with torch.no_grad():
        logits, feats = model.forward_features(x)
        torch.testing.assert_close(logits, nullified_logits(net, [x], "pooled", keep))
        torch.testing.assert_close(model(x), logits)
        assert not torch.equal(logits, net(x))  # the mask matters for this net
        pooled = feats["pooled"]
        assert (pooled[:, dropped] == 0).all() and (pooled[:, keep] != 0).any()
        # the head the diagnostic permutes through masks too
        noisy = pooled.clone()
        noisy[:, dropped] += torch.randn(6, len(dropped)) * 10
        torch.testing.assert_close(model.classify(noisy), logits)
        noisy[:, keep[0]] += 10
        assert not torch.allclose(model.classify(noisy), logits)

    # an inner layer: block2 (8 channels) masked by a hook, pooled computed from it
    block_keep = [1, 3, 7]
    model = NullifiedModel(net, "block2", block_keep)

    def plant(channel):
        def hook(module, inputs, out):
            out = out.clone()
            out[:, channel] += 5.0
            return out
        return net.block2.register_forward_hook(hook)

    with torch.no_grad():
        want = nullified_logits(net, [x], "block2", block_keep)
        torch.testing.assert_close(model(x), want)
        handle = plant(4)  # runs before the mask's hook: a dropped channel
        try:
            torch.testing.assert_close(model(x), want)
        finally:
            handle.remove()
        handle = plant(3)  # a kept channel
        try:
            assert not torch.allclose(model(x), want)
        finally:
            handle.remove()
        torch.testing.assert_close(model(x), want)  # no hook left behind
    with pytest.raises(ValueError, match="layer"):
        NullifiedModel(net, "nope", keep)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        NullifiedModel(net, "pooled", [16])


def test_masked_teachers_are_their_jobs_for_training_and_their_masks_for_the_diagnostic():
    job = dv._mvd_job(config(), 2, ("overlap", 10), "xa", 0)
    masked = dv.Masked(job, "pooled", (0, 2))
    assert dv._ref(masked) == (job, None) and dv._key(masked) == (job.key, None)
    st = dv.Setting("s", "f", True, {0: masked}, {0: job}, {"kd": {0: job}})
    assert [j.key for j in dv._jobs([st])] == [job.key]


def _kd_only_frame():
    """Six settings whose C2KD gain was measured and four (nullified teachers) with KD only."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(10):
        both = i < 6
        gain = float(rng.normal())
        rows.append({
            "setting": f"s{i}", "family": "mfeat" if both else "avmnist_mini nullified",
            "real": True, "teacher_acc": 80.0, "student_acc": 70.0, "advantage": 10.0,
            "krc_mean": float(rng.normal()), "keep_share": float(rng.random()),
            "gamma_hat": float(rng.random()), "target_gap": float(rng.normal()),
            "pred_kd": ["help", "hurt", "unclear"][i % 3],
            "pred_c2kd": ["unclear", "help"][i % 2],
            "gain_kd": gain, "low_kd": gain - 1, "high_kd": gain + 1,
            "meas_kd": "help" if gain > 1 else "hurt" if gain < -1 else "unclear",
            "gain_c2kd": gain / 2 if both else np.nan,
            "low_c2kd": gain / 2 - 1 if both else np.nan,
            "high_c2kd": gain / 2 + 1 if both else np.nan,
            "meas_c2kd": ("help" if i % 2 else "unclear") if both else None,
            "epochs_run": 3})
    return pd.DataFrame(rows)


def test_scoring_counts_c2kd_only_where_it_was_measured():
    df = _kd_only_frame()
    assert dv.measured_methods(df) == ["kd", "c2kd"]
    table = dv.score_table(df, n_boot=200)
    n = table.set_index(["settings", "method"])["n"]
    assert n["all", "KD"] == 10 and n["all", "C2KD"] == 6
    assert n[dv.NULLIFIED, "KD"] == 4 and (dv.NULLIFIED, "C2KD") not in n
    assert n["mfeat", "C2KD"] == 6
    c2 = dv.scores(df[df.meas_c2kd.notna()], "c2kd", n_boot=200)
    row = table[(table.settings == "all") & (table.method == "C2KD")].iloc[0]
    assert row.agreement == c2["agreement"].text and row.Spearman == c2["spearman"].text
    claims = dv.claims(df, n_boot=200)
    c2_rows = claims[claims.artefact.str.startswith("C2KD")]
    assert len(c2_rows) == 2 and c2_rows.iloc[0].claim.endswith("n=6)")
    assert claims.claim.str.contains(f"({dv.NULLIFIED}, n=4)", regex=False).any()
    shown = dv.per_setting(df)
    assert shown.meas_c2kd.isna().sum() == 4 and shown.gain_c2kd.isna().sum() == 4
    assert dv.plot_scatter(df) is not None and dv.plot_indicators(df) is not None
    assert dv.confusion(df, "c2kd").iloc[:, 1:].to_numpy().sum() == 6
    # KD only everywhere: no C2KD column is scored
    kd_only = df.assign(meas_c2kd=None, gain_c2kd=np.nan)
    assert dv.measured_methods(kd_only) == ["kd"]
    assert set(dv.score_table(kd_only, n_boot=200).method) == {"KD"}
    assert not dv.claims(kd_only, n_boot=200).artefact.str.startswith("C2KD").any()


def test_default_profile_carries_notebook_05s_default_params():
    """09's copy of 05's parameters is 05's params file: the settings' jobs are 05's."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    nine = yaml.safe_load((root / "params/default/09_diagnostic_validation.yaml").read_text())
    five = yaml.safe_load((root / "params/default/05_feature_ranking.yaml").read_text())
    assert "feature_nullified" in nine["extra_settings"]
    assert nine["feature_ranking"] == five
    smoke = yaml.safe_load((root / "params/smoke/09_diagnostic_validation.yaml").read_text())
    assert not smoke.get("extra_settings")  # the smoke profile stays cheap
    with pytest.raises(ParamError, match="feature_ranking"):
        config(extra_settings=["feature_nullified"]).preflight()
    with pytest.raises(ParamError, match="feature_ranking.*missing"):
        config(feature_ranking={"seed": 0})


def _tiny_feature_ranking() -> dict:
    """Notebook 05's smoke parameters, smaller still: one ratio, no sweep, no Grad-CAM."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    values = yaml.safe_load((root / "params/smoke/05_feature_ranking.yaml").read_text())
    values.update(ratios=[0.5], sweep_ratios=[], sweep_permutations=[],
                  permutations=2, rank_epochs=2, gradcam_images=0, device="cpu", processes=1,
                  teacher_options={"channels": 2}, official_half_mask=True)
    return values


def test_nullified_settings_are_notebook_05s_jobs_and_masked_teachers(tmp_path):
    """The settings feature_nullified end to end on a tiny notebook 05: the same job keys as
    05's own run, a teacher the diagnostic sees with 05's mask (its accuracy is 05's
    teacher_score of the derived teacher), KD measured alone beside a setting with C2KD."""
    import torch

    from cmkd.experiments import feature_ranking as fr
    from cmkd.jobs import load_model
    from cmkd.mfh import nullified_logits

    five = _tiny_feature_ranking()
    cfg = config(methods=["kd", "c2kd"], extra_settings=["feature_nullified"],
                 feature_ranking=five)
    df = dv.run(cfg, cache=tmp_path, progress=False)
    sets = dv.settings(cfg, tmp_path)
    nul = [st for st in sets if st.family == "avmnist_mini nullified"]
    assert [st.info["kind"] for st in nul] == ["regular", "specific", "random", "general",
                                               "official_half"]
    assert len(df) == 1 + 5 and list(df.setting[1:]) == [st.name for st in nul]
    # KD alone on 05's settings: C2KD empty there and scored on the MVD setting only
    assert df.meas_c2kd.isna().sum() == 5 and df.meas_c2kd.notna().sum() == 1
    assert df.meas_kd.notna().all() and np.isfinite(df.gain_kd).all()
    assert df.pred_kd.notna().all() and np.isfinite(df.gamma_hat).all()

    # notebook 05's own run: the same jobs (so cached, nothing trains twice)
    fconf = params.from_mapping(fr.Config, five, "test")
    res = fr.run(fconf, cache=tmp_path, progress=False)
    table = res[res.grid == "table"].set_index("kind")
    base = res[res.grid == "base"].set_index("kind")
    seed = fr.run_seed(fconf, 0)
    for st in nul:
        kind = st.info["kind"]
        assert list(st.students) == ["kd"] and list(st.teacher) == [seed]
        assert st.students["kd"][seed].key == table.key[kind]
        assert st.student[seed].key == base.key["nokd"]
        assert dv._ref(st.teacher[seed])[0].key == base.key["teacher"]
        assert st.students["kd"][seed].teacher.key == base.key["teacher"]
        # the diagnostic's teacher outputs: masked exactly as 05 scores the derived teacher
        out = dv._outputs(st.teacher[seed], tmp_path, {})
        acc = 100 * float((out["logits"].argmax(-1) == out["label"]).double().mean())
        assert acc == pytest.approx(table.teacher_acc[kind], abs=1e-4)  # 05: float32
        keep = list(st.students["kd"][seed].hparams["keep"])
        assert len(keep) == table.kept[kind]
        dropped = sorted(set(range(out["pooled"].shape[1])) - set(keep))
        if kind == "regular":
            assert not dropped and not isinstance(st.teacher[seed], dv.Masked)
            continue
        assert isinstance(st.teacher[seed], dv.Masked) and list(st.teacher[seed].keep) == keep
        assert (out["pooled"][:, dropped] == 0).all()
        job = st.teacher[seed].job
        model = load_model(job, tmp_path).eval()
        x = torch.cat([b[job.inputs[0]] for b in fr._loader(job, "test", 256)])
        with torch.no_grad():
            want = nullified_logits(model, [x], "pooled", keep)
        torch.testing.assert_close(out["logits"], want)
    # the regular teacher and a derived one are different models to the diagnostic
    memo: dict = {}
    reg, gen = nul[0].teacher[seed], nul[3].teacher[seed]
    assert not torch.equal(dv._outputs(reg, tmp_path, memo)["pooled"],
                           dv._outputs(gen, tmp_path, memo)["pooled"])
    assert dv.score_table(df, n_boot=200).query("method == 'C2KD'").empty  # 1 setting < 3
