"""Notebook 01: MFH Fig. 2 (vary gamma) and Fig. 3 (vary alpha) on MVD synthetic data.

Per run and setting: a logistic-regression teacher on x^a, a no-KD student on x^b and a KD
student on x^b distilled from the teacher with MFH Eq. (1) (Appendix B.2; settings of the official
gauss/main.py, see docs/official_code_audit.md).  Every run of every setting of one
phase (teacher, no-KD, KD) trains in one batched tensor program.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cmkd.data import mvd
from cmkd.mfh.logistic import accuracy_batched, train_linear_batched
from cmkd.models.batched import init_linear_batched, linear_logits
from cmkd.params import check_each, spec
from cmkd.reporting import COLORS, new_figure, paper_value
from cmkd.runtime import DEVICES, device_available, rng_for, seed_for, select_device
from cmkd.verdicts import claim_row, claims_frame, verdict_bootstrap, verdict_slope

SWEEPS = {"gamma": 0, "alpha": 1}
PHASES = {"teacher": 0, "nokd": 1, "kd": 2}
CLASSES = 2


@dataclass(frozen=True)
class LinearKDConfig:
    """The parameters every MVD notebook with logistic-regression teachers and students shares
    (01 and 02): draws, full-batch SGD and MFH Eq. (1).  A notebook's Config extends it; its own
    fields follow these in the parameters cell."""

    seed: int = field(metadata=spec("base seed of every draw", low=0))
    n_runs: int = field(metadata=spec("independent runs per setting", low=1, high=1000))
    epochs: int = field(metadata=spec("full-batch SGD steps per teacher and student",
                                      low=1, high=100_000))
    lr: float = field(metadata=spec("SGD step size of teachers and students", low=0, high=10,
                                    low_open=True))
    n_train: int = field(metadata=spec("samples per training draw", low=2, high=1_000_000))
    n_test: int = field(metadata=spec("test samples per run", low=1, high=1_000_000))
    rho: float = field(metadata=spec("weight of the task loss in MFH Eq. (1)", low=0, high=1))
    loss_scale: float = field(metadata=spec(
        "factor on Eq. (1); 2 at rho 0.5 gives the official weights CE 1 + KL 1",
        low=0, high=100, low_open=True))
    temperature: float = field(metadata=spec("KD temperature", low=0, high=100, low_open=True))
    kl_reduction: str = field(metadata=spec(
        "'batchmean' (the KL divergence) or 'mean' (official code: KL / classes)",
        choices=("batchmean", "mean")))


@dataclass(frozen=True)
class Config(LinearKDConfig):
    gammas: list[float] = field(metadata=spec("Fig. 2 settings: gamma values", low=0, high=1,
                                              min_items=1))
    alphas: list[float] = field(metadata=spec("Fig. 3 settings: alpha values", low=0, high=1,
                                              high_open=True, min_items=1))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                       validate=device_available))

    def check(self) -> None:
        """Settings must be reachable in the paper's data layout (10 + 10 decisive channels)."""
        check_each("gammas", self.gammas, mvd.gamma_to_overlap)
        check_each("alphas", self.alphas, mvd.alpha_to_extra)


def settings(config: Config) -> list[tuple[str, int, mvd.MVDSpec]]:
    """(sweep, setting parameter, spec) for every setting of both sweeps, in plot order."""
    out = [("gamma", o, mvd.vary_gamma_spec(o))
           for o in sorted({mvd.gamma_to_overlap(g) for g in config.gammas})]
    out += [("alpha", e, mvd.vary_alpha_spec(e))
            for e in sorted({mvd.alpha_to_extra(a) for a in config.alphas})]
    return out


def _stack(arrays: list[np.ndarray], width: int) -> torch.Tensor:
    """Zero-pad (n, d_r) arrays to (n, width) and stack them into (R, n, width)."""
    out = np.zeros((len(arrays), arrays[0].shape[0], width), dtype=np.float32)
    for r, a in enumerate(arrays):
        out[r, :, : a.shape[1]] = a
    return torch.from_numpy(out)


