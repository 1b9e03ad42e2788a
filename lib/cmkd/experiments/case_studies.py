"""Notebook 04: MFH's case study on AV-MNIST (Section 3, Table 1 and Table 5; Appendix B.1).

Does a more accurate multimodal teacher make a better crossmodal student?  MFH trains an audio
student (3-layer CNN) three ways: without KD, by unimodal KD from an audio teacher (6-layer CNN)
and by crossmodal KD from an image + audio late-fusion teacher (LeNet-5 + 5-layer audio CNN,
features concatenated, a linear classifier), with the student loss of MFH Eq. (1),
``rho * CE + (1 - rho) * KL`` (the registry's ``kd`` with ``ce_weight = rho``,
``kd_weight = 1 - rho``), for rho = 0 and 0.5, 10 runs.

Data: ``avmnist_mini`` (default; AV-MNIST rebuilt from real MNIST digits and real FSDD speech,
:mod:`cmkd.data.avmnist_mini`) or AV-MNIST itself in the MultiBench layout (``avmnist``, the
paper profile; ``avmnist_root``).  A LeNet-5 on the images alone is trained too, for the
unimodal accuracies of the dataset.

Jobs (:mod:`cmkd.jobs`, built by :class:`cmkd.jobs.builders.Builder`): per run, the audio
teacher, the fusion teacher, the image network and the students; run r of every job has the
same seed, so the rows are paired by run.  Every job keeps its best-validation weights and is
scored on the test split there (``test_at_best_val``); ``patience`` stops a job once validation
has not improved for that many epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cmkd.jobs import Job, read_history, run_jobs
from cmkd.jobs.builders import Builder, Training
from cmkd.params import spec
from cmkd.reporting import new_figure
from cmkd.runtime import DEVICES, device_available, seed_for, torch_threads
from cmkd.verdicts import (
    claim_row,
    claims_frame,
    combine,
    exact,
    unless_unconverged,
    verdict_difference,
)

DATASETS = ("avmnist_mini", "avmnist")
#: Table 7's data: the MVD stand-in, or MM-IMDB itself
T7_DATASETS = ("mvd", "mmimdb")
#: Table 7: the image network's pseudo-labels the modality-specific teacher learns from
PSEUDO_LABELS = ("soft", "hard")
#: MFH B.1's networks (registry name, options)
AUDIO_TEACHER = ("audio_cnn6", {})
AUDIO_STUDENT = ("audio_cnn3", {})
FUSION_ENCODERS = (("lenet5", {}), ("audio_cnn5", {}))   # image, audio
IMAGE_NET = ("lenet5", {})
#: direction whose student modality is the audio (visual -> audio): the fusion teacher's inputs
#: are (image, audio)
DIRECTION = "v2a"
ROLES = {"image": "image network (LeNet-5, I)", "audio_teacher": "audio teacher (6-layer CNN, A)",
         "fusion_teacher": "multimodal teacher (LeNet-5 + 5-layer CNN, I + A)",
         "nokd": "no-KD student (3-layer CNN, A)", "umkd": "UM-KD student (A teacher)",
         "cmkd": "CM-KD student (I + A teacher)"}
#: "not better": an effect within this many points counts as none (MFH Table 1's crossmodal
#: student is 0.37 points below the unimodal-KD one)
NOT_BETTER_MARGIN = 1.0
#: without early stopping (``patience`` 0) a run counts as converged when its last
#: ``PLATEAU_EPOCHS`` epochs brought no validation gain (with early stopping: its last
#: ``patience`` epochs, which is what ended it)
PLATEAU_EPOCHS = 5


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed of every run", low=0))
    n_runs: int = field(metadata=spec("runs (seeds) of every job", low=1, high=100))
    dataset: str = field(metadata=spec("'avmnist_mini' (embedded) or 'avmnist' (MultiBench "
                                       "layout, avmnist_root)", choices=DATASETS))
    avmnist_root: str = field(metadata=spec("folder of AV-MNIST (dataset 'avmnist' only)"))
    speakers: str = field(metadata=spec("avmnist_mini: speakers 'shared' across splits or "
                                        "'disjoint'", choices=("shared", "disjoint")))
    avmnist_n_valid: int = field(metadata=spec("AV-MNIST: last training rows kept for "
                                               "validation (MultiBench: 5000)", low=1,
                                               high=1_000_000))
    per_class: int = field(metadata=spec("avmnist_mini: the first pairs of each class of "
                                         "each split kept (0: all; quick checks)", low=0,
                                         high=10_000))
    student_grid: int = field(metadata=spec(
        "the audio student's pool before its head: a grid x grid average pool of its last map, "
        "flattened; the last map's side (input side / 8) is CentralNet's flatten (avmnist_mini "
        "64 x 64: 8; AV-MNIST 112 x 112: 14), 1 a global average pool", low=1, high=64))
    rhos: list[float] = field(metadata=spec("rho of MFH Eq. (1): weight of the cross entropy, "
                                            "1 - rho that of the KL", low=0, high=1,
                                            min_items=1))
    temperature: float = field(metadata=spec("KD softening temperature", low=0, high=100,
                                             low_open=True))
    teacher_epochs: int = field(metadata=spec("most epochs of every teacher", low=1,
                                              high=10_000))
    epochs: int = field(metadata=spec("most epochs of every student", low=1, high=10_000))
    patience: int = field(metadata=spec("early stopping: epochs without validation gain "
                                        "(0: none)", low=0, high=10_000))
    batch_size: int = field(metadata=spec("mini-batch size of every student", low=2,
                                          high=100_000))
    lr: float = field(metadata=spec("AdamW learning rate (constant) of every student", low=0,
                                    high=10, low_open=True))
    teacher_batch_size: int = field(metadata=spec(
        "mini-batch size of the teachers and the image network (notebook 05's batch_size: "
        "its teacher and image network are then these jobs, trained once)", low=2,
        high=100_000))
    teacher_lr: float = field(metadata=spec(
        "AdamW learning rate (constant) of the teachers and the image network (notebook 05's "
        "lr, for the same sharing)", low=0, high=10, low_open=True))
    weight_decay: float = field(metadata=spec("AdamW weight decay", low=0, high=1))
    t7_dataset: str = field(metadata=spec(
        "Table 7's data: 'mvd' (offline stand-in: MVD Gaussian data with multi-label targets) or "
        "'mmimdb' (MM-IMDB, Arevalo's hdf5, mmimdb_root)", choices=T7_DATASETS))
    mmimdb_root: str = field(metadata=spec("folder of MM-IMDB (t7_dataset 'mmimdb' only)"))
    mmimdb_boundaries: list[int] = field(metadata=spec(
        "MM-IMDB: first validation row and first test row of the file (Arevalo's split: 15552, "
        "18160)", low=1, high=10_000_000, min_items=2))
    t7_runs: int = field(metadata=spec("Table 7: runs (seeds) of every job", low=1, high=100))
    t7_overlap: int = field(metadata=spec(
        "Table 7 stand-in: decisive features the two modalities share, of 10 each (gamma = o / "
        "(20 - o))", low=0, high=10))
    t7_labels: int = field(metadata=spec("Table 7 stand-in: binary labels (MFH: 2 genres)",
                                         low=1, high=20))
    t7_n_train: int = field(metadata=spec("Table 7 stand-in: training items (half to the "
                                          "teachers, half to the student)", low=4,
                                          high=1_000_000))
    t7_n_val: int = field(metadata=spec("Table 7 stand-in: validation items", low=1,
                                        high=1_000_000))
    t7_n_test: int = field(metadata=spec("Table 7 stand-in: test items", low=1, high=1_000_000))
    t7_hidden: list[int] = field(metadata=spec(
        "Table 7: hidden widths of every MLP (MultiBench's text network: 512, 512)", low=1,
        high=100_000, min_items=1, unique=False))
    t7_epochs: int = field(metadata=spec("Table 7: most epochs of every job", low=1,
                                         high=10_000))
    t7_patience: int = field(metadata=spec("Table 7: early stopping, epochs without a "
                                           "validation gain (0: none)", low=0, high=10_000))
    t7_batch_size: int = field(metadata=spec("Table 7: mini-batch size", low=2, high=100_000))
    t7_lr: float = field(metadata=spec("Table 7: AdamW learning rate", low=0, high=10,
                                       low_open=True))
    t7_pseudo_labels: str = field(metadata=spec(
        "Table 7: what the modality-specific teacher learns from the image network: 'soft' "
        "(its sigmoid outputs, binary KD with no label term) or 'hard' (those outputs "
        "thresholded at 0.5, a binary cross entropy on them)", choices=PSEUDO_LABELS))
    processes: int = field(metadata=spec("jobs trained at once in worker processes (1: one "
                                         "after the other in this process)", low=1, high=64))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                       validate=device_available))

    def preflight(self) -> None:
        """AV-MNIST (dataset 'avmnist') must be found in its layout (:func:`cmkd.data.specs.
        preflight`): checked by ``cmkd reproduce`` with the other parameters and by :func:`run`,
        before any compute (not by plain validation, so a params file can name a folder of
        another machine)."""
        if self.dataset == "avmnist":
            from cmkd.data import specs

            specs.preflight(["avmnist"], self.params())
        if len(self.mmimdb_boundaries) != 2 or self.mmimdb_boundaries[0] >= \
                self.mmimdb_boundaries[1]:
            from cmkd.params import ParamError

            raise ParamError("mmimdb_boundaries", f"must be two increasing rows (first "
                             f"validation row, first test row), got {self.mmimdb_boundaries}")
        if self.t7_dataset == "mmimdb":
            from cmkd.data import mmimdb
            from cmkd.data.specs import resolve_root
            from cmkd.params import ParamError

            problems = (mmimdb.check(resolve_root(self.mmimdb_root)) if self.mmimdb_root
                        else ["it is empty"])
            if problems:
                raise ParamError("mmimdb_root", f"MM-IMDB (t7_dataset 'mmimdb'): "
                                 f"{'; '.join(problems)}. Expected layout:\n{mmimdb.LAYOUT}")

    def params(self) -> dict:
        """The grid parameters the builder reads (the dataset's root and loader options)."""
        out = {"avmnist_root": self.avmnist_root, "avmnist_n_valid": self.avmnist_n_valid}
        if self.dataset == "avmnist_mini":
            out["speakers"] = self.speakers
            out["per_class"] = self.per_class
        return out


# ----------------------------------------------------------------------------- the jobs
def builder(config: Config, teachers: bool = False) -> Builder:
    """The students' builder, or (``teachers``) that of the teachers and the image network
    (``teacher_batch_size``, ``teacher_lr``)."""
    lr, batch = ((config.teacher_lr, config.teacher_batch_size) if teachers
                 else (config.lr, config.batch_size))
    training = Training(optim={"optimizer": "adamw", "lr": lr,
                               "weight_decay": config.weight_decay},
                        epochs=config.epochs, teacher_epochs=config.teacher_epochs,
                        batch_size=batch, device=config.device,
                        patience=config.patience or None)
    return Builder(config.params(), training)


def kd_row(config: Config, rho: float, teacher: Job) -> dict:
    """The KD student's hyperparameters: MFH Eq. (1) at ``rho`` through ``kd_nullified``
    keeping every channel of the teacher's 'pooled' features (the loss of ``kd`` exactly,
    tested), so the frozen teacher's features of each training item are computed once and
    reused at every epoch instead of a teacher forward on every batch."""
    import torch

    with torch.device("meta"):  # no memory, no compute
        channels = teacher.build_model(check=True).feature_shapes["pooled"][0]
    return {"temperature": config.temperature, "ce_weight": rho, "kd_weight": 1 - rho,
            "layer": "pooled", "keep": list(range(channels))}


def run_seed(config: Config, run: int) -> int:
    return seed_for(config.seed, run) % 2**31


def jobs(config: Config) -> dict[tuple[str, float | None, int], Job]:
    """(role, rho, run) -> job: the teachers and the image network (rho None), the no-KD student
    (rho None) and the KD students of every rho."""
    b, bt, d = builder(config), builder(config, teachers=True), config.dataset
    out = {}
    for r in range(config.n_runs):
        seed = run_seed(config, r)
        audio_t = bt.teacher(d, "audio", seed, model=AUDIO_TEACHER)
        fusion_t = bt.fusion_teacher(d, "fusion_concat", DIRECTION, seed,
                                     encoders=FUSION_ENCODERS)
        out["image", None, r] = bt.teacher(d, "visual", seed, model=IMAGE_NET)
        out["audio_teacher", None, r] = audio_t
        out["fusion_teacher", None, r] = fusion_t
        student = (AUDIO_STUDENT[0], {**AUDIO_STUDENT[1], "grid": config.student_grid})
        out["nokd", None, r] = b.student(d, DIRECTION, seed, "nokd", model=student)
        for rho in config.rhos:
            for role, teacher in (("umkd", audio_t), ("cmkd", fusion_t)):
                out[role, rho, r] = b.student(d, DIRECTION, seed, "kd_nullified",
                                              row=kd_row(config, rho, teacher),
                                              teacher=teacher, model=student)
    return out


def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Every job (cached ones are not rerun).

    Returns
    -------
    DataFrame, one row per (role, rho, run): role, rho (NaN for teachers and no KD), run, acc
    (test accuracy at the best validation epoch, %), val (best validation accuracy, %),
    best_epoch, epochs_run, since_best (epochs after the best one), still_improving (best
    validation at the last epoch), converged (its last ``patience`` epochs, or
    :data:`PLATEAU_EPOCHS` without early stopping, brought no validation gain: early stopping
    ended it, not the epoch cap), test_correct (per-item 0/1 string), key.  ``attrs``:
    seconds, jobs, n_test, window (those epochs).
    """
    start = time.perf_counter()
    config.preflight()
    grid = jobs(config)
    with torch_threads(1):
        rows = run_jobs(list(grid.values()), executor=_executor(config, executor), cache=cache,
                        progress=progress)
    out = pd.DataFrame({
        "role": [k[0] for k in grid], "rho": [np.nan if k[1] is None else k[1] for k in grid],
        "run": [k[2] for k in grid],
        "acc": 100 * rows.test_at_best_val.astype(float).to_numpy(),
        "val": 100 * rows.best_val.astype(float).to_numpy(),
        "best_epoch": rows.best_epoch.to_numpy(), "epochs_run": rows.epochs_run.to_numpy(),
        "since_best": rows.since_best.astype(int).to_numpy(),
        "test_correct": rows.test_correct.to_numpy(), "key": rows.key.to_numpy()})
    window = convergence_window(config)
    out["still_improving"] = out.since_best == 0
    out["converged"] = out.since_best >= window
    out.attrs.update(seconds=time.perf_counter() - start, jobs=len(set(out.key)),
                     n_test=len(str(out.test_correct.iloc[0])), window=window)
    return out


def convergence_window(config: Config) -> int:
    """Epochs without a validation gain after which a run counts as converged: ``patience``
    (what ends it), or :data:`PLATEAU_EPOCHS` without early stopping."""
    return config.patience or PLATEAU_EPOCHS


def histories(config: Config, cache=None) -> pd.DataFrame:
    """Per-epoch validation and test accuracy (%) of every job: role, rho, run, epoch, val,
    test."""
    frames = []
    for (role, rho, r), job in jobs(config).items():
        h = read_history(job, cache)
        frames.append(pd.DataFrame({"role": role, "rho": np.nan if rho is None else rho,
                                    "run": r, "epoch": h.epoch + 1,
                                    "val": 100 * h.val_accuracy,
                                    "test": 100 * h.get("test_accuracy", np.nan)}))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- summaries
def _acc(df: pd.DataFrame, role: str, rho: float | None = None) -> pd.Series:
    d = df[df.role == role]
    if rho is not None:
        d = d[d.rho == rho]
    return d.set_index("run").acc


def _correct(df: pd.DataFrame, role: str, rho: float | None = None) -> np.ndarray:
    d = df[df.role == role]
    if rho is not None:
        d = d[d.rho == rho]
    d = d.sort_values("run")
    return np.array([[c == "1" for c in s] for s in d.test_correct], dtype=float)


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 5's layout: teacher (modality, accuracy) and student accuracy per rho, mean and
    std over runs."""
    rhos = sorted(df.rho.dropna().unique())
    rows = []
    for label, role, teacher, mod in (("No-KD", "nokd", None, "-"),
                                      ("UM-KD", "umkd", "audio_teacher", "A"),
                                      ("CM-KD", "cmkd", "fusion_teacher", "I + A")):
        row = {"KD": label, "teacher": mod}
        if teacher is None:
            row["teacher acc mean"] = row["teacher acc std"] = np.nan
        else:
            t = _acc(df, teacher)
            row["teacher acc mean"], row["teacher acc std"] = t.mean(), t.std(ddof=0)
        row["student"] = "A"
        for rho in rhos:
            s = _acc(df, role) if role == "nokd" else _acc(df, role, rho)
            row[f"rho={rho:g} mean"], row[f"rho={rho:g} std"] = s.mean(), s.std(ddof=0)
        rows.append(row)
    return pd.DataFrame(rows)


def unimodal(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each network trained on its own (mean, std, min, max over runs)."""
    rows = []
    for role in ("image", "nokd", "audio_teacher", "fusion_teacher"):
        a = _acc(df, role)
        rows.append({"network": ROLES[role], "mean": a.mean(), "std": a.std(ddof=0),
                     "min": a.min(), "max": a.max(), "runs": len(a)})
    return pd.DataFrame(rows)


#: reference ids of MFH Table 5 (AV-MNIST) in cmkd/reference/mfh.yaml
PAPER_IDS = {("nokd", None): "mfh.table5.nokd_acc",
             ("audio_teacher", None): "mfh.table5.umkd_teacher_acc",
             ("fusion_teacher", None): "mfh.table5.cmkd_teacher_acc",
             ("umkd", 0.0): "mfh.table5.rho_0.umkd_acc",
             ("umkd", 0.5): "mfh.table5.rho_0.5.umkd_acc",
             ("cmkd", 0.0): "mfh.table5.rho_0.cmkd_acc",
             ("cmkd", 0.5): "mfh.table5.rho_0.5.cmkd_acc"}


def measured(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Reference id -> (mean, std over runs) of ours, for :meth:`cmkd.reporting.Report.compare`."""
    out = {}
    for (role, rho), key in PAPER_IDS.items():
        if rho is not None and rho not in set(df.rho):
            continue
        a = _acc(df, role) if rho is None else _acc(df, role, rho)
        out[key] = (float(a.mean()), float(a.std(ddof=0)))
    return out


def convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Per role and rho: the epochs its runs trained (mean, max), how many were still improving
    at their last epoch, and how many had not converged (``converged`` False: the epoch cap,
    not early stopping, ended them)."""
    d = df.assign(rho=df.rho.fillna(-1.0))
    out = d.groupby(["role", "rho"], sort=False).agg(
        epochs_mean=("epochs_run", "mean"), epochs_max=("epochs_run", "max"),
        best_epoch_mean=("best_epoch", "mean"),
        still_improving=("still_improving", "sum"),
        not_converged=("converged", lambda c: int((~c.astype(bool)).sum())),
        runs=("run", "size")).reset_index()
    out.insert(0, "job", [ROLES[r] + ("" if rho < 0 else f", rho {rho:g}")
                          for r, rho in zip(out.role, out.rho)])
    return out.drop(columns=["role", "rho"])


def _unconverged(df: pd.DataFrame, role: str, rho: float | None = None) -> list[str]:
    """'<role>, run r' for each run of ``role`` (and ``rho``) that had not converged (rows
    without a ``converged`` column count as converged: planted results)."""
    d = df[df.role == role]
    if rho is not None:
        d = d[d.rho == rho]
    if "converged" not in d:
        return []
    label = ROLES[role] + ("" if rho is None else f", rho {rho:g}")
    return [f"{label}, run {r}" for r in d.run[~d.converged.astype(bool)]]


def _mark(names: list[str]) -> str:
    """The evidence's note on runs short of their plateau (empty when there are none)."""
    return (f"; NOT CONVERGED (validation still gained in their last epochs when the epoch cap "
            f"ended them; undecided whatever the interval): {', '.join(names)}" if names else "")


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Section 3's claim, scored by the verdict rule (:mod:`cmkd.verdicts`): paired by run,
    with the test term of the one shared test set from the per-item correctness; a part whose
    runs had not all converged (``converged``) is undecided whatever its interval
    (:func:`cmkd.verdicts.unless_unconverged`), and the evidence names those runs."""
    n_test = df.attrs.get("n_test") or len(str(df.test_correct.iloc[0]))
    out = []
    mm, um = _acc(df, "fusion_teacher"), _acc(df, "audio_teacher")
    short = _unconverged(df, "fusion_teacher") + _unconverged(df, "audio_teacher")
    v = unless_unconverged(verdict_difference(
        mm, um, alternative="greater", n_test=n_test, correct_a=_correct(df, "fusion_teacher"),
        correct_b=_correct(df, "audio_teacher")), short)
    out.append(claim_row("MFH Table 1 / 5", "the multimodal (I + A) teacher is more accurate "
                         "than the unimodal (A) teacher",
                         f"I + A - A teacher {v.text} points, paired over {len(mm)} runs"
                         + _mark(short), v))
    parts, shorts = [], []
    for rho in sorted(df.rho.dropna().unique()):
        short = _unconverged(df, "cmkd", rho) + _unconverged(df, "umkd", rho)
        shorts += short
        parts.append(unless_unconverged(verdict_difference(
            _acc(df, "cmkd", rho), _acc(df, "umkd", rho), alternative="not_greater",
            margin=NOT_BETTER_MARGIN, n_test=n_test, correct_a=_correct(df, "cmkd", rho),
            correct_b=_correct(df, "umkd", rho), label=f"rho {rho:g}: CM-KD - UM-KD"), short))
    c = combine(parts)
    out.append(claim_row("MFH Table 1 / 5", "yet its student is not better than the UM-KD "
                         "student (at every rho)",
                         "; ".join(f"{p.label} {p.text}" for p in parts)
                         + f" points (a gain counts from {NOT_BETTER_MARGIN:g})" + _mark(shorts),
                         c))
    if "converged" in df:
        out.append(convergence_claim(df))
    return claims_frame(out)


def convergence_claim(df: pd.DataFrame) -> dict:
    """Every job trained to its plateau: its last ``window`` epochs (``df.attrs['window']``)
    brought no validation gain, so early stopping, not the epoch cap, ended it (an exact count,
    no interval)."""
    window = df.attrs.get("window", PLATEAU_EPOCHS)
    jobs = df.drop_duplicates("key")
    short = jobs[~jobs.converged.astype(bool)]
    names = [ROLES[r] + ("" if pd.isna(rho) else f", rho {rho:g}") + f", run {run}"
             for r, rho, run in zip(short.role, short.rho, short.run)]
    evidence = (f"{len(jobs) - len(short)} of {len(jobs)} jobs ended by early stopping"
                + (f"; not converged: {', '.join(names)}" if names else ""))
    return claim_row("setting", f"every job trained to a plateau (no validation gain over its "
                     f"last {window} epochs)", evidence,
                     exact(not names, note=f"{len(short)} of {len(jobs)} short"))


# ----------------------------------------------------------------------------- figures
COLORS = {"image": "#2ca02c", "audio_teacher": "#1f77b4", "fusion_teacher": "#d62728",
          "nokd": "#7f7f7f", "umkd": "#1f77b4", "cmkd": "#d62728"}


def plot_curves(curves: pd.DataFrame):
    """Validation accuracy per epoch (mean over runs, +-1 std): left the teachers and the image
    network, right the students (dashed: rho = 0)."""
    fig, (ax, ax2) = new_figure(ncols=2, width=10.5, height=3.8, sharey=True)
    for (role, rho), g in curves.groupby(["role", "rho"], dropna=False):
        s = g.groupby("epoch").val.agg(["mean", "std"])
        student = role in ("nokd", "umkd", "cmkd")
        a = ax2 if student else ax
        style = "--" if rho == 0 else "-"
        label = ROLES[role] + ("" if pd.isna(rho) else f", rho {rho:g}")
        x, mu, sd = s.index.to_numpy(), s["mean"].to_numpy(), np.nan_to_num(s["std"].to_numpy())
        a.plot(x, mu, style, color=COLORS[role], label=label)
        a.fill_between(x, mu - sd, mu + sd, color=COLORS[role], alpha=0.1, linewidth=0)
    ax.set_title("teachers and the image network")
    ax2.set_title("audio students")
    for a, where in ((ax, "lower right"), (ax2, "upper left")):
        a.set_xlabel("epoch")
        a.legend(fontsize=7, frameon=False, loc=where)
    ax.set_ylabel("validation accuracy (%)")
    return fig


def plot_table5(df: pd.DataFrame):
    """Teacher accuracy against student accuracy per rho (mean +-1 std over runs)."""
    rhos = sorted(df.rho.dropna().unique())
    fig, axes = new_figure(ncols=len(rhos), width=4.2 * len(rhos), height=3.6, sharey=True)
    axes = np.atleast_1d(axes)
    nokd = _acc(df, "nokd")
    for ax, rho in zip(axes, rhos):
        ax.axhspan(nokd.mean() - nokd.std(ddof=0), nokd.mean() + nokd.std(ddof=0),
                   color="0.85", label="no-KD student $\\pm$ 1 std")
        for role, teacher in (("umkd", "audio_teacher"), ("cmkd", "fusion_teacher")):
            t, s = _acc(df, teacher), _acc(df, role, rho)
            ax.errorbar(t.mean(), s.mean(), xerr=t.std(ddof=0), yerr=s.std(ddof=0), fmt="o",
                        color=COLORS[role], capsize=3, label=ROLES[role])
        ax.set_title(f"rho = {rho:g}")
        ax.set_xlabel("teacher test accuracy (%)")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("student test accuracy (%)")
    return fig


# ----------------------------------------------------------------------------- Table 7
# MFH Appendix B.3: multi-label genre prediction on MM-IMDB (two genres), a text student
# distilled (rho = 0) from a unimodal text teacher, a regular multimodal (text + image) teacher
# and a modality-specific multimodal teacher of the same architecture trained, as Xue et al.
# (2021) do, on the pseudo-labels of an image network; the teachers (and the image network)
# train on one half of the training data, the students on the other.  Every network is an MLP
# on feature vectors (MultiBench's; the multimodal ones a late fusion of two MLPs), every score
# the micro and macro F1 of torchmetrics (MultilabelF1Score, threshold 0.5).

#: MFH B.3: the two genres of MM-IMDB it predicts
MMIMDB_GENRES = ("Drama", "Comedy")
#: MFH B.3 sets rho = 0: a student learns from its teacher's soft labels alone
T7_RHO = 0.0
T7_ROLES = {"text_teacher": "unimodal teacher (T)",
            "image_net": "image network (I), the pseudo-labeller",
            "specific_teacher": "modality-specific teacher (T + I, on I's pseudo-labels)",
            "regular_teacher": "regular multimodal teacher (T + I)",
            "nokd": "no-KD text student", "umkd": "UM-KD text student",
            "specific_kd": "modality-specific-KD text student",
            "regular_kd": "regular-KD text student"}
#: student role -> its teacher's role, in MFH Table 7's row order, with the row's name
T7_ROWS = (("UM-KD", "umkd", "text_teacher", "T"),
           ("Modality-specific-KD", "specific_kd", "specific_teacher", "T+I"),
           ("Regular-KD", "regular_kd", "regular_teacher", "T+I"))
#: the stand-in's batch keys: the text student reads x^b (50 channels), the image x^a (25)
MVD_KEYS = {"text": ("xb", 50), "image": ("xa", 25)}
MMIMDB_KEYS = {"text": ("text", 300), "image": ("image", 4096)}


def t7_data(config: Config, run: int) -> tuple[str, str | None, dict, dict]:
    """(dataset, data root, loader options, modality -> (batch key, features)) of run ``run``.

    The stand-in (``mvd``) draws each run's data anew (MVD option ``run``); MM-IMDB's runs share
    the data and its one 50 / 50 split of the training rows (``half_seed`` = ``seed``)."""
    if config.t7_dataset == "mvd":
        return "mvd", None, {"overlap": config.t7_overlap, "multilabel": config.t7_labels,
                             "n_train": config.t7_n_train, "n_val": config.t7_n_val,
                             "n_test": config.t7_n_test, "seed": config.seed,
                             "run": run}, MVD_KEYS
    from cmkd.data.specs import resolve_root

    return ("mmimdb", str(resolve_root(config.mmimdb_root)),
            {"genres": list(MMIMDB_GENRES), "half_seed": config.seed,
             "boundaries": list(config.mmimdb_boundaries)}, MMIMDB_KEYS)


def t7_labels(config: Config) -> int:
    return config.t7_labels if config.t7_dataset == "mvd" else len(MMIMDB_GENRES)


def pseudo_labelled(config: Config, kd: dict) -> dict:
    """Method and hyperparameters of the modality-specific teacher, which learns the image
    network's pseudo-labels and no true label: 'soft', KD with ``ce_weight`` 0 (the binary KD
    to the image network's sigmoid outputs); 'hard', ``pseudo_label`` (the binary cross
    entropy to those outputs thresholded at 0.5)."""
    if config.t7_pseudo_labels == "hard":
        return {"method": "pseudo_label", "hparams": {}}
    return {"method": "kd", "hparams": {**kd, "ce_weight": 0.0, "kd_weight": 1.0}}


def t7_jobs(config: Config) -> dict[tuple[str, int], Job]:
    """(role, run) -> job of Table 7.  Every job is of kind 'teacher': it keeps its
    best-validation weights (micro F1 on the validation split selects them), from which both
    F1 scores are computed; the modality-specific teacher learns the image network's
    pseudo-labels (``t7_pseudo_labels``, :func:`pseudo_labelled`), and each KD
    student (``ce_weight`` = rho = 0) from its teacher."""
    labels, hidden = t7_labels(config), tuple(config.t7_hidden)
    optim = {"optimizer": "adamw", "lr": config.t7_lr, "weight_decay": config.weight_decay}
    kd = {"temperature": config.temperature, "ce_weight": T7_RHO, "kd_weight": 1 - T7_RHO}
    out = {}
    for r in range(config.t7_runs):
        dataset, root, options, keys = t7_data(config, r)
        common = dict(dataset=dataset, data_root=root, optim=optim, kind="teacher",
                      epochs=config.t7_epochs, batch_size=config.t7_batch_size,
                      seed=run_seed(config, r), device=config.device, metric="f1_micro",
                      patience=config.t7_patience or None, test_every=config.t7_epochs)
        teachers = {**options, "half": "first"}
        students = {**options, "half": "second"}

        def mlp(modality: str, keys: dict = keys) -> dict:
            key, dim = keys[modality]
            return dict(model="mlp", inputs=(key,), model_options={
                "in_features": dim, "classes": labels, "hidden": hidden, "modality": key})

        pair = (keys["text"][0], keys["image"][0])
        fusion = dict(model="fusion_concat", inputs=pair, model_options={
            "classes": labels, "modalities": pair, "encoders": ("mlp", "mlp"),
            "encoder_options": tuple({"in_features": keys[m][1], "hidden": hidden}
                                     for m in ("text", "image"))})
        image = Job(**mlp("image"), dataset_options=teachers, **common)
        t = {"text_teacher": Job(**mlp("text"), dataset_options=teachers, **common),
             "regular_teacher": Job(**fusion, dataset_options=teachers, **common),
             "specific_teacher": Job(**fusion, dataset_options=teachers,
                                     **pseudo_labelled(config, kd), teacher=image, **common)}
        out["image_net", r] = image
        for role, job in t.items():
            out[role, r] = job
        out["nokd", r] = Job(**mlp("text"), dataset_options=students, **common)
        for _, role, teacher, _ in T7_ROWS:
            out[role, r] = Job(**mlp("text"), dataset_options=students, method="kd", hparams=kd,
                               teacher=t[teacher], **common)
    return out


def _executor(config: Config, executor):
    from cmkd.jobs import ProcessExecutor
    from cmkd.jobs.cluster import configured_executor

    if executor is None:  # cmkd reproduce --executor (CMKD_EXECUTOR)
        executor = configured_executor()
    if executor is None and config.processes > 1:
        executor = ProcessExecutor(config.processes)
    return executor


def t7_f1(job: Job, cache=None) -> dict[str, float]:
    """Micro and macro F1 (%) on the test split of ``job``'s best-validation model
    (torchmetrics' MultilabelF1Score, threshold 0.5 on the sigmoid)."""
    from cmkd.jobs.run import job_outputs
    from cmkd.metrics.task import task_metrics

    out = job_outputs(job, "test", cache=cache)
    metrics = task_metrics(("f1_micro", "f1_macro"), out["logits"].shape[1], "multilabel")
    metrics.update(out["logits"].float(), out["label"].int())
    return {**{k: 100 * float(v) for k, v in metrics.compute().items()},
            "n_test": len(out["label"])}


def run7(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Table 7's jobs (cached ones are not rerun).

    Returns one row per (role, run): role, run, f1_micro, f1_macro (test, %, at the best
    validation epoch), val (best validation micro F1, %), best_epoch, epochs_run, since_best,
    converged (as :func:`run`), key; ``attrs``: seconds, jobs, window, n_test.
    """
    start = time.perf_counter()
    config.preflight()
    grid = t7_jobs(config)
    with torch_threads(1):
        rows = run_jobs(list(grid.values()), executor=_executor(config, executor), cache=cache,
                        progress=progress)
        scores = [t7_f1(job, cache) for job in grid.values()]
    window = config.t7_patience or PLATEAU_EPOCHS
    out = pd.DataFrame({
        "role": [k[0] for k in grid], "run": [k[1] for k in grid],
        "f1_micro": [s["f1_micro"] for s in scores], "f1_macro": [s["f1_macro"] for s in scores],
        "val": 100 * rows.best_val.astype(float).to_numpy(),
        "best_epoch": rows.best_epoch.to_numpy(), "epochs_run": rows.epochs_run.to_numpy(),
        "since_best": rows.since_best.astype(int).to_numpy(), "key": rows.key.to_numpy(),
        "row_test": 100 * rows.test_at_best_val.astype(float).to_numpy()})
    out["converged"] = out.since_best >= window
    out.attrs.update(seconds=time.perf_counter() - start, jobs=len(set(out.key)), window=window,
                     n_test=scores[0]["n_test"])
    return out


def t7_histories(config: Config, cache=None) -> pd.DataFrame:
    """Per-epoch validation micro F1 (%) of every Table 7 job: role, run, epoch, val."""
    frames = []
    for (role, r), job in t7_jobs(config).items():
        h = read_history(job, cache)
        frames.append(pd.DataFrame({"role": role, "run": r, "epoch": h.epoch + 1,
                                    "val": 100 * h.val_f1_micro}))
    return pd.concat(frames, ignore_index=True)


def _f1(df: pd.DataFrame, role: str, measure: str) -> pd.Series:
    return df[df.role == role].set_index("run")[measure]


def table7(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 7's layout: per row the teacher's modality and micro / macro F1 and the text
    student's (mean and std over runs); a No-KD row and the image network for reference."""
    rows = []
    for label, role, teacher, mod in (("No-KD", "nokd", None, "-"), *T7_ROWS):
        row = {"KD": label, "teacher": mod}
        for m in ("f1_micro", "f1_macro"):
            t = _f1(df, teacher, m) if teacher else pd.Series(dtype=float)
            row[f"teacher {m} mean"], row[f"teacher {m} std"] = t.mean(), t.std(ddof=0)
        row["student"] = "T"
        for m in ("f1_micro", "f1_macro"):
            s = _f1(df, role, m)
            row[f"student {m} mean"], row[f"student {m} std"] = s.mean(), s.std(ddof=0)
        rows.append(row)
    image = {"KD": "(image network)", "teacher": "I", "student": "-"}
    for m in ("f1_micro", "f1_macro"):
        a = _f1(df, "image_net", m)
        image[f"teacher {m} mean"], image[f"teacher {m} std"] = a.mean(), a.std(ddof=0)
    rows.append(image)
    return pd.DataFrame(rows)


T7_IDS = {"umkd": ("umkd", "text_teacher"), "specific": ("specific_kd", "specific_teacher"),
          "regular": ("regular_kd", "regular_teacher")}


def measured7(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Reference id (``mfh.table7.*``) -> (mean, std over runs) of ours."""
    out = {}
    for name, (student, teacher) in T7_IDS.items():
        for who, role in (("teacher", teacher), ("student", student)):
            for m in ("micro", "macro"):
                a = _f1(df, role, f"f1_{m}")
                out[f"mfh.table7.{name}.{who}_{m}_f1"] = (float(a.mean()), float(a.std(ddof=0)))
    return out


def _t7_unconverged(df: pd.DataFrame, *roles: str) -> list[str]:
    d = df[df.role.isin(roles) & ~df.converged.astype(bool)]
    return [f"{T7_ROLES[r]}, run {run}" for r, run in zip(d.role, d.run)]


def claims7(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 7's claims by the verdict rule, on micro and on macro F1 (both must hold),
    paired by run: the regular multimodal teacher's text student is better than the
    modality-specific teacher's, and better than the unimodal teacher's.  The interval rests on
    the spread over runs (the stand-in draws each run's data anew, so its spread holds the
    test-sampling error; on MM-IMDB the runs share one test set, whose sampling error of F1 is
    not added).  A part resting on a run the epoch cap ended is undecided."""
    out = []
    for other, what in (("specific_kd", "the modality-specific (T + I) teacher's"),
                        ("umkd", "the unimodal (T) teacher's")):
        short = _t7_unconverged(df, "regular_kd", other)
        parts = [unless_unconverged(verdict_difference(
            _f1(df, "regular_kd", m), _f1(df, other, m), alternative="greater",
            label=f"{m.replace('f1_', '')} F1"), short) for m in ("f1_micro", "f1_macro")]
        out.append(claim_row("MFH Table 7", f"the regular multimodal (T + I) teacher's text "
                             f"student is better than {what}",
                             "; ".join(f"{p.label} {p.text}" for p in parts)
                             + f" points, paired over {df.run.nunique()} runs" + _mark(short),
                             combine(parts)))
    jobs = df.drop_duplicates("key")
    short = jobs[~jobs.converged]
    names = [f"{T7_ROLES[r]}, run {run}" for r, run in zip(short.role, short.run)]
    out.append(claim_row("setting", f"every Table 7 job trained to a plateau (no validation "
                         f"gain over its last {df.attrs.get('window', PLATEAU_EPOCHS)} epochs)",
                         f"{len(jobs) - len(short)} of {len(jobs)} jobs ended by early stopping"
                         + (f"; not converged: {', '.join(names)}" if names else ""),
                         exact(not names, note=f"{len(short)} of {len(jobs)} short")))
    return claims_frame(out)


def t7_convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Per Table 7 role: epochs trained (mean, max), best epoch (mean), runs not converged."""
    out = df.groupby("role", sort=False).agg(
        epochs_mean=("epochs_run", "mean"), epochs_max=("epochs_run", "max"),
        best_epoch_mean=("best_epoch", "mean"),
        not_converged=("converged", lambda c: int((~c.astype(bool)).sum())),
        runs=("run", "size")).reset_index()
    out.insert(0, "job", [T7_ROLES[r] for r in out.role])
    return out.drop(columns=["role"])


def plot_t7_curves(curves: pd.DataFrame):
    """Validation micro F1 per epoch (mean over runs): left the teachers and the image network,
    right the text students."""
    fig, (ax, ax2) = new_figure(ncols=2, width=10.5, height=3.8, sharey=True)
    colors = {"text_teacher": "#1f77b4", "image_net": "#2ca02c", "specific_teacher": "#9467bd",
              "regular_teacher": "#d62728", "nokd": "#7f7f7f", "umkd": "#1f77b4",
              "specific_kd": "#9467bd", "regular_kd": "#d62728"}
    for role, g in curves.groupby("role", sort=False):
        s = g.groupby("epoch").val.mean()
        a = ax2 if role in ("nokd", "umkd", "specific_kd", "regular_kd") else ax
        a.plot(s.index, s.to_numpy(), color=colors[role], label=T7_ROLES[role])
    ax.set_title("Table 7: teachers and the image network")
    ax2.set_title("Table 7: text students")
    for a in (ax, ax2):
        a.set_xlabel("epoch")
        a.legend(fontsize=7, frameon=False, loc="lower right")
    ax.set_ylabel("validation micro F1 (%)")
    return fig
