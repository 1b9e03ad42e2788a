"""Notebook 07: C2KD's diagnostics of crossmodal KD (Huo et al., CVPR 2024, Section 3.1 and
Section 5): Fig. 1a, Fig. 1b, Table 2 and Fig. 6.

- **Fig. 1a (modality imbalance)**: per modality, the top-1 accuracy and the mean predicted
  probability of the target class of a model trained alone (the "proba." row of Table 2).
- **Fig. 1b (soft-label misalignment)**: the mean Kendall rank correlation (tau-a, C2KD Eq. 3,
  :func:`cmkd.metrics.kendall_tau`) per test item between the logits of two models: across
  modalities (audio and visual models of the same architecture and seed) against across
  capacities within one modality (the small and the large model of that modality, same seed).
- **Table 2**: students of each direction trained without KD, with KD, TCKD only, NCKD only (DKD's
  two terms alone), each of those with the KRC filter ("+KRC": only the samples whose teacher and
  student logits have KRC > 0, per batch) and with as many samples dropped at random ("+Random"),
  and DKD (alpha 1, beta 8): the registry's presets ``kd_krc``, ``nckd_random``, ...
  (:mod:`cmkd.methods.selection`).  The w/o KD row is the small unimodal model of the student
  modality (the teacher job of that modality: trained alone, the same model and recipe).
- **Fig. 6**: linear CKA (:func:`cmkd.metrics.cka`, on the flattened feature maps of the test
  items) layer by layer between two models: crossmodal (audio and visual, same seed) against
  unimodal (two seeds of one modality).

Models: every model is ``small_model`` or ``large_model`` of the registry with the data spec's
per-modality options (input channels, frames, input key; :mod:`cmkd.data.specs`) under the
params' ``small_options`` / ``large_options``: the same architecture on both modalities, so the
crossmodal KRC and CKA compare like with like.  Default profile: the embedded ``avdigits`` with the
AV-MNIST audio CNN family (``audio_cnn3``) at two widths; paper profile: AVE and VGGSound with
ResNet-18 (small) and ResNet-50 (large), as C2KD.

The jobs are :mod:`cmkd.jobs` jobs built by notebook 06's builder (so a unimodal model is trained
once and cached); the claims are scored by :mod:`cmkd.verdicts`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cmkd import methods
from cmkd.data import specs
from cmkd.experiments.c2kd_benchmark import Row, column, reference_direction
from cmkd.methods import check_method_hparams
from cmkd.params import spec
from cmkd.reporting import new_figure, paper_entry
from cmkd.runtime import DEVICES, device_available
from cmkd.verdicts import (
    claim_row,
    claims_frame,
    combine,
    unless_unconverged,
    verdict_difference,
)

#: the audio-visual datasets of this notebook (embedded, then the papers')
DATASETS = ("avdigits", "cremad", "ave", "vggsound")
CAPACITIES = ("small", "large")
#: Table 2's rows as printed (TCKD +Random / +KRC are ours: the paper filters KD and NCKD only)
NOKD = Row("w/o KD", "nokd", "nokd")
TABLE2 = (NOKD, Row("w/ KD", "kd", "kd"), Row("KD +Random", "kd_random", "kd", "random"),
          Row("KD +KRC", "kd_krc", "kd", "krc"), Row("TCKD", "tckd", "tckd"),
          Row("TCKD +Random", "tckd_random", "tckd", "random"),
          Row("TCKD +KRC", "tckd_krc", "tckd", "krc"), Row("NCKD", "nckd", "nckd"),
          Row("NCKD +Random", "nckd_random", "nckd", "random"),
          Row("NCKD +KRC", "nckd_krc", "nckd", "krc"), Row("DKD", "dkd", "dkd"))
#: the bases whose +KRC and +Random rows the claims compare (the paper's: KD and NCKD)
FILTERED = ("w/ KD", "NCKD")
PROBA = "proba."
for _row in TABLE2:
    methods.resolve(_row.preset)
#: "+Random changes nothing": within this many points of its base (the equivalence margin)
MARGIN = 1.0


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed; run r uses seed + r", low=0))
    n_seeds: int = field(metadata=spec(
        "seeds per setting (C2KD: 3; Fig. 6's unimodal CKA pairs two seeds: none with 1)",
        low=1, high=20))
    datasets: list[str] = field(metadata=spec(
        "datasets ('avdigits': embedded, not the papers' numbers; 'ave', 'vggsound': C2KD's)",
        choices=DATASETS, min_items=1))
    directions: list[str] = field(metadata=spec(
        "Table 2's directions: a2v (audio teacher -> visual student), v2a", choices=("a2v", "v2a"),
        min_items=1))
    methods: list[str] = field(metadata=spec(
        "Table 2's rows to train, by method or preset (w/o KD, 'nokd', is the unimodal model)",
        choices=tuple(r.preset for r in TABLE2), min_items=1))
    small_model: str = field(metadata=spec("registry model of every modality (Table 2, Fig. 1, "
                                           "Fig. 6; C2KD: resnet18)"))
    small_options: dict = field(metadata=spec("its options over the data spec's per modality"))
    large_model: str = field(metadata=spec("the larger model of Fig. 1b's cross-capacity KRC "
                                           "(C2KD: resnet50)"))
    large_options: dict = field(metadata=spec("its options over the data spec's per modality"))
    epochs: int = field(metadata=spec("epochs of every student (C2KD: 100)", low=1,
                                      high=10_000))
    teacher_epochs: int = field(metadata=spec(
        "epochs of every unimodal model (the teachers, and Table 2's w/o KD row)", low=1,
        high=10_000))
    patience: int = field(metadata=spec(
        "early stopping of every job: stop once validation accuracy has not improved for this "
        "many epochs (0: train all epochs)", low=0, high=10_000))
    batch_size: int = field(metadata=spec("mini-batch size (C2KD: 64)", low=2, high=4096))
    lr: float = field(metadata=spec("SGD learning rate (C2KD: 1e-2, momentum 0.9, poly 0.9)",
                                    low=0, high=10, low_open=True))
    lr_min: float = field(metadata=spec("floor of the poly decay (C2KD's code: 1e-4)", low=0,
                                        high=10, at_most="lr"))
    weight_decay: float = field(metadata=spec("SGD weight decay", low=0, high=1))
    method_hparams: dict = field(metadata=spec(
        "hyperparameters per method or preset over the registry's defaults (e.g. DKD's "
        "warmup_epochs; select_omega of the +KRC / +Random rows, C2KD: 0)",
        validate=check_method_hparams))
    cka_items: int = field(metadata=spec(
        "test items the CKA of Fig. 6 reads (the first ones; memory grows with items x "
        "feature size)", low=10, high=100_000))
    image_size: int = field(metadata=spec(
        "frame size of the real datasets' visual input (paper: 224; ignored by avdigits)",
        low=8, high=1024))
    cremad_root: str = field(metadata=spec("CREMA-D folder ('' when unused)"))
    ave_root: str = field(metadata=spec("AVE folder (paper profile; '' when unused)"))
    vggsound_root: str = field(metadata=spec("VGGSound folder (paper profile; '' when unused)"))
    workers: int = field(metadata=spec("DataLoader worker processes per job", low=0, high=64))
    processes: int = field(metadata=spec(
        "jobs trained at once in worker processes (1: one after the other in this process)",
        low=1, high=64))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                      validate=device_available))
    # notebook 06's builder reads these; this notebook has no user methods
    method_modules: list[str] = field(kw_only=True, default_factory=list, metadata=spec(
        "unused here (notebook 06's): must stay empty"))
    tensorboard: bool = field(kw_only=True, default=False, metadata=spec(
        "write each trained job's history as TensorBoard event files under .cache/tb/"))

    def check(self) -> None:
        from cmkd.params import ParamError

        if self.method_modules:
            raise ParamError("method_modules", "notebook 07 trains the registry's methods only")
        for name, opts in (("small_options", self.small_options),
                           ("large_options", self.large_options)):
            if "classes" in opts:
                raise ParamError(name, "'classes' comes from the dataset; leave it out")

    def preflight(self) -> None:
        """Every selected real dataset is found in its layout (before any compute)."""
        specs.preflight(self.datasets, dataclasses.asdict(self))


# ----------------------------------------------------------------------------- the grid
def model_of(config: Config, dataset: str, modality: str, capacity: str) -> tuple[str, dict]:
    """(registry model, options) of ``capacity`` on ``modality``: the spec's per-modality
    options (without its classes) under the params' own."""
    name = config.small_model if capacity == "small" else config.large_model
    own = config.small_options if capacity == "small" else config.large_options
    _, base = specs.model(dataset, modality, dataclasses.asdict(config))
    base = {k: v for k, v in base.items() if k != "classes"}
    return name, {**base, **own}