def run(config: Config) -> pd.DataFrame:
    """Train teacher, no-KD and KD students for every run of every setting.

    Returns
    -------
    DataFrame, one row per (sweep, setting, run): sweep, overlap or extra channels, alpha, beta,
    gamma, run, teacher_acc, nokd_acc, kd_acc and gain = kd_acc - nokd_acc (percent).
    ``df.attrs['seconds']`` holds the compute time of data generation plus training.
    """
    start = time.perf_counter()
    device = select_device(config.device)
    rows, xa_tr, xb_tr, y_tr, xa_te, xb_te, y_te, keys = [], [], [], [], [], [], [], []
    for sweep, setting, spec_ in settings(config):
        for r in range(config.n_runs):
            key = (config.seed, SWEEPS[sweep], setting, r)
            rng = rng_for(*key)
            train = mvd.generate(spec_, config.n_train, rng)
            test = mvd.generate(spec_, config.n_test, rng, delta=train.delta)
            xa_tr.append(train.xa), xb_tr.append(train.xb), y_tr.append(train.y)
            xa_te.append(test.xa), xb_te.append(test.xb), y_te.append(test.y)
            keys.append(key)
            rows.append({"sweep": sweep, "setting": setting, "alpha": spec_.alpha,
                         "beta": spec_.beta, "gamma": spec_.gamma, "run": r,
                         "dim_a": spec_.dim_a, "dim_b": spec_.dim_b})
    dims_a = [a.shape[1] for a in xa_tr]
    dims_b = [b.shape[1] for b in xb_tr]
    width_a, width_b = max(dims_a), max(dims_b)
    to = lambda t: t.to(device)  # noqa: E731
    xa_tr, xa_te = to(_stack(xa_tr, width_a)), to(_stack(xa_te, width_a))
    xb_tr, xb_te = to(_stack(xb_tr, width_b)), to(_stack(xb_te, width_b))
    y_tr, y_te = to(torch.from_numpy(np.stack(y_tr))), to(torch.from_numpy(np.stack(y_te)))

    def init(dims, width, phase):
        seeds = [seed_for(*k, PHASES[phase]) for k in keys]
        w, b = init_linear_batched(dims, width, CLASSES, seeds)
        return to(w), to(b)

    common = dict(epochs=config.epochs, lr=config.lr)
    wt, bt = train_linear_batched(xa_tr, y_tr, *init(dims_a, width_a, "teacher"), **common)
    wn, bn = train_linear_batched(xb_tr, y_tr, *init(dims_b, width_b, "nokd"), **common)
    with torch.no_grad():
        teacher_train_logits = linear_logits(wt, bt, xa_tr)
    wk, bk = train_linear_batched(
        xb_tr, y_tr, *init(dims_b, width_b, "kd"), teacher_logits=teacher_train_logits,
        rho=config.rho, loss_scale=config.loss_scale, temperature=config.temperature,
        kl_reduction=config.kl_reduction, **common)
    with torch.no_grad():
        acc = {name: accuracy_batched(linear_logits(w, b, x), y_te).cpu().numpy() * 100
               for name, (w, b, x) in {"teacher_acc": (wt, bt, xa_te), "nokd_acc": (wn, bn, xb_te),
                                       "kd_acc": (wk, bk, xb_te)}.items()}
    df = pd.DataFrame(rows)
    for name, values in acc.items():
        df[name] = values.astype(np.float64)
    df["gain"] = df["kd_acc"] - df["nokd_acc"]
    df.attrs["seconds"] = time.perf_counter() - start
    df.attrs["device"] = str(device)
    return df


METRICS = ("teacher_acc", "nokd_acc", "kd_acc", "gain")


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over runs of each metric, one row per setting."""
    keys = ["sweep", "gamma", "alpha", "beta"]
    g = df.groupby(keys, sort=False)[list(METRICS)]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std"))
    out.insert(0, "runs", g.size())
    cols = ["runs"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    return out[cols].reset_index()


def compare_gains(first: pd.DataFrame, second: pd.DataFrame,
                  labels: tuple[str, str]) -> pd.DataFrame:
    """Mean (and std) KD gain per setting under two variants of the same runs, and the change."""
    keys = ["sweep", "gamma", "alpha"]
    parts = []
    for df, label in zip((first, second), labels):
        g = df.groupby(keys, sort=False).gain
        parts.append(pd.DataFrame({f"gain_{label}_mean": g.mean(),
                                   f"gain_{label}_std": g.std(ddof=0)}))
    out = parts[0].join(parts[1])
    out["change"] = out[f"gain_{labels[1]}_mean"] - out[f"gain_{labels[0]}_mean"]
    return out.reset_index()


#: "does not rise": a slope below this many points per unit alpha counts as no rise (alpha's
#: settings span at most 0.8, so at most a 1.6-point rise over the sweep)
NO_RISE_MARGIN = 2.0


def _range_difference(means: np.ndarray) -> np.ndarray:
    """KD student's range of means over the settings minus the teacher's: (B, settings, 2) ->
    (B,), column 0 the teacher, 1 the KD student."""
    spread = means.max(axis=1) - means.min(axis=1)
    return spread[:, 1] - spread[:, 0]


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """The papers' qualitative claims about Fig. 2 and Fig. 3, each scored on the runs by the
    rule of :mod:`cmkd.verdicts`.

    Trends are least-squares slopes over all runs with their 95% interval (each run draws its
    own test set, so the residuals hold the test-sampling error); "does not rise" is held when
    the slope's interval lies below :data:`NO_RISE_MARGIN`.  "Varies less" compares the ranges
    of the per-gamma means of the teacher and the KD student by a bootstrap over runs.
    """
    out = []
    g = df[df.sweep == "gamma"]
    a = df[df.sweep == "alpha"]
    per_gamma = "points per unit gamma"
    per_alpha = "points per unit alpha"
    if len(g):
        v = verdict_slope(g.gamma, g.gain, alternative="greater", unit=per_gamma)
        out.append(claim_row("MFH Fig. 2", "KD's gain over no-KD rises with gamma",
                             f"slope {v.text} {per_gamma} over {len(g)} runs", v))
        means = g.groupby("gamma")[["teacher_acc", "kd_acc"]].mean()
        t_range = float(means.teacher_acc.max() - means.teacher_acc.min())
        s_range = float(means.kd_acc.max() - means.kd_acc.min())
        groups = [part[["teacher_acc", "kd_acc"]].to_numpy()
                  for _, part in g.groupby("gamma")]
        v = verdict_bootstrap(groups, _range_difference, alternative="greater", unit="points")
        out.append(claim_row("MFH Fig. 2",
                             "teacher accuracy varies less with gamma than the KD student's",
                             f"range of means: teacher {t_range:.2f}, KD student {s_range:.2f}; "
                             f"KD student minus teacher {v.text} (bootstrap over runs)", v))
    if len(a):
        v = verdict_slope(a.alpha, a.teacher_acc, alternative="greater", unit=per_alpha)
        out.append(claim_row("MFH Fig. 3", "teacher accuracy rises with alpha",
                             f"slope {v.text} {per_alpha} over {len(a)} runs", v))
        v = verdict_slope(a.alpha, a.gain, alternative="not_greater", margin=NO_RISE_MARGIN,
                          unit=per_alpha)
        out.append(claim_row("MFH Fig. 3",
                             "KD's gain over no-KD does not rise with alpha",
                             f"slope {v.text} {per_alpha} over {len(a)} runs; a rise counts "
                             f"from {NO_RISE_MARGIN:g} {per_alpha}", v))
    return claims_frame(out)


def measured(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Our values of the quantities the paper publishes: id -> (mean, std over runs)."""
    out = {}
    top = df[(df.sweep == "gamma") & np.isclose(df.gamma, 1.0)]
    if len(top):
        out["mfh.fig2.kd_gain_at_gamma_1"] = (float(top.gain.mean()), float(top.gain.std(ddof=0)))
    return out


