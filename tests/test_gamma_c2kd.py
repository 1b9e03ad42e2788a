"""K-class MVD data, the grouped MLP layers, and notebook 08's experiment module (gamma meets
C2KD): its stacked jobs (one teacher job and one student job per method, each a stack of every
(gamma, run)), its run on a tiny config, serial and in worker processes, and its summaries,
claims and figures on planted data."""
import dataclasses
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from cmkd import data
from cmkd import methods as registry
from cmkd.data import mvd
from cmkd.experiments import gamma_c2kd as g8
from cmkd.jobs import Job, ProcessExecutor, load_model, read_history
from cmkd.jobs.job import canonical
from cmkd.models import BatchedBatchNorm, BatchedLinear
from cmkd.params import ParamError, from_mapping
from cmkd.runtime import seed_for


# ----------------------------------------------------------------------------- K-class MVD
def test_multiclass_labels_follow_the_decision_rule():
    spec = mvd.vary_gamma_spec(4)
    d = mvd.generate_multiclass(spec, 3000, np.random.default_rng(0), classes=6)
    assert d.delta.shape == (6, 20) and set(np.unique(d.y)) == set(range(6))
    # labels come from the float64 latent features the float32 x_star was rounded from; the
    # rounding can flip a near-tie, so compare on a large majority and exactly on the margin
    scores = np.asarray(d.x_star, np.float64) @ d.delta.T
    top2 = np.sort(scores, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5
    np.testing.assert_array_equal(d.y[clear], np.argmax(scores, 1)[clear])
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(d.xa[:, list(spec.pos_a)], d.x_star[:, list(spec.J1)])
    np.testing.assert_array_equal(d.xb[:, list(spec.pos_b)], d.x_star[:, list(spec.J2)])
    assert np.bincount(d.y).min() > 3000 / 6 / 3  # no class vanishes
    test = mvd.generate_multiclass(spec, 10, np.random.default_rng(1), 6, d.delta)
    assert test.delta is not None and np.array_equal(test.delta, d.delta)


def test_two_class_rule_is_the_binary_rule_and_binary_path_is_unchanged():
    spec = mvd.vary_gamma_spec(10)
    d = mvd.generate_multiclass(spec, 500, np.random.default_rng(3), classes=2)
    w = d.delta
    binary = (np.asarray(d.x_star, np.float64) @ (w[1] - w[0]) > 0).astype(np.int64)
    np.testing.assert_array_equal(d.y, binary)
    # the binary generator draws exactly what it drew before (fixed values, seed 0)
    b = mvd.generate(mvd.vary_gamma_spec(2), 3, np.random.default_rng(0))
    ref = np.random.default_rng(0)
    delta = ref.standard_normal(20)
    x_star = ref.standard_normal((3, 20))
    np.testing.assert_array_equal(b.delta, delta)
    np.testing.assert_array_equal(b.y, (x_star @ delta > 0).astype(np.int64))


def test_multiclass_errors():
    spec = mvd.vary_gamma_spec(0)
    with pytest.raises(ValueError, match="classes must be >= 2"):
        mvd.generate_multiclass(spec, 5, np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match=r"weights must have shape \(3, 20\)"):
        mvd.generate_multiclass(spec, 5, np.random.default_rng(0), 3, np.zeros((2, 20)))


# ----------------------------------------------------------------------------- grouped layers
def test_batched_linear_matches_nn_linear_and_batchnorm_is_per_run():
    lin = BatchedLinear(4, 3, [5, 6])
    x = torch.randn(2, 7, 4)
    for r in range(2):
        ref = torch.nn.Linear(4, 3)
        with torch.no_grad():
            ref.weight.copy_(lin.weight[r].T)
            ref.bias.copy_(lin.bias[r])
        torch.testing.assert_close(lin(x)[r], ref(x[r]))
    bn = BatchedBatchNorm(2, 3)
    h = torch.randn(2, 9, 3) * torch.tensor([[[1.0]], [[5.0]]])
    out = bn(h)
    for r in range(2):
        torch.testing.assert_close(out[r], torch.nn.BatchNorm1d(3)(h[r]))


# ----------------------------------------------------------------------------- notebook 08
SMALL = dict(seed=0, n_runs=2, gammas=[0.0, 1.0], classes=3, n_train=64, n_test=64, hidden=8,
             teacher_epochs=2, epochs=2, batch_size=32, lr=0.05,
             method_hparams={"kd": {"temperature": 1.0}, "dml": {"temperature": 1.0},
                             "c2kd": {"omega": 0.0}},
             methods=list(g8.METHODS), device="cpu")
ONLINE = {"dml", *g8.C2KD_VARIANTS}  # the methods that train the teacher side too


def _config(**change):
    return from_mapping(g8.Config, dict(SMALL, **change))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Every method of notebook 08 on the tiny config, in a cache of its own: (config, cache,
    results)."""
    cache = tmp_path_factory.mktemp("cache08")
    cfg = _config()
    return cfg, cache, g8.run(cfg, cache=cache, progress=False)


def test_the_stack_is_one_run_per_gamma_and_run_seeded_by_seed_overlap_run():
    cfg = _config(gammas=[1.0, 0.0, 0.43], n_runs=3, seed=7)
    runs = g8.stack(cfg)
    overlaps = [0, 6, 10]  # gamma 0.43 is overlap 6 (6 / 14); gammas in increasing order
    assert [(r["dataset_options"]["overlap"], r["dataset_options"]["run"]) for r in runs] == \
        [(o, r) for o in overlaps for r in range(3)]
    assert [r["seed"] for r in runs] == [seed_for(7, o, r) % 2**31
                                         for o in overlaps for r in range(3)]
    assert len({r["seed"] for r in runs}) == len(runs)
    teacher = g8.teacher_job(cfg)
    assert teacher.kind == "teacher" and teacher.method == "nokd" and teacher.seed == 7
    assert teacher.runs == Job(dataset="mvd", model="mlp", inputs=("xa",), runs=runs,
                               model_options=teacher.model_options).runs
    for m in g8.METHODS:  # every job stacks the same runs (the methods meet on the same data)
        job = g8.student_job(cfg, m)
        assert job.runs == teacher.runs and job.seed == 7, m
        assert [r["seed"] for r in job.runs] == job.run_seeds()
    # the order of the params file's gammas does not change the jobs (nor their cache keys)
    shuffled = dataclasses.replace(cfg, gammas=[0.43, 1.0, 0.0])
    assert g8.student_job(shuffled, "c2kd").key == g8.student_job(cfg, "c2kd").key
    # nor does the list of methods: a job is the same whichever others run beside it
    fewer = dataclasses.replace(cfg, methods=["nokd", "kd"])
    assert g8.student_job(fewer, "kd").key == g8.student_job(cfg, "kd").key
    assert g8.stack(dataclasses.replace(cfg, seed=8)) != runs


def test_data_layout_per_gamma():
    """Each run's data: x^a 25-d and x^b 50-d observe 10 decisive features each and share
    ``overlap`` of them (channels 10 - o .. 9 of both), drawn from (seed, overlap, run)."""
    cfg = _config(gammas=[0.0, 0.25, 1.0], n_train=200, classes=4)
    job = g8.student_job(cfg, "kd")
    draws = {}
    for r, run in enumerate(job.runs):
        opts = job.run_dataset_options(r)
        o = opts["overlap"]
        assert opts == {**job.dataset_options, **run["dataset_options"]}
        assert (opts["classes"], opts["n_train"], opts["n_test"], opts["seed"]) == (4, 200, 64, 0)
        train = data.load("mvd", None, "train", **opts).tensors
        assert train["xa"].shape == (200, 25) and train["xb"].shape == (200, 50)
        assert set(train["label"].tolist()) <= set(range(4))
        xa, xb = train["xa"].numpy(), train["xb"].numpy()
        same = [(i, j) for i in range(25) for j in range(50) if np.array_equal(xa[:, i], xb[:, j])]
        assert same == [(c, c) for c in range(10 - o, 10)], (o, same)
        assert mvd.vary_gamma_spec(o).gamma == pytest.approx([0.0, 0.25, 1.0][[0, 4, 10].index(o)],
                                                             abs=0.01)
        test = data.load("mvd", None, "test", **opts).tensors
        assert test["xa"].shape == (64, 25) and len(data.load("mvd", None, "val", **opts)) == 0
        again = data.load("mvd", None, "train", **opts).tensors
        assert torch.equal(again["xb"], train["xb"])  # determined by its options
        draws[(o, opts["run"])] = train["xb"]
    # two runs of one gamma are two draws
    assert not torch.equal(draws[(4, 0)], draws[(4, 1)])


def test_jobs_are_the_registry_s_methods_with_the_params_file_s_hparams():
    cfg = _config(method_hparams={"kd": {"temperature": 2.0}, "dml": {"temperature": 3.0},
                                  "c2kd": {"omega": 0.1}, "dkd": {"warmup_epochs": 3},
                                  "fitnet": {"feat_weight": 0.5}})
    teacher = g8.teacher_job(cfg)
    assert teacher.inputs == ("xa",) and teacher.model == "mlp"
    assert teacher.model_options["in_features"] == 25 and teacher.epochs == cfg.teacher_epochs
    assert teacher.model_options["hidden"] == [8, 8] and teacher.model_options["classes"] == 3
    for m in g8.METHODS:
        job = g8.student_job(cfg, m)
        name, preset = registry.resolve(m)
        hp = registry.get(name).make_hparams(registry.hparams_for(m, cfg.method_hparams)[1])
        assert job.method == name and job.hparams == canonical(dataclasses.asdict(hp)), m
        assert all(job.hparams[k] == v for k, v in preset.items()), m
        assert job.inputs == ("xb",) and job.model_options["in_features"] == 50, m
        assert job.epochs == cfg.epochs and job.optim.lr == cfg.lr, m
        if m == "nokd":
            assert job.teacher is None
        else:
            assert job.teacher is not None and job.teacher.key == teacher.key, m
        if name == "c2kd":
            assert job.hparams["omega"] == 0.1, m  # the method's setting reaches every preset
    assert g8.student_job(cfg, "kd").hparams["temperature"] == 2.0
    assert g8.student_job(cfg, "dml").hparams["temperature"] == 3.0
    assert g8.student_job(cfg, "dkd").hparams["warmup_epochs"] == 3
    assert g8.student_job(cfg, "fitnet").hparams["feat_weight"] == 0.5
    assert g8.student_job(cfg, "c2kd_top1").hparams["teacher_update"] == "top_k"
    assert g8.student_job(cfg, "c2kd_top1").hparams["teacher_top_k"] == 1
    with pytest.raises(ValueError, match="method must be one of"):
        g8.student_job(cfg, "rkd")


def test_run_gives_one_row_per_method_gamma_and_run(tiny):
    cfg, cache, df = tiny
    assert list(df.columns) == ["gamma", "overlap", "run", "method", "student_acc",
                                "teacher_acc", "teacher_end_acc", "keep", "krc_nokd",
                                "keep_nokd"]
    assert len(df) == len(g8.METHODS) * 2 * cfg.n_runs
    assert not df.duplicated(["method", "gamma", "run"]).any()
    assert set(df.method) == set(g8.METHODS) and set(df.gamma) == {0.0, 1.0}
    assert set(df.run) == set(range(cfg.n_runs))
    assert (df.gamma == [mvd.vary_gamma_spec(o).gamma for o in df.overlap]).all()
    assert df.student_acc.between(0, 100).all() and np.isfinite(df.student_acc).all()
    assert np.isfinite(df.teacher_acc).all() and np.isfinite(df.teacher_end_acc).all()
    # one teacher stack: its accuracy is the same for every method of a (gamma, run), the no-KD
    # student's rows included (they report the teacher of the run)
    assert (df.groupby(["gamma", "run"]).teacher_acc.nunique() == 1).all()
    offline = df[~df.method.isin(ONLINE)]
    assert (offline.teacher_end_acc == offline.teacher_acc).all()  # the teacher stays fixed
    c2 = df.method.str.startswith("c2kd")
    assert df[c2].keep.between(0, 1).all() and df[~c2].keep.isna().all()
    assert (df[df.method.isin(["c2kd_bd", "c2kd_bd_nt"])].keep == 1).all()  # no selection
    assert df.krc_nokd.between(-1, 1).all() and df.keep_nokd.between(0, 1).all()
    assert (df.groupby(["gamma", "run"])[["krc_nokd", "keep_nokd"]].nunique() == 1).all().all()
    assert df.attrs["jobs"] == len(g8.METHODS) + 1 and df.attrs["processes"] == 1
    assert df.attrs["device"] == "cpu"
    summary = g8.summarize(df)
    assert list(summary.method) == [g8.LABELS[m] for m in g8.METHODS]
    assert list(summary.columns) == ["method", "0.00 mean", "0.00 std", "1.00 mean", "1.00 std"]
    # a rerun reads every job from the cache: the same frame, nothing trained again
    before = sorted(p.name for p in cache.iterdir())
    pd.testing.assert_frame_equal(g8.run(cfg, cache=cache, progress=False), df)
    assert sorted(p.name for p in cache.iterdir()) == before


def test_worker_processes_give_the_serial_frame(tiny, tmp_path):
    """A job's numbers do not depend on where it ran: the stacks trained in two spawned
    worker processes (the path CUDA takes) give the frame of the serial run."""
    cfg, cache, _ = tiny
    cfg = dataclasses.replace(cfg, methods=["nokd", "kd", "dml", "c2kd"])
    serial = g8.run(cfg, cache=cache, progress=False)  # the same jobs: from the tiny run's cache
    # the teacher stack is given (one round of worker processes, each importing torch, not two)
    key = g8.teacher_job(cfg).key
    shutil.copytree(cache / key, tmp_path / key)
    parallel = g8.run(cfg, cache=tmp_path, executor=ProcessExecutor(2), progress=False)
    assert parallel.attrs["processes"] == 2 and serial.attrs["processes"] == 1
    assert len(list(tmp_path.iterdir())) == 1 + 4  # the 4 student stacks trained there
    pd.testing.assert_frame_equal(serial, parallel)


def test_on_cuda_the_student_jobs_default_to_worker_processes(tiny, monkeypatch):
    cfg, cache, df = tiny
    made = []

    class Recorder:  # stands for ProcessExecutor; runs nothing (every job is cached)
        def __init__(self, processes):
            self.processes = processes
            made.append(processes)

        def map(self, fn, jobs):
            raise AssertionError("nothing should run")

    monkeypatch.setattr(g8, "select_device", lambda preference: torch.device("cuda"))
    monkeypatch.setattr(g8, "ProcessExecutor", Recorder)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    out = g8.run(cfg, cache=cache, progress=False)
    assert made == [4] and out.attrs["processes"] == 4 and out.attrs["device"] == "cuda"
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # one per method at most
    g8.run(cfg, cache=cache, progress=False)
    assert made[-1] == len(g8.METHODS)
    pd.testing.assert_frame_equal(out, df)


def test_dml_and_c2kd_bd_only_are_the_same_objective_and_train_alike(tmp_path):
    """DML and C2KD's 'BD only' preset both minimise CE(S) + KL(T||S) + CE(T) + KL(S||T) with
    both sides trained from the pretrained teacher at T = 1; with the same seeds and batch order
    they train to the same weights, bit for bit (only the logged loss differs, in its last bits:
    the terms are summed in another order)."""
    cfg = _config(n_train=256, n_test=128, hidden=16, teacher_epochs=4, epochs=10,
                  methods=["nokd", "kd", "dml", "c2kd_bd"])
    dml, bd = g8.student_job(cfg, "dml"), g8.student_job(cfg, "c2kd_bd")
    assert (dml.hparams["temperature"], dml.hparams["kd_weight"]) == (1.0, 1.0)
    assert {k: bd.hparams[k] for k in ("bd", "ofs", "nt", "proxy", "temperature", "lambda3",
                                       "teacher_update")} == \
        dict(bd=True, ofs=False, nt=False, proxy=False, temperature=1.0, lambda3=1.0,
             teacher_update="all")
    assert dml.teacher.key == bd.teacher.key and dml.runs == bd.runs and dml.seed == bd.seed
    df = g8.run(cfg, cache=tmp_path, progress=False)
    a = df[df.method == "dml"].reset_index(drop=True)
    b = df[df.method == "c2kd_bd"].reset_index(drop=True)
    cols = ["gamma", "run", "student_acc", "teacher_acc", "teacher_end_acc"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    # the final student weights are identical; KD's (one-way, frozen teacher) are not
    m_dml, m_bd, m_kd = (load_model(j, tmp_path) for j in (dml, bd, g8.student_job(cfg, "kd")))
    for (name, p), q in zip(m_dml.state_dict().items(), m_bd.state_dict().values()):
        assert torch.equal(p, q), name
    assert not all(torch.equal(p, k) for p, k in zip(m_dml.state_dict().values(),
                                                     m_kd.state_dict().values()))
    assert (a.teacher_end_acc != a.teacher_acc).any()  # the teacher side did train
    ha, hb = read_history(dml, tmp_path), read_history(bd, tmp_path)
    np.testing.assert_array_equal(ha.test_accuracy, hb.test_accuracy)
    np.testing.assert_array_equal(ha.train_accuracy, hb.train_accuracy)
    np.testing.assert_allclose(ha.total, hb.total, rtol=1e-6)
    np.testing.assert_allclose(ha.student + ha.teacher, hb.ce_student + hb.ce_teacher + hb.cross,
                               rtol=1e-6)
    assert (hb.keep == 1).all()


def test_config_errors():
    with pytest.raises(ParamError, match="'methods': must include 'nokd' and 'kd'"):
        _config(methods=["kd", "c2kd"])
    with pytest.raises(ParamError, match="'methods': 'c3kd' is not allowed"):
        _config(methods=["nokd", "kd", "c3kd"])
    # a registry method this notebook does not run (DLB needs its own batch order)
    with pytest.raises(ParamError, match="'methods': 'dlb' is not allowed"):
        _config(methods=["nokd", "kd", "dlb"])
    with pytest.raises(ParamError, match="'gammas': gamma = 0.3 is not reachable"):
        _config(gammas=[0.3])
    # the former top-level temperature / omega are per method now
    with pytest.raises(ParamError, match="'temperature': unknown parameter"):
        from_mapping(g8.Config, dict(SMALL, temperature=1.0))
    with pytest.raises(ParamError, match="'omega'"):
        _config(method_hparams={"c2kd": {"omega": 5.0}})
    with pytest.raises(ParamError, match="unknown method 'c3kd'"):
        _config(method_hparams={"c3kd": {"omega": 0.0}})


# ----------------------------------------------------------------------------- planted data
def _planted(advantage_slope=-6.0, kd_slope=8.0, keep_slope=0.5, c2kd_offset=4.0,
             teacher_slope=0.0):
    rows = []
    g = np.random.default_rng(0)
    for gamma in (0.0, 0.25, 0.67, 1.0):
        for run in range(8):
            teacher = 50 + teacher_slope * gamma + g.normal()
            base = dict(gamma=gamma, overlap=mvd.gamma_to_overlap(gamma), run=run,
                        teacher_acc=teacher, teacher_end_acc=teacher, krc_nokd=gamma,
                        keep_nokd=0.4 + keep_slope * gamma + 0.01 * g.normal())
            nokd = 40 + g.normal()
            kd = nokd - 5 + kd_slope * gamma + g.normal()
            c2 = kd + c2kd_offset + advantage_slope * gamma + 0.5 * g.normal()
            for method, acc in (("nokd", nokd), ("kd", kd), ("c2kd", c2)):
                keep = 0.5 + 0.3 * gamma if method == "c2kd" else np.nan
                rows.append(dict(base, method=method, student_acc=acc, keep=keep))
    return pd.DataFrame(rows)


def _verdicts(df):
    out = g8.claims(df)
    assert list(out.columns) == ["artefact", "claim", "evidence", "interval", "verdict"]
    assert set(out.verdict) <= {"held", "NOT held", "undecided"}
    return out.set_index("claim").verdict


def test_claims_detect_planted_trends():
    v = _verdicts(_planted())
    assert v["KD's gain over no-KD rises with gamma"] == "held"
    assert v["the KRC filter keeps more samples as gamma grows"] == "held"
    assert v["C2KD's advantage over KD is largest where gamma is small"] == "held"
    assert v["C2KD beats KD on average over gammas"] == "held"
    assert v["teacher accuracy shows no trend with gamma (fixed teacher information)"] == "held"
    # no trend in C2KD's advantage: neither shown nor refuted
    flat = _verdicts(_planted(advantage_slope=0.0))
    assert flat["C2KD's advantage over KD is largest where gamma is small"] == "undecided"
    assert flat["C2KD beats KD on average over gammas"] == "held"
    assert flat["C2KD beats no KD on average over gammas"] == "held"
    # every effect reversed: refuted
    none = _verdicts(_planted(advantage_slope=6.0, kd_slope=-8.0, keep_slope=-0.5,
                              c2kd_offset=-4.0, teacher_slope=20.0))
    assert none["KD's gain over no-KD rises with gamma"] == "NOT held"
    assert none["the KRC filter keeps more samples as gamma grows"] == "NOT held"
    assert none["C2KD's advantage over KD is largest where gamma is small"] == "NOT held"
    assert none["C2KD beats KD on average over gammas"] == "NOT held"
    assert none["teacher accuracy shows no trend with gamma (fixed teacher information)"] \
        == "NOT held"
    # a flat teacher, but one run per gamma cannot show it: undecided
    noisy = _verdicts(_planted().query("run == 0"))
    assert noisy["teacher accuracy shows no trend with gamma (fixed teacher information)"] \
        == "undecided"
    # without C2KD rows only the KD and setting claims are asked
    assert len(g8.claims(_planted().query("method != 'c2kd'"))) == 3


def test_claims_evidence_and_intervals():
    out = g8.claims(_planted()).set_index("claim")
    beats = out.loc["C2KD beats KD on average over gammas"]
    assert beats.evidence.startswith("C2KD - KD +") and beats.evidence.endswith(
        "points, paired over 32 runs")
    assert beats.interval.endswith(" points") and beats.interval in beats.evidence + " points"
    trend = out.loc["teacher accuracy shows no trend with gamma (fixed teacher information)"]
    assert trend.evidence.endswith("a trend counts from 3 points per unit gamma")
    assert trend.interval.endswith("points per unit gamma")


def test_per_run_table_keeps_every_run():
    df = _planted()
    t = g8.per_run(df)
    assert list(t.columns) == ["method", "gamma", *[f"run {r}" for r in range(8)], "mean",
                               "std"]
    assert list(t.method.unique()) == ["no KD", "KD", "C2KD"]
    kd = df[(df.method == "kd") & (df.gamma == 0.25)].sort_values("run").student_acc
    row = t[(t.method == "KD") & (t.gamma == 0.25)].iloc[0]
    np.testing.assert_allclose(row[[f"run {r}" for r in range(8)]].to_numpy(float), kd)
    assert row["mean"] == pytest.approx(kd.mean()) and row["std"] == pytest.approx(kd.std(ddof=0))


def test_summaries_of_planted_data():
    df = _planted()
    s = g8.summarize(df)
    assert list(s.method) == ["no KD", "KD", "C2KD"]
    ref = df.groupby(["method", "gamma"]).student_acc
    assert s.loc[1, "0.25 mean"] == pytest.approx(ref.mean()[("kd", 0.25)])
    assert s.loc[2, "1.00 std"] == pytest.approx(ref.std(ddof=0)[("c2kd", 1.0)])
    a = g8.alignment(df).set_index("gamma")
    assert list(a.index) == [0.0, 0.25, 0.67, 1.0]
    assert a.keep_c2kd_end.to_numpy() == pytest.approx(0.5 + 0.3 * a.index.to_numpy())
    assert a.krc_nokd.to_numpy() == pytest.approx(a.index.to_numpy())
    # planted: C2KD - KD = 4 - 6 gamma (+ noise of sd 0.5), KD - no KD = -5 + 8 gamma (+ sd 1)
    assert a.c2kd_minus_kd_mean.to_numpy() == pytest.approx(4 - 6 * a.index.to_numpy(), abs=0.6)
    assert a.kd_minus_nokd_mean.to_numpy() == pytest.approx(-5 + 8 * a.index.to_numpy(), abs=1.2)
    assert "c2kd_minus_kd_mean" not in g8.alignment(df[df.method != "c2kd"])


def test_figures_draw_planted_and_run_results(tiny):
    for df in (_planted(), tiny[2]):
        for plot in (g8.plot_accuracy, g8.plot_alignment):
            fig = plot(df)
            assert fig.axes and all(ax.has_data() for ax in fig.axes if ax.get_xlabel())
            plt.close(fig)
    fig = g8.plot_accuracy(tiny[2])
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert {g8.LABELS[m] for m in g8.BASELINES} | {"C2KD"} <= labels
    plt.close(fig)