def grid(config: Config) -> tuple[list, pd.DataFrame]:
    """Every job and a table tagging each: ``part`` 'unimodal' (dataset, modality, capacity,
    seed) or 'table2' (dataset, direction, label, seed)."""
    from cmkd.experiments.c2kd_benchmark import builder

    make = builder(config)
    jobs, tags, index = [], [], {}

    def add(job, **tag):
        if job.key not in index:
            index[job.key] = len(jobs)
            jobs.append(job)
        tags.append(dict(tag, job=index[job.key]))

    for dataset in config.datasets:
        mods = specs.spec(dataset).modalities
        for r in range(config.n_seeds):
            seed = config.seed + r
            unimodal = {}
            for m in mods:
                for cap in CAPACITIES:
                    job = make.teacher(dataset, m, seed, model_of(config, dataset, m, cap))
                    unimodal[m, cap] = job
                    add(job, part="unimodal", dataset=dataset, modality=m, capacity=cap,
                        seed=seed)
            for direction in config.directions:
                t_mod, s_mod = specs.modalities(dataset, direction)
                for row in TABLE2:
                    if row.preset not in config.methods:
                        continue
                    job = (unimodal[s_mod, "small"] if row is NOKD else
                           make.student(dataset, direction, seed, row.preset,
                                        teacher=unimodal[t_mod, "small"],
                                        model=model_of(config, dataset, s_mod, "small")))
                    add(job, part="table2", dataset=dataset, direction=direction,
                        label=row.label, seed=seed)
    return jobs, pd.DataFrame(tags)