def plot_sweep(df: pd.DataFrame, sweep: str):
    """Accuracy of teacher, no-KD and KD students against gamma (or alpha), +-1 std bands,
    and KD's gain per run beside it."""
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {tuple(SWEEPS)}, got {sweep!r}")
    d = df[df.sweep == sweep]
    if d.empty:
        raise ValueError(f"no runs of the {sweep} sweep in this DataFrame")
    fig, (ax, ax_gain) = new_figure(ncols=2, width=9.5, height=3.6,
                                    gridspec_kw={"width_ratios": [1.6, 1]})
    stats_ = d.groupby(sweep)[list(METRICS)].agg(["mean", "std"])
    x = stats_.index.to_numpy()
    labels = {"teacher_acc": "teacher (x$^a$)", "nokd_acc": "student, no KD (x$^b$)",
              "kd_acc": "student, crossmodal KD (x$^b$)"}
    for metric, label in labels.items():
        m = stats_[(metric, "mean")].to_numpy()
        s = np.nan_to_num(stats_[(metric, "std")].to_numpy())
        ax.plot(x, m, marker="o", color=COLORS[metric], label=label)
        ax.fill_between(x, m - s, m + s, color=COLORS[metric], alpha=0.18, linewidth=0)
    symbol = {"gamma": r"$\gamma$", "alpha": r"$\alpha$"}[sweep]
    ax.set_xlabel(symbol)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax_gain.axhline(0, color="0.6", linewidth=0.8)
    ax_gain.scatter(d[sweep], d.gain, s=9, color=COLORS["kd_acc"], alpha=0.45, label="runs")
    gm, gs = stats_[("gain", "mean")].to_numpy(), np.nan_to_num(stats_[("gain", "std")].to_numpy())
    ax_gain.errorbar(x, gm, yerr=gs, color="k", marker="o", capsize=3, label="mean $\\pm$ 1 std")
    if sweep == "gamma":
        ref = paper_value("mfh.fig2.kd_gain_at_gamma_1")
        ax_gain.scatter([1.0], [ref["value"]], marker="*", s=120, color=COLORS["paper"],
                        zorder=5, label=f"paper: {ref['value']:+.1f} at $\\gamma$ = 1")
    ax_gain.set_xlabel(symbol)
    ax_gain.set_ylabel("KD gain over no-KD (points)")
    ax_gain.legend(loc="best", fontsize=8, frameon=False)
    title = {"gamma": "MFH Fig. 2: crossmodal KD as gamma grows (x$^a$ 25-d, x$^b$ 50-d)",
             "alpha": "MFH Fig. 3: crossmodal KD as alpha grows (beta = 0, both 50-d)"}[sweep]
    fig.suptitle(title, fontsize=10)
    return fig
