"""Notebook 08: MFH's gamma meets C2KD, on K-class MVD data with small MLPs (beyond both papers).

For every gamma (MFH Fig. 2 layout: each modality observes 10 of 20 latent decisive features and
they share ``o`` of them, so the teacher's and the student's information stays fixed while gamma
moves) and every run: K-class MVD data (MFH Eq. 3: ``y = argmax(W x*)``; the registered dataset
``mvd``), an MLP teacher on x^a, then MLP students on x^b trained with each distillation method.

Jobs (:mod:`cmkd.jobs`), like every real-data notebook: one teacher job and one student job per
method, each a *stack* of every (gamma, run) (R = gammas x runs MLPs trained at once as grouped
layers, :class:`cmkd.models.batched.BatchedMLP`, through the one loop :func:`cmkd.engine.fit`);
finished jobs come from the cache.  Run r of every job is seeded alike (its data draw, its
initialisation, the batch order), so the methods are compared on the same runs.  There is no
validation split: the scores are the last epoch's, and the test split is evaluated only then
(``test_every``: a test curve per epoch would cost a third more).

Methods: names of the method registry :mod:`cmkd.methods` or its presets
(:data:`cmkd.methods.PRESETS`).  'nokd'; offline KD from the fixed teacher: 'kd', 'dkd', 'dist',
'nkd', 'fitnet'; online: 'dml' (the peer starts from the trained teacher); C2KD (teacher starts
from the trained teacher and keeps learning) and its ablations (Table 5): 'c2kd' (proxy + OFS +
NT + BD), 'c2kd_top1' (as c2kd, teacher updated in its top layer only, Table 3's partial
variant), 'c2kd_official' (as c2kd with the official code's non-target KL: target logit zeroed
rather than removed, masked KL averaged over the whole batch rather than the kept samples),
'c2kd_noproxy' (OFS + NT + BD), 'c2kd_bd_nt' (NT + BD), 'c2kd_bd_ofs' (OFS + BD), 'c2kd_bd' (BD
only: bidirectional KD).  Every method takes the registry's defaults and the preset's switches,
then the params file's ``method_hparams`` (:func:`cmkd.methods.hparams_for`): the KD temperature
of KD and DML, C2KD's omega, DKD's warm-up epochs, FitNet's hint weight.  ``methods`` may also
name a method of your own, registered by a module of ``method_modules`` (imported when the jobs
are built; validation only finds it) or by an installed package's entry point; such a method is
labelled by its name and drawn among the baselines (cmkd's methods outside :data:`METHODS` are
refused).

On a CUDA device the student jobs train in parallel worker processes
(:class:`cmkd.jobs.ProcessExecutor`, one per method up to the number of CPU cores): these small
models keep the GPU waiting on each process's kernel launches, so several processes share it
well.  A job's numbers do not depend on where it ran.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cmkd import data
from cmkd import methods as registry
from cmkd.data import mvd
from cmkd.data.arrays import StackedDataset
from cmkd.jobs import Job, ProcessExecutor, load_model, read_history, run_jobs
from cmkd.jobs.cluster import configured_executor
from cmkd.metrics import kendall_tau
from cmkd.params import ParamError, check_each, spec
from cmkd.reporting import new_figure
from cmkd.runtime import DEVICES, device_available, seed_for, select_device, torch_threads
from cmkd.verdicts import claim_row, claims_frame, verdict_difference, verdict_slope

#: The methods of this notebook: names of the registry (cmkd.methods) or its presets.
BASELINES = ("nokd", "kd", "dkd", "dist", "nkd", "fitnet", "dml")
C2KD_VARIANTS = ("c2kd", "c2kd_top1", "c2kd_official", "c2kd_noproxy", "c2kd_bd_nt",
                 "c2kd_bd_ofs", "c2kd_bd")
METHODS = BASELINES + C2KD_VARIANTS
for _name in METHODS:  # each resolves in the registry (a ParamError at import otherwise)
    registry.resolve(_name)
LABELS = {"nokd": "no KD", "kd": "KD", "dkd": "DKD", "dist": "DIST", "nkd": "NKD",
          "fitnet": "FitNet", "dml": "DML", "c2kd": "C2KD", "c2kd_top1": "C2KD, teacher top layer",
          "c2kd_official": "C2KD, official code's NT-KL",
          "c2kd_noproxy": "C2KD w/o proxy (OFS+NT+BD)", "c2kd_bd_nt": "NT+BD",
          "c2kd_bd_ofs": "OFS+BD", "c2kd_bd": "BD only"}
#: batch keys of the two modalities of the ``mvd`` dataset (teacher, student)
TEACHER_INPUT, STUDENT_INPUT = "xa", "xb"


def _not_allowed(name: str) -> str:
    return (f"{name!r} is not allowed; choose one of {', '.join(map(repr, METHODS))}, or a "
            f"method of your own (its module in method_modules)")


def _check_method(name: str) -> None:
    """A ``methods`` item: one of :data:`METHODS`, or a method from outside cmkd (registered by
    the user's module, or not registered yet: :meth:`Config.check` decides).  cmkd's other
    methods are not offered here (DLB, for one, needs its own batch order)."""
    if name in METHODS:
        return
    if (name in registry.PRESETS or name in registry.REGISTRY) and \
            registry.user_module(name) is None:
        raise ValueError(_not_allowed(name))


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed of every draw", low=0))
    n_runs: int = field(metadata=spec("independent runs per gamma", low=1, high=100))
    gammas: list[float] = field(metadata=spec("gamma values (MFH Fig. 2 layout)", low=0, high=1,
                                              min_items=1))
    classes: int = field(metadata=spec("number of classes K of the MVD data", low=2, high=100))
    n_train: int = field(metadata=spec("training samples per run", low=16, high=1_000_000))
    n_test: int = field(metadata=spec("test samples per run", low=16, high=1_000_000))
    hidden: int = field(metadata=spec("width of the two hidden layers of every MLP", low=2,
                                      high=4096))
    teacher_epochs: int = field(metadata=spec("epochs of the teacher's training", low=1,
                                              high=10_000))
    epochs: int = field(metadata=spec("epochs of each student's training", low=1, high=10_000))
    batch_size: int = field(metadata=spec("mini-batch size", low=2, high=100_000))
    lr: float = field(metadata=spec("SGD learning rate (momentum 0.9, poly decay as C2KD)",
                                    low=0, high=10, low_open=True))
    method_hparams: dict = field(metadata=spec(
        "hyperparameters per method or preset over the registry's defaults, e.g. {kd: "
        "{temperature: 1.0}, c2kd: {omega: 0.0}}",
        validate=registry.check_method_hparams_deferred))
    method_modules: list[str] = field(kw_only=True, default_factory=list, metadata=spec(
        "modules of yours that register methods (cmkd.methods.register), by import path, "
        "imported when the jobs are built", validate=registry.check_module))
    tensorboard: bool = field(kw_only=True, default=False, metadata=spec(
        "write each trained job's history as TensorBoard event files under .cache/tb/<job key>/ "
        "(cmkd reproduce --tensorboard does it for every notebook)"))
    methods: list[str] = field(metadata=spec(
        "methods to train: names of the method registry cmkd.methods or its presets (one of "
        "method_modules' too)", min_items=1, validate=_check_method))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                       validate=device_available))

    def check(self) -> None:
        check_each("gammas", self.gammas, mvd.gamma_to_overlap)
        unknown = [m for m in self.methods if not registry.known(m)]
        if unknown and not self.method_modules:
            raise ParamError("methods", _not_allowed(unknown[0]))
        registry.check_names(self.method_hparams, "method_hparams", self.method_modules)
        if "nokd" not in self.methods or "kd" not in self.methods:
            raise ParamError("methods", "must include 'nokd' and 'kd' (the references)")

    def preflight(self) -> None:
        """The method modules are found on sys.path (not imported: :func:`run` does)."""
        registry.find_modules(self.method_modules)

    def user_code(self) -> list[tuple[str, str]]:
        """(parameter, import path) of the method modules :func:`run` imports."""
        return [("method_modules", m) for m in self.method_modules]


# ----------------------------------------------------------------------------- the jobs
def stack(config: Config) -> list[dict]:
    """The runs of every job: one per (gamma, run), gammas in increasing order; run r's seed
    and data draw are determined by (seed, overlap, run)."""
    overlaps = sorted({mvd.gamma_to_overlap(g) for g in config.gammas})
    return [{"seed": seed_for(config.seed, o, r) % 2**31,
             "dataset_options": {"overlap": o, "run": r}}
            for o in overlaps for r in range(config.n_runs)]


def _job(config: Config, **kw) -> Job:
    dims = dict(zip((TEACHER_INPUT, STUDENT_INPUT), mvd.VARY_GAMMA_DIMS))
    key = kw.pop("input")
    return Job(dataset="mvd", model="mlp", inputs=(key,),
               model_options={"in_features": dims[key], "classes": config.classes,
                              "hidden": [config.hidden, config.hidden], "modality": key},
               dataset_options={"classes": config.classes, "n_train": config.n_train,
                                "n_test": config.n_test, "seed": config.seed},
               runs=stack(config), optim={"optimizer": "sgd", "lr": config.lr,
                                          "momentum": 0.9, "schedule": "poly"},
               batch_size=config.batch_size, seed=config.seed, device=config.device, **kw)


def teacher_job(config: Config) -> Job:
    """The stack of MLP teachers on x^a (no KD)."""
    return _job(config, input=TEACHER_INPUT, kind="teacher", epochs=config.teacher_epochs,
                test_every=config.teacher_epochs)


def student_job(config: Config, method: str) -> Job:
    """The stack of MLP students on x^b trained by ``method`` (a registry name or preset, with
    the params file's ``method_hparams``); every method but 'nokd' reads the teacher job's
    models."""
    if method not in METHODS and method not in config.methods:
        raise ValueError(f"method must be one of {METHODS} or of config.methods, got "
                         f"{method!r}")
    name, hp = registry.hparams_for(method, config.method_hparams)
    teacher = teacher_job(config) if registry.get(name).needs_teacher else None
    return _job(config, input=STUDENT_INPUT, method=name, hparams=hp, teacher=teacher,
                epochs=config.epochs, test_every=config.epochs)


def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """The teacher stack, then every method's student stack (cached jobs are not rerun).

    Returns
    -------
    DataFrame, one row per (gamma, run, method): gamma, overlap, run, method, student_acc,
    teacher_acc (the pretrained teacher), teacher_end_acc (the teacher side at the end: changed
    by online methods), keep (C2KD: fraction of samples its filter kept in the last epoch),
    krc_nokd and keep_nokd (mean KRC between the pretrained teacher's and the no-KD student's
    test logits, and the fraction above C2KD's omega: how aligned the two modalities' soft
    labels are before any distillation).  ``attrs``: seconds, device, processes, jobs.
    """
    start = time.perf_counter()
    registry.activate(config.method_modules, config.method_hparams, config.methods)
    device = select_device(config.device)
    names = list(dict.fromkeys(["nokd", *config.methods]))
    jobs = {m: student_job(config, m) for m in names}
    if executor is None:  # cmkd reproduce --executor (CMKD_EXECUTOR)
        executor = configured_executor()
    if executor is None and device.type == "cuda":
        executor = ProcessExecutor(max(1, min(len(jobs), os.cpu_count() or 1)))
    with torch_threads(1 if device.type == "cpu" else None):
        rows = run_jobs([teacher_job(config), *jobs.values()], executor=executor, cache=cache,
                        progress=progress,
                        tensorboard=config.tensorboard or None)
        krc, keep_before = _alignment_before(config, jobs["nokd"], cache)
    teacher_acc = 100 * rows[rows.kind == "teacher"].test_at_best_val.astype(float).to_numpy()
    rows = rows[rows.kind == "student"].reset_index(drop=True)
    runs = stack(config)
    out = pd.DataFrame({
        "gamma": [mvd.vary_gamma_spec(runs[r]["dataset_options"]["overlap"]).gamma
                  for r in rows.run],
        "overlap": rows.data_overlap.to_numpy(), "run": rows.data_run.to_numpy(),
        "method": [m for m in names for _ in runs],
        "student_acc": 100 * rows.test_at_best_val.astype(float).to_numpy(),
        "teacher_acc": np.tile(teacher_acc, len(names)),
        "teacher_end_acc": np.where(pd.to_numeric(rows.teacher_end_test).notna(),
                                    100 * pd.to_numeric(rows.teacher_end_test),
                                    np.tile(teacher_acc, len(names))),
        "keep": np.concatenate([_last_keep(jobs[m], cache, len(runs)) for m in names]),
        "krc_nokd": np.tile(krc, len(names)), "keep_nokd": np.tile(keep_before, len(names))})
    out.attrs.update(seconds=time.perf_counter() - start, device=str(device), jobs=len(jobs) + 1,
                     processes=getattr(executor, "processes", 1))
    return out


def _last_keep(job: Job, cache, runs: int) -> np.ndarray:
    """The fraction of samples C2KD's filter kept in the last epoch, per run (NaN otherwise)."""
    h = read_history(job, cache)
    if "keep" not in h:
        return np.full(runs, np.nan)
    last = h[h.epoch == h.epoch.max()].sort_values("run")
    return last["keep"].to_numpy(dtype=float)


def _alignment_before(config: Config, nokd: Job, cache) -> tuple[np.ndarray, np.ndarray]:
    """Per run: mean KRC between the trained teacher's and the no-KD student's test logits, and
    the fraction of test samples above C2KD's omega (what its filter would keep before any
    distillation)."""
    omega = registry.get("c2kd").make_hparams(
        registry.hparams_for("c2kd", config.method_hparams)[1]).omega
    test = StackedDataset([data.load("mvd", None, "test", **nokd.run_dataset_options(r))
                           for r in range(len(nokd.runs))]).tensors
    teacher, student = load_model(teacher_job(config), cache), load_model(nokd, cache)
    with torch.no_grad():
        tau = kendall_tau(teacher(test[TEACHER_INPUT]), student(test[STUDENT_INPUT]), "a")
    return tau.mean(-1).numpy(), (tau > omega).float().mean(-1).numpy()


# ----------------------------------------------------------------------------- summaries
def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Student accuracy (mean, std over runs) per method (rows) and gamma (columns)."""
    g = df.groupby(["method", "gamma"]).student_acc
    mean = g.mean().unstack("gamma")
    std = g.std(ddof=0).unstack("gamma")
    order = _order(mean.index)
    out = pd.DataFrame(index=order)
    for gamma in mean.columns:
        out[f"{gamma:.2f} mean"] = mean.loc[order, gamma]
        out[f"{gamma:.2f} std"] = std.loc[order, gamma]
    out.insert(0, "method", [LABELS.get(m, m) for m in order])
    return out.reset_index(drop=True)


def _order(present) -> list[str]:
    """The methods of ``present`` in the notebook's order, other methods (the user's) last in
    their order of appearance."""
    present = list(dict.fromkeys(present))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def alignment(df: pd.DataFrame) -> pd.DataFrame:
    """Per gamma: teacher accuracy, KRC and keep fraction before distillation, C2KD's keep
    fraction at the end of training, and C2KD's advantage over KD (mean and std over runs)."""
    base = df[df.method == "kd"].set_index(["gamma", "run"])
    out = base.groupby("gamma").agg(teacher_acc=("teacher_acc", "mean"),
                                    krc_nokd=("krc_nokd", "mean"),
                                    keep_nokd=("keep_nokd", "mean"))
    if "c2kd" in set(df.method):
        c2 = df[df.method == "c2kd"].set_index(["gamma", "run"])
        adv = (c2.student_acc - base.student_acc).groupby("gamma")
        out["keep_c2kd_end"] = c2.groupby("gamma").keep.mean()
        out["c2kd_minus_kd_mean"] = adv.mean()
        out["c2kd_minus_kd_std"] = adv.std(ddof=0)
    kd_gain = (base.student_acc - df[df.method == "nokd"].set_index(["gamma", "run"])
               .student_acc).groupby("gamma")
    out["kd_minus_nokd_mean"] = kd_gain.mean()
    return out.reset_index()


#: "no trend": a teacher-accuracy slope within this many points per unit gamma counts as none
#: (a third of KD's gain slope in the default profile, about 9 points per unit gamma)
NO_TREND_MARGIN = 3.0


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """The questions of this notebook, each scored held / NOT held / undecided by the rule of
    :mod:`cmkd.verdicts`.

    Trends are least-squares slopes over all runs with their 95% interval; "C2KD beats X" is
    the mean over all runs of all gammas of the per-run difference (paired: run r of every
    method shares its data draw).  Each run draws its own test set, so the spread over runs
    already holds the test-sampling error.  "No trend" is held when the slope's interval lies
    inside +-:data:`NO_TREND_MARGIN` points per unit gamma.
    """
    out = []
    per_gamma = "points per unit gamma"
    kd = df[df.method == "kd"].set_index(["gamma", "run"])
    nokd = df[df.method == "nokd"].set_index(["gamma", "run"])
    gain = (kd.student_acc - nokd.student_acc).reset_index()
    v = verdict_slope(gain.gamma, gain.student_acc, alternative="greater", unit=per_gamma)
    out.append(claim_row("MFH Fig. 2 (K classes, MLPs)", "KD's gain over no-KD rises with gamma",
                         f"slope {v.text} {per_gamma} over {len(gain)} runs", v))
    unit = "fraction kept per unit gamma"
    v = verdict_slope(kd.reset_index().gamma, kd.keep_nokd, alternative="greater", unit=unit,
                      fmt="+.3f")
    out.append(claim_row("C2KD Eq. 4 vs MFH gamma",
                         "the KRC filter keeps more samples as gamma grows",
                         f"slope {v.text} ({unit}) over {len(kd)} runs", v))
    if "c2kd" in set(df.method):
        c2 = df[df.method == "c2kd"].set_index(["gamma", "run"])
        adv = (c2.student_acc - kd.student_acc).reset_index()
        v = verdict_slope(adv.gamma, adv.student_acc, alternative="less", unit=per_gamma)
        lo, hi = adv.gamma.min(), adv.gamma.max()
        m_lo = adv[adv.gamma == lo].student_acc.mean()
        m_hi = adv[adv.gamma == hi].student_acc.mean()
        out.append(claim_row("beyond both papers",
                             "C2KD's advantage over KD is largest where gamma is small",
                             f"slope {v.text} {per_gamma} over {len(adv)} runs; mean advantage "
                             f"{m_lo:+.2f} at gamma {lo:.2f}, {m_hi:+.2f} at gamma {hi:.2f}", v))
        for ref, name in ((kd, "KD"), (nokd, "no KD")):
            v = verdict_difference(c2.student_acc, ref.student_acc, alternative="greater")
            out.append(claim_row("C2KD Table 3 (K classes, MLPs)",
                                 f"C2KD beats {name} on average over gammas",
                                 f"C2KD - {name} {v.text} points, paired over {len(c2)} runs", v))
    teacher = kd.reset_index()
    v = verdict_slope(teacher.gamma, teacher.teacher_acc, alternative="equal",
                      margin=NO_TREND_MARGIN, unit=per_gamma)
    out.append(claim_row("setting",
                         "teacher accuracy shows no trend with gamma (fixed teacher information)",
                         f"slope {v.text} {per_gamma} over {len(teacher)} runs; a trend counts "
                         f"from {NO_TREND_MARGIN:g} {per_gamma}", v))
    return claims_frame(out)


def per_run(df: pd.DataFrame, value: str = "student_acc") -> pd.DataFrame:
    """``value`` of every run: one row per (method, gamma), one column per run ('run 0', ...),
    beside the mean and std over runs (what :func:`summarize` shows)."""
    wide = df.pivot_table(index=["method", "gamma"], columns="run", values=value,
                          aggfunc="first")
    wide.columns = [f"run {r}" for r in wide.columns]
    order = _order(wide.index.get_level_values("method"))
    wide = wide.reindex(order, level="method")
    runs = wide.to_numpy()
    wide["mean"] = runs.mean(axis=1)
    wide["std"] = runs.std(axis=1)
    out = wide.reset_index()
    out["method"] = [LABELS.get(m, m) for m in out.method]
    return out


# ----------------------------------------------------------------------------- figures
COLORS = {"nokd": "#7f7f7f", "kd": "#1f77b4", "dkd": "#ff7f0e", "dist": "#2ca02c",
          "nkd": "#d62728", "fitnet": "#9467bd", "dml": "#8c564b", "c2kd": "#000000",
          "c2kd_top1": "#e377c2", "c2kd_official": "#393b79", "c2kd_noproxy": "#bcbd22",
          "c2kd_bd_nt": "#17becf",
          "c2kd_bd_ofs": "#ff7f0e", "c2kd_bd": "#9467bd"}


def plot_accuracy(df: pd.DataFrame):
    """Top: student accuracy vs gamma per method (+-1 std over runs). Bottom: the gain over the
    no-KD student of the same run (paired, +-1 std): runs differ in how hard their task is, and
    the pairing removes that.  Left: the baselines and C2KD; right: C2KD's ablations."""
    fig, axes = new_figure(nrows=2, ncols=2, width=10.5, height=6.6, sharex=True, sharey="row")
    present = set(df.method)
    others = [m for m in _order(df.method) if m not in METHODS]
    groups = (("baselines", [m for m in BASELINES if m in present] + ["c2kd"] + others),
              ("C2KD and its ablations", ["nokd", "kd", *C2KD_VARIANTS]))
    nokd = df[df.method == "nokd"].set_index(["gamma", "run"]).student_acc
    for col, (title, methods) in enumerate(groups):
        ax, ax_gain = axes[0, col], axes[1, col]
        for m in methods:
            d = df[df.method == m]
            if d.empty:
                continue
            line = ("--" if m in ("nokd", "kd") and col == 1
                    else ":" if m == "c2kd_official" else "-")
            gain = (d.set_index(["gamma", "run"]).student_acc - nokd).reset_index()
            for a, frame, y in ((ax, d, "student_acc"), (ax_gain, gain, "student_acc")):
                s = frame.groupby("gamma")[y].agg(["mean", "std"])
                x, mu, sd = s.index.to_numpy(), s["mean"].to_numpy(), np.nan_to_num(s["std"])
                (drawn,) = a.plot(x, mu, line, marker="o", ms=3, color=COLORS.get(m),
                                  label=LABELS.get(m, m))
                a.fill_between(x, mu - sd, mu + sd, color=drawn.get_color(), alpha=0.08,
                               linewidth=0)
        ax.set_title(title)
        ax_gain.axhline(0, color="0.6", linewidth=0.8)
        ax_gain.set_xlabel(r"$\gamma$")
        ax.legend(fontsize=7, frameon=False, loc="best", ncols=2)
    axes[0, 0].set_ylabel("student test accuracy (%)")
    axes[1, 0].set_ylabel("gain over no KD, same run (points)")
    fig.suptitle("K-class MVD: crossmodal KD methods as gamma grows (teacher on x$^a$, "
                 "student on x$^b$)", fontsize=10)
    return fig


def plot_alignment(df: pd.DataFrame):
    """Left: fraction of samples the KRC filter keeps vs gamma. Right: C2KD - KD per run."""
    fig, (ax, ax2) = new_figure(ncols=2, width=10, height=3.6)
    kd = df[df.method == "kd"]
    s = kd.groupby("gamma").keep_nokd.agg(["mean", "std"])
    ax.errorbar(s.index, s["mean"], yerr=np.nan_to_num(s["std"]), marker="o", capsize=3,
                label="teacher vs no-KD student (before KD)")
    if "c2kd" in set(df.method):
        c2 = df[df.method == "c2kd"]
        s2 = c2.groupby("gamma").keep.agg(["mean", "std"])
        ax.errorbar(s2.index, s2["mean"], yerr=np.nan_to_num(s2["std"]), marker="s",
                    capsize=3, label="C2KD proxies, last epoch")
        a = c2.set_index(["gamma", "run"]).student_acc - kd.set_index(
            ["gamma", "run"]).student_acc
        a = a.reset_index()
        ax2.axhline(0, color="0.6", linewidth=0.8)
        ax2.scatter(a.gamma, a.student_acc, s=10, alpha=0.5, label="runs")
        m = a.groupby("gamma").student_acc.agg(["mean", "std"])
        ax2.errorbar(m.index, m["mean"], yerr=np.nan_to_num(m["std"]), color="k", marker="o",
                     capsize=3, label="mean $\\pm$ 1 std")
        ax2.set_ylabel("C2KD minus KD (points)")
        ax2.legend(fontsize=8, frameon=False)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(r"$\gamma$")
    ax2.set_xlabel(r"$\gamma$")
    ax.set_ylabel("fraction of samples with KRC > omega")
    ax.legend(fontsize=8, frameon=False)
    fig.suptitle("Soft-label alignment (KRC filter) and C2KD's advantage over KD vs gamma",
                 fontsize=10)
    return fig