@dataclass
class Results:
    """What the notebook reads: ``runs`` (one row per tag of :func:`grid`, with the job's
    scores), ``modal`` (Fig. 1a: per dataset, modality, capacity and seed, accuracy and mean
    target probability, %), ``krc`` (Fig. 1b: per dataset, pair and seed, the mean KRC over
    the test items) and ``cka`` (Fig. 6: per dataset, pair, layer and seed or seed pair)."""

    runs: pd.DataFrame
    modal: pd.DataFrame
    krc: pd.DataFrame
    cka: pd.DataFrame


def run(config: Config, cache=None, executor=None, progress: bool = True) -> Results:
    """Train the grid (finished jobs come from the cache) and measure Fig. 1 and Fig. 6 on the
    unimodal models' test outputs."""
    from cmkd.experiments.c2kd_benchmark import test_size
    from cmkd.jobs import ProcessExecutor, run_jobs
    from cmkd.jobs.cluster import configured_executor

    config.preflight()
    jobs, tags = grid(config)
    if executor is None:
        executor = configured_executor()
    if executor is None and config.processes > 1:
        executor = ProcessExecutor(config.processes)
    rows = run_jobs(jobs, executor=executor, cache=cache, progress=progress,
                    tensorboard=config.tensorboard or None)
    sizes: dict[str, int] = {}
    res = pd.DataFrame({
        "key": rows["key"].to_numpy(),
        "acc": 100 * rows["test_at_best_val"].astype(float).to_numpy(),
        "epochs_run": rows["epochs_run"].to_numpy(),
        "still_improving": (rows["since_best"] == 0).to_numpy(),
        "test_correct": rows["test_correct"].to_numpy(),
        "seconds": rows["seconds"].astype(float).to_numpy(),
        "n_test": [test_size(job, sizes) for job in jobs]})
    runs = tags.join(res, on="job")
    modal, krc, cka = measure(config, jobs, runs, cache)
    runs = runs.drop(columns="job")
    runs.attrs["jobs"] = len(jobs)
    return Results(runs, modal, krc, cka)


def _layers(model) -> list[str]:
    return list(getattr(model, "feature_shapes", {"pooled": None}))


@torch.no_grad()
def measure(config: Config, jobs: list, runs: pd.DataFrame, cache=None
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Fig. 1a, Fig. 1b and Fig. 6 from the unimodal models' outputs on the test split."""
    from cmkd.jobs import job_outputs, load_model
    from cmkd.metrics.cka import cka
    from cmkd.metrics.krc import kendall_tau

    uni = runs[runs.part == "unimodal"]
    modal, krc, cka_rows = [], [], []
    for dataset, part in uni.groupby("dataset", sort=False):
        mods = specs.spec(dataset).modalities
        outs, feats = {}, {}
        for r in part.itertuples():
            job = jobs[r.job]
            outs[r.modality, r.capacity, r.seed] = job_outputs(job, "test", (), cache)
            if r.capacity == "small":  # Fig. 6: every layer, on the first cka_items items
                feats[r.modality, r.seed] = job_outputs(job, "test",
                                                        _layers(load_model(job, cache)), cache,
                                                        items=config.cka_items)
        seeds = sorted(part.seed.unique())
        for (m, cap, seed), o in outs.items():
            p = torch.softmax(o["logits"].double(), -1)
            y = o["label"].long()
            modal.append(dict(dataset=dataset, modality=m, capacity=cap, seed=seed,
                              accuracy=100 * float((p.argmax(-1) == y).double().mean()),
                              target_probability=float(p.gather(1, y[:, None]).mean())))

        def tau(a, b):
            return float(kendall_tau(a["logits"].double(), b["logits"].double(), "a").mean())

        a, v = mods
        for seed in seeds:
            krc.append(dict(dataset=dataset, pair="crossmodal", seed=seed,
                            krc=tau(outs[a, "small", seed], outs[v, "small", seed])))
            for m in mods:
                krc.append(dict(dataset=dataset, pair=f"cross-capacity {m}", seed=seed,
                                krc=tau(outs[m, "small", seed], outs[m, "large", seed])))
        def sim(x, y, layer):
            return float(cka(x[layer].flatten(1).double(), y[layer].flatten(1).double()))

        layers = [k for k in feats[a, seeds[0]] if k not in ("logits", "label")]
        for layer in layers:
            for seed in seeds:
                cka_rows.append(dict(dataset=dataset, layer=layer, pair="crossmodal",
                                     seeds=str(seed),
                                     cka=sim(feats[a, seed], feats[v, seed], layer)))
            for s0, s1 in zip(seeds[:-1], seeds[1:]):
                for m in mods:
                    cka_rows.append(dict(dataset=dataset, layer=layer, pair=f"unimodal {m}",
                                         seeds=f"{s0}-{s1}",
                                         cka=sim(feats[m, s0], feats[m, s1], layer)))
    return pd.DataFrame(modal), pd.DataFrame(krc), pd.DataFrame(cka_rows)


# ----------------------------------------------------------------------------- tables
def _ms(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    g = df.groupby(by, sort=False)[value]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "n": g.size()}).reset_index()


def fig1a_table(res: Results) -> pd.DataFrame:
    """Per dataset, modality and capacity: accuracy (%) and mean target probability, mean and
    std over seeds."""
    g = res.modal.groupby(["dataset", "modality", "capacity"], sort=False)
    return pd.DataFrame({"accuracy": g.accuracy.mean(), "accuracy_std": g.accuracy.std(ddof=0),
                         "target_probability": g.target_probability.mean(),
                         "target_probability_std": g.target_probability.std(ddof=0)}
                        ).reset_index()


def fig1b_table(res: Results) -> pd.DataFrame:
    """Per dataset and pair: the mean KRC over test items, mean and std over seeds."""
    return _ms(res.krc, ["dataset", "pair"], "krc")


def fig6_table(res: Results) -> pd.DataFrame:
    """Per dataset, layer and pair: linear CKA, mean and std over seeds (pairs of seeds)."""
    return _ms(res.cka, ["dataset", "layer", "pair"], "cka")


def _proba(res: Results) -> pd.DataFrame:
    """Table 2's 'proba.' cells: the w/o KD model's (the student modality's small unimodal
    model) mean target probability, per dataset, direction and seed."""
    rows = []
    small = res.modal[res.modal.capacity == "small"]
    for (dataset, direction), _ in res.runs[res.runs.part == "table2"].groupby(
            ["dataset", "direction"], sort=False):
        s_mod = specs.modalities(dataset, direction)[1]
        for r in small[(small.dataset == dataset) & (small.modality == s_mod)].itertuples():
            rows.append(dict(dataset=dataset, direction=direction, seed=r.seed,
                             value=r.target_probability))
    return pd.DataFrame(rows)


def table2(res: Results) -> pd.DataFrame:
    """C2KD Table 2: per row, one mean and std column per (dataset, student modality): top-1
    accuracy (%), and the 'proba.' row (mean target probability of the w/o KD model)."""
    sub = res.runs[res.runs.part == "table2"]
    s = _ms(sub, ["label", "dataset", "direction"], "acc")
    p = _ms(_proba(res).assign(label=PROBA), ["label", "dataset", "direction"], "value")
    s = pd.concat([s, p], ignore_index=True)
    trained = set(s.label)  # the rows the config's methods name
    order = [NOKD.label, PROBA] + [r.label for r in TABLE2[1:] if r.label in trained]
    out = pd.DataFrame({"method": order})
    for (dataset, direction), part in s.groupby(["dataset", "direction"], sort=False):
        part = part.set_index("label")
        col = f"{dataset} {column(dataset, direction)}"
        out[f"{col} mean"] = out.method.map(part["mean"])
        out[f"{col} std"] = out.method.map(part["std"])
    return out


def per_seed(res: Results) -> pd.DataFrame:
    """Every seed's Table 2 accuracy (%)."""
    sub = res.runs[res.runs.part == "table2"]
    wide = sub.pivot_table(index=["dataset", "direction", "label"], columns="seed",
                           values="acc", sort=False)
    wide.columns = [f"seed {c}" for c in wide.columns]
    return wide.reset_index()


# ----------------------------------------------------------------------------- paper values
def compare(res: Results) -> dict[str, dict[str, tuple[float, float]]]:
    """Ours beside every Table 2 cell the paper publishes for our datasets (AVE, VGGSound;
    none for the embedded data): {variant: {reference id: (mean, std)}}."""
    out: dict[str, tuple[float, float]] = {}
    sub = res.runs[res.runs.part == "table2"]
    for (dataset, direction, label), g in sub.groupby(["dataset", "direction", "label"]):
        row = next(r for r in TABLE2 if r.label == label)
        entry = paper_entry(table=2, dataset=dataset,
                            direction=reference_direction(dataset, direction),
                            method=row.paper, variant=row.variant)
        if entry is not None:
            out[entry["id"]] = (float(g.acc.mean()), float(g.acc.std(ddof=0)))
    proba = _proba(res)
    for (dataset, direction), g in (proba.groupby(["dataset", "direction"])
                                    if len(proba) else ()):
        entry = paper_entry(table=2, dataset=dataset,
                            direction=reference_direction(dataset, direction), method="nokd",
                            variant="proba")
        if entry is not None:
            out[entry["id"]] = (float(g.value.mean()), float(g.value.std(ddof=0)))
    return {"ours (test at best validation epoch)": out} if out else {}


# ----------------------------------------------------------------------------- claims
def _series(part: pd.DataFrame, label: str) -> pd.Series:
    return part[part.label == label].groupby("seed").acc.mean()


def _correct(part: pd.DataFrame, label: str) -> np.ndarray | None:
    rows = part[part.label == label].sort_values("seed")
    if rows.empty or rows.test_correct.isna().any():
        return None
    return np.array([[c == "1" for c in s] for s in rows.test_correct], dtype=np.uint8)


def _diff(part, a, b, label, **kw):
    """Row ``a`` minus row ``b`` by the verdict rule; undecided when a run of either row was
    ended by the epoch cap while its validation score still improved (the label names them)."""
    ca, cb = _correct(part, a), _correct(part, b)
    if ca is None or cb is None or ca.shape != cb.shape:
        ca = cb = None
    rows = part[part.label.isin([a, b])]
    rising = rows.get("still_improving", pd.Series(False, index=rows.index)).fillna(False)
    short = [f"{r.label} seed {r.seed}" for r, up in zip(rows.itertuples(), rising) if up]
    if short:
        label += f" (still improving at the last epoch: {', '.join(short)})"
    return unless_unconverged(verdict_difference(
        _series(part, a), _series(part, b), n_test=int(part.n_test.iloc[0]), correct_a=ca,
        correct_b=cb, label=label, **kw), short)


def stronger_modality(res: Results, dataset: str) -> str:
    """The modality whose small unimodal model is more accurate on average (Fig. 1a)."""
    small = res.modal[(res.modal.dataset == dataset) & (res.modal.capacity == "small")]
    return small.groupby("modality").accuracy.mean().idxmax()


def claims(res: Results) -> pd.DataFrame:
    """C2KD Section 3.1's claims, scored by :mod:`cmkd.verdicts` (95% intervals; accuracy
    differences paired by seed with the test split's per-item sampling term; KRC and CKA
    differences over seeds)."""
    out = []
    krc = res.krc
    for dataset in krc.dataset.unique():
        d = krc[krc.dataset == dataset]
        cross = d[d.pair == "crossmodal"].set_index("seed").krc
        parts = [verdict_difference(cross, d[d.pair == f"cross-capacity {m}"].set_index(
                     "seed").krc, alternative="less", label=f"{dataset}: crossmodal - "
                 f"cross-capacity {m}", unit="", fmt="+.3f")
                 for m in specs.spec(dataset).modalities]
        out.append(claim_row("C2KD Fig. 1b", f"{dataset}: the KRC of soft labels across "
                             "modalities is lower than across capacities within a modality",
                             "mean KRC over test items, paired by seed", combine(parts)))
    t2 = res.runs[res.runs.part == "table2"]
    for dataset in t2.dataset.unique():
        strong = stronger_modality(res, dataset)
        parts = []
        for direction, part in t2[t2.dataset == dataset].groupby("direction", sort=False):
            if specs.modalities(dataset, direction)[1] == strong:
                parts.append(_diff(part, "TCKD", NOKD.label, f"{dataset} "
                                   f"{column(dataset, direction)}: TCKD - w/o KD",
                                   alternative="less"))
        if parts:
            out.append(claim_row("C2KD Table 2", f"{dataset}: TCKD from the weaker modality "
                                 f"hurts the stronger one ({strong})", "student accuracy, "
                                 "paired by seed and test item", combine(parts)))
        beats, same = [], []
        for direction, part in t2[t2.dataset == dataset].groupby("direction", sort=False):
            col = f"{dataset} {column(dataset, direction)}"
            for base in FILTERED:
                name = "KD" if base == "w/ KD" else base
                beats.append(_diff(part, f"{name} +KRC", f"{name} +Random",
                                   f"{col}: {name} +KRC - +Random"))
                same.append(_diff(part, f"{name} +Random", base, f"{col}: {name} +Random - "
                                  f"{name}", alternative="equal", margin=MARGIN))
        out.append(claim_row("C2KD Table 2", f"{dataset}: +KRC (distil only samples with KRC "
                             "> 0) beats dropping as many at random (KD and NCKD)",
                             "student accuracy, paired by seed and test item", combine(beats)))
        out.append(claim_row("C2KD Table 2", f"{dataset}: +Random changes nothing (within "
                             f"+/-{MARGIN:g} point of KD and NCKD)", "student accuracy, "
                             f"equivalence margin {MARGIN:g} point", combine(same)))
    cka = res.cka
    for dataset in cka.dataset.unique():
        d = cka[cka.dataset == dataset]
        parts = []
        for layer in d.layer.unique():
            x = d[d.layer == layer]
            parts.append(verdict_difference(x[x.pair == "crossmodal"].cka.to_numpy(),
                                            x[x.pair != "crossmodal"].cka.to_numpy(),
                                            alternative="less", paired=False,
                                            label=f"{dataset} {layer}: crossmodal - unimodal",
                                            unit="", fmt="+.3f"))
        out.append(claim_row("C2KD Fig. 6", f"{dataset}: crossmodal CKA is lower than unimodal "
                             "CKA at every layer", "linear CKA over seeds (unimodal: seed "
                             "pairs of each modality), unpaired", combine(parts)))
    return claims_frame(out)


# ----------------------------------------------------------------------------- figures
def plot_imbalance(res: Results):
    """Fig. 1a: per dataset and modality, the small models' accuracy and target probability."""
    tab = fig1a_table(res)
    tab = tab[tab.capacity == "small"]
    fig, axes = new_figure(1, 2, width=9, height=3.4)
    labels = [f"{d}\n{m}" for d, m in zip(tab.dataset, tab.modality)]
    x = np.arange(len(tab))
    for ax, (col, name) in zip(axes, (("accuracy", "top-1 accuracy (%)"),
                                      ("target_probability", "mean target probability"))):
        ax.bar(x, tab[col], yerr=tab[f"{col}_std"], color="#4C72B0", capsize=3)
        ax.set_xticks(x, labels)
        ax.set_ylabel(name)
    axes[0].set_title("modality imbalance (Fig. 1a)")
    return fig


def plot_krc(res: Results):
    """Fig. 1b: mean KRC across modalities and across capacities, per dataset."""
    tab = fig1b_table(res)
    fig, ax = new_figure(width=6, height=3.4)
    pairs = list(dict.fromkeys(tab.pair))
    datasets = list(dict.fromkeys(tab.dataset))
    width = 0.8 / len(pairs)
    for i, pair in enumerate(pairs):
        t = tab[tab.pair == pair].set_index("dataset").reindex(datasets)
        ax.bar(np.arange(len(datasets)) + i * width, t["mean"], width, yerr=t["std"],
               capsize=3, label=pair)
    ax.set_xticks(np.arange(len(datasets)) + width * (len(pairs) - 1) / 2, datasets)
    ax.set_ylabel("mean KRC of soft labels")
    ax.set_title("soft-label rank agreement (Fig. 1b)")
    ax.legend(fontsize=8)
    return fig


def plot_cka(res: Results):
    """Fig. 6: linear CKA per layer, crossmodal against unimodal (two seeds), per dataset."""
    tab = fig6_table(res)
    datasets = list(dict.fromkeys(tab.dataset))
    fig, axes = new_figure(1, len(datasets), width=5 * len(datasets), height=3.4, squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        d = tab[tab.dataset == dataset]
        layers = list(dict.fromkeys(d.layer))
        for pair in dict.fromkeys(d.pair):
            t = d[d.pair == pair].set_index("layer").reindex(layers)
            ax.errorbar(range(len(layers)), t["mean"], yerr=t["std"], marker="o", capsize=3,
                        label=pair, linestyle="--" if pair == "crossmodal" else "-")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("linear CKA")
        ax.set_title(f"{dataset}: feature similarity (Fig. 6)")
        ax.legend(fontsize=8)
    return fig
