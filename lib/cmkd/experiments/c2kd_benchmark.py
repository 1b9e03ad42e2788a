"""Notebook 06: the C2KD benchmark (Huo et al., CVPR 2024): Tables 1, 3, 5, 6, 7 and Fig. 3, 4, 5.

The experiment is a grid of jobs (:mod:`cmkd.jobs`): for every dataset, direction (teacher
modality -> student modality), seed and row of a table, one job naming the student model, the
teacher job, the method of the registry (:mod:`cmkd.methods`) and its hyperparameters.  Teachers
are jobs of their own, trained once per (dataset, modality, seed) and shared by every row (and by
any notebook that builds the same teacher job); finished jobs come from the cache, so an
interrupted notebook resumes where it stopped.  The same rows serve several artefacts: Table 1 is
Table 3's view on AVE and VGGSound, Table 5's rows (a) and (d) are KD and C2KD of Table 3.

Sections (``sections`` parameter):
- table3: w/o KD, FitNet, Review, KD, DML, SHAKE, RKD, DKD, DIST, NKD, C2KD with the teacher's
  top ``teacher_top_k`` blocks updated (Ours†) and fully updated (Ours‡).
- table5: ablation: (e) no KD, (a) KD, (b) BD, BD+NT, BD+OFS, (c) OFS+NT+BD, (d) full C2KD.
- fig3: training dynamics (test accuracy and samples per batch with KRC <= omega) of SHAKE, NKD
  and C2KD (their histories; the count is of the pair each method distils between).
- fig4: C2KD with the KRC, cosine, Pearson and gradient-cosine filters over ``fig4_omegas``, and
  without selection.
- fig5: C2KD's modules plugged into DIST and NKD (plain, + BD, + BD + OFS + NT, + proxies).
- table6: self-KD baselines (DLB, Zipf, USKD; no teacher) beside no KD and C2KD.
- table7: multimodal teachers (late fusion by concatenation, FiLM, OGM-GE) distilled with NKD,
  beside NKD and C2KD with the unimodal teacher; teacher accuracies too.

Data: the embedded ``avdigits`` pairs (default profile; not the papers' numbers) or the papers'
CREMA-D, AVE and VGGSound (paper profile; ResNet-18s, 1 frame for CREMA-D and AVE, 3 for
VGGSound) and CrisisMMD (image-text).  CrisisMMD's text and image encoders (C2KD: BERT-base and
MobileNetV2) are the user's: import paths 'package.module:callable' of their own modules that
load local weights (``crisismmd_text_encoder``, ``crisismmd_image_encoder``; the loader
:mod:`cmkd.data.crisismmd` resolves them), with the feature sizes ``crisismmd_text_dim`` and
``crisismmd_image_dim``.  The encoders are frozen feature extractors and every CrisisMMD model
(teacher, student, fusion encoder) is an MLP (``mlp``) on their features: C2KD does not say
whether it fine-tunes BERT and MobileNetV2, and fine-tuning them is not done here.

Directions: the Config's ``a2v`` is the non-visual modality (audio; CrisisMMD: text) teaching the
visual one (visual; image), ``v2a`` the reverse (:mod:`cmkd.data.specs`); the paper's columns name
the student modality (Visual / Audio; Image / Text) and its published values the direction by
the modalities' initials (a2v / v2a; t2i / i2t).

Rows.  Every row of every table is a method or preset of :mod:`cmkd.methods` (:class:`Row`);
hyperparameters come from the registry's defaults, the preset and the params file's
``method_hparams`` (:func:`cmkd.methods.hparams_for`; a row adds only what it varies, Fig. 4's
threshold).  The jobs are made by :class:`cmkd.jobs.builders.Builder`; a row names the published
number it stands beside by the reference's fields (table, dataset, direction, method, variant).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from cmkd import methods
from cmkd.data import specs
from cmkd.distill import FILTERS as _FILTERS
from cmkd.params import spec
from cmkd.reporting import new_figure, paper_entry
from cmkd.runtime import DEVICES, device_available

SECTIONS = ("table3", "table5", "fig3", "fig4", "fig5", "table6", "table7")
DATASETS = tuple(specs.SPECS)
#: Fig. 4's filters (C2KD's KRC and its alternatives; 'none' is the w/o-selection row)
FILTERS = tuple(f for f in _FILTERS if f != "none")
FUSIONS = ("fusion_concat", "fusion_film", "fusion_ogm_ge")


class Row(NamedTuple):
    """A row of a table: its label as printed, the method or preset that trains it, the
    published value's ``method`` field and, where the paper distinguishes them, its ``variant``
    (Table 3: partial / full teacher update) and the teacher (Table 7: a fusion model)."""

    label: str
    preset: str
    paper: str
    variant: str | None = None
    fusion: str | None = None


#: Table 3's extra rows, beside the paper's: the form of SHAKE that trains the small models
#: (the official layer norm x 3.1415 stalls them), C2KD under the official code's choices, and
#: the control without the crossmodal term (lambda3 = 0: proxies and bidirectional updates only)
SHAKE_RAW = Row("SHAKE, raw logits", "shake_raw", "shake_raw")
C2KD_OFFICIAL = Row("Ours‡, official code's choices", "c2kd_official", "c2kd_official")
C2KD_CONTROL = Row("Ours‡, λ3 = 0 (control)", "c2kd_nocross", "c2kd_nocross")
TABLE3 = (Row("w/o KD", "nokd", "nokd"), Row("FitNet", "fitnet", "fitnet"),
          Row("Review", "review", "review"), Row("KD", "kd", "kd"), Row("DML", "dml", "dml"),
          Row("SHAKE", "shake", "shake"), SHAKE_RAW, Row("RKD", "rkd", "rkd"),
          Row("DKD", "dkd", "dkd"), Row("DIST", "dist", "dist"), Row("NKD", "nkd", "nkd"),
          Row("Ours† (top layers)", "c2kd_partial", "c2kd", "partial"),
          Row("Ours‡ (full)", "c2kd", "c2kd", "full"), C2KD_OFFICIAL, C2KD_CONTROL)
#: rows that are not competitors in the paper's ranking of Table 3: the controls, and the
#: official SHAKE where its raw-logit form stands in for it (see :func:`claims`)
NOT_RANKED = ("SHAKE", C2KD_OFFICIAL.label, C2KD_CONTROL.label)
#: Table 1: Table 3's runs without FitNet, RKD, Ours† and our extra rows (its C2KD row has no
#: variant)
TABLE1 = tuple(r._replace(variant=None) for r in TABLE3
               if r.label not in ("FitNet", "RKD", "Ours† (top layers)", SHAKE_RAW.label,
                                  C2KD_OFFICIAL.label, C2KD_CONTROL.label))
#: Table 5, with each documented choice (docs/official_code_audit.md) scored both ways: the
#: masked KL averaged over the kept samples (the paper's Eq. 6, our default) or over the whole
#: batch (the official code), the target class removed (paper) or its logit zeroed (official);
#: and the lambda3 = 0 control beside (d)
TABLE5 = (Row("(e) w/o KD", "nokd", "nokd"), Row("(a) KD", "kd", "kd"),
          Row("(b) BD", "c2kd_bd", "c2kd_bd"), Row("BD+NT", "c2kd_bd_nt", "c2kd_bd_nt"),
          Row("BD+NT, target zeroed", "c2kd_bd_nt_zeroed", "c2kd_bd_nt_zeroed"),
          Row("BD+OFS", "c2kd_bd_ofs", "c2kd_bd_ofs"),
          Row("BD+OFS, batch mean", "c2kd_bd_ofs_batchmean", "c2kd_bd_ofs_batchmean"),
          Row("(c) OFS+NT+BD", "c2kd_noproxy", "c2kd_noproxy"), Row("(d) C2KD", "c2kd", "c2kd"),
          Row("(d) C2KD, batch mean", "c2kd_batchmean", "c2kd_batchmean"),
          Row("(d) λ3 = 0 (control)", "c2kd_nocross", "c2kd_nocross"))
TABLE6 = (Row("w/o KD", "nokd", "nokd"), Row("DLB", "dlb", "dlb"),
          Row("ZipfKD", "zipf", "zipfkd"), Row("USKD", "uskd", "uskd"),
          Row("Ours", "c2kd", "c2kd"))
TABLE7 = (Row("NKD", "nkd", "nkd"),
          Row("+Cat", "nkd", "nkd_cat", fusion="fusion_concat"),
          Row("+FiLM", "nkd", "nkd_film", fusion="fusion_film"),
          Row("+OGM", "nkd", "nkd_ogm", fusion="fusion_ogm_ge"), Row("Ours", "c2kd", "c2kd"))
TABLE7_LABELS = {r.fusion: r.label for r in TABLE7 if r.fusion}
#: Fig. 3: the Table 3 rows whose training dynamics are drawn
FIG3 = ("SHAKE", "NKD", "Ours‡ (full)")
#: Fig. 4: the preset of each filter (the threshold is the row's own); 'w/o selection'
FIG4 = {"krc": "c2kd", "cosine": "c2kd_cosine", "pearson": "c2kd_pearson",
        "gradcos": "c2kd_gradcos"}
FIG4_NONE = Row("w/o selection", "c2kd_noselect", "c2kd_noselect")
#: Fig. 5: each base plain, with BD, with BD + OFSD, with the proxies too
FIG5 = {base: (Row("plain", base, base), Row("+BD", f"c2kd_{base}_bd", f"c2kd_{base}_bd"),
               Row("+BD+OFSD", f"c2kd_{base}_noproxy", f"c2kd_{base}_noproxy"),
               Row("+BD+OFSD+proxy", f"c2kd_{base}", f"c2kd_{base}"))
        for base in ("dist", "nkd")}
#: Fig. 5's DIST inside C2KD is our construction (no official code defines it): by default on
#: all classes with the target masked (a column is one class in every sample); beside it the
#: C - 1 non-target columns side by side, the construction this project used first
FIG5["dist"] += (Row("+BD+OFSD+proxy, C-1 columns", "c2kd_dist_removed", "c2kd_dist_removed"),)
for _rows in (TABLE3, TABLE5, TABLE6, TABLE7, (FIG4_NONE,), *FIG5.values()):
    for _row in _rows:  # every row names a method or preset (a ParamError at import otherwise)
        methods.resolve(_row.preset)


def modules(preset: str) -> str:
    """Table 5's switches of a C2KD preset as printed (Proxy OFS NT BD); '' for other methods."""
    name, hp = methods.hparams_for(preset)
    if name != "c2kd":
        return ""
    hp = methods.get(name).make_hparams(hp)
    return " ".join(label for flag, label in (("proxy", "Proxy"), ("ofs", "OFS"), ("nt", "NT"),
                                              ("bd", "BD")) if getattr(hp, flag))


def modalities(dataset: str, direction: str) -> tuple[str, str]:
    """(teacher, student) modality of ``direction`` on ``dataset``."""
    return specs.modalities(dataset, direction)


def column(dataset: str, direction: str) -> str:
    """The paper's column: the student modality (Visual, Audio, Image, Text)."""
    return modalities(dataset, direction)[1].capitalize()


def reference_direction(dataset: str, direction: str) -> str:
    """The direction in the published values: teacher and student initials (a2v, v2a, t2i,
    i2t)."""
    t, s = modalities(dataset, direction)
    return f"{t[0]}2{s[0]}"


def _check_dataset_sections(value) -> None:
    """``dataset_sections``: a mapping of known datasets to non-empty lists of sections."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping dataset -> list of sections, got {value!r}")
    for dataset, sections in value.items():
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        if (not isinstance(sections, list) or not sections
                or any(x not in SECTIONS for x in sections)):
            raise ValueError(f"{dataset}: must be a non-empty list of {', '.join(SECTIONS)}, "
                             f"got {sections!r}")


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed; run r uses seed + r", low=0))
    n_seeds: int = field(metadata=spec("seeds per setting (C2KD: 3)", low=1, high=20))
    datasets: list[str] = field(metadata=spec(
        "datasets ('avdigits': embedded, not the papers' numbers)", choices=DATASETS,
        min_items=1))
    directions: list[str] = field(metadata=spec(
        "a2v: audio (CrisisMMD: text) teacher -> visual (image) student; v2a: the reverse",
        choices=tuple(specs.DIRECTIONS), min_items=1))
    sections: list[str] = field(metadata=spec("artefacts to produce", choices=SECTIONS,
                                              min_items=1))
    dataset_sections: dict = field(metadata=spec(
        "per dataset, the artefacts to produce in place of `sections` (e.g. the costly "
        "sections on the cheap data only: {mfeat: [table3, fig4]}); {}: `sections` everywhere",
        validate=_check_dataset_sections))
    epochs: int = field(metadata=spec("epochs of every student (C2KD: 100)", low=1,
                                      high=10_000))
    teacher_epochs: int = field(metadata=spec("epochs of each teacher", low=1, high=10_000))
    patience: int = field(metadata=spec(
        "early stopping of every job, teachers too: stop once validation accuracy has not "
        "improved for this many epochs (0: train all epochs)", low=0, high=10_000))
    batch_size: int = field(metadata=spec("mini-batch size (C2KD: 64)", low=2, high=4096))
    lr: float = field(metadata=spec("SGD learning rate (C2KD: 1e-2, momentum 0.9, poly 0.9)",
                                    low=0, high=10, low_open=True))
    lr_min: float = field(metadata=spec("floor of the poly decay (C2KD's code: 1e-4)", low=0,
                                        high=10))
    weight_decay: float = field(metadata=spec("SGD weight decay", low=0, high=1))
    method_hparams: dict = field(metadata=spec(
        "hyperparameters per method or preset over the registry's defaults (C2KD: omega 0; "
        "Ours-dagger, preset c2kd_partial: teacher_top_k 2)",
        validate=methods.check_method_hparams))
    fig4_omegas: list[float] = field(metadata=spec("thresholds of the Fig. 4 sweep", low=-1,
                                                   high=1, min_items=1))
    fig4_filters: list[str] = field(metadata=spec("filters of the Fig. 4 sweep", choices=FILTERS,
                                                  min_items=1))
    fusions: list[str] = field(metadata=spec("Table 7's multimodal teachers", choices=FUSIONS,
                                             min_items=1))
    image_size: int = field(metadata=spec(
        "frame size of the real datasets' visual input (paper: 224; ignored by avdigits)",
        low=8, high=1024))
    cremad_root: str = field(metadata=spec("CREMA-D folder (paper profile; '' when unused)"))
    ave_root: str = field(metadata=spec("AVE folder (paper profile; '' when unused)"))
    vggsound_root: str = field(metadata=spec("VGGSound folder (paper profile; '' when unused)"))
    crisismmd_root: str = field(metadata=spec("CrisisMMD_v2.0 folder (paper profile; '' when "
                                              "unused)"))
    crisismmd_text_encoder: str = field(metadata=spec(
        "CrisisMMD text encoder, import path 'package.module:callable' of your own (C2KD: "
        "BERT-base from local weights; '' when unused)"))
    crisismmd_image_encoder: str = field(metadata=spec(
        "CrisisMMD image encoder, import path 'package.module:callable' of your own (C2KD: "
        "MobileNetV2 from local weights; '' when unused)"))
    crisismmd_text_dim: int = field(metadata=spec(
        "size of the text encoder's features (BERT-base: 768)", low=1, high=1_000_000))
    crisismmd_image_dim: int = field(metadata=spec(
        "size of the image encoder's features (MobileNetV2: 1280)", low=1, high=1_000_000))
    workers: int = field(metadata=spec("DataLoader worker processes per job", low=0, high=64))
    processes: int = field(metadata=spec(
        "jobs trained at once in worker processes (1: one after the other in this process)",
        low=1, high=64))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                      validate=device_available))

    def sections_of(self, dataset: str) -> set[str]:
        """The sections to produce on ``dataset``."""
        return set(self.dataset_sections.get(dataset, self.sections))

    def preflight(self) -> None:
        """Every selected real dataset must be found in its layout, and its encoders (CrisisMMD)
        importable (:func:`cmkd.data.specs.preflight`): checked by ``cmkd reproduce`` with the
        other parameters and by :func:`run`, before any compute (not by plain validation, so a
        params file can name folders and modules of another machine)."""
        specs.preflight(self.datasets, dataclasses.asdict(self))


# ----------------------------------------------------------------------------- the grid
def builder(config: Config):
    """The job builder of this grid (:class:`cmkd.jobs.builders.Builder`): C2KD's SGD with
    momentum 0.9 and poly decay, the config's epochs, batch size, device and method_hparams."""
    from cmkd.jobs.builders import Builder, Training

    optim = {"optimizer": "sgd", "lr": config.lr, "momentum": 0.9,
             "weight_decay": config.weight_decay, "schedule": "poly",
             "lr_min": min(config.lr_min, config.lr)}
    return Builder(dataclasses.asdict(config), Training(
        optim=optim, epochs=config.epochs, teacher_epochs=config.teacher_epochs,
        batch_size=config.batch_size, device=config.device, workers=config.workers,
        method_hparams=config.method_hparams, patience=config.patience or None))


def grid(config: Config) -> tuple[list, pd.DataFrame]:
    """Every job of the selected sections, and a table tagging each (section, dataset,
    direction, seed, label, job index): one job can serve several artefacts."""
    jobs, tags, index = [], [], {}
    make = builder(config)

    def add(section, dataset, direction, seed, label, job, **extra):
        if job.key not in index:
            index[job.key] = len(jobs)
            jobs.append(job)
        tags.append(dict(section=section, dataset=dataset, direction=direction, seed=seed,
                         label=label, job=index[job.key], **extra))

    for dataset in config.datasets:
        wanted = config.sections_of(dataset)
        for direction in config.directions:
            for r in range(config.n_seeds):
                seed = config.seed + r

                def student(row, teacher=None, own=None, _d=dataset, _r=direction, _s=seed):
                    return make.student(_d, _r, _s, row.preset, own, teacher)

                for row in TABLE3 if {"table3", "fig3"} & wanted else ():
                    job = student(row)
                    if "table3" in wanted:
                        add("table3", dataset, direction, seed, row.label, job)
                    if "fig3" in wanted and row.label in FIG3:
                        add("fig3", dataset, direction, seed, row.label, job)
                for row in TABLE5 if "table5" in wanted else ():
                    add("table5", dataset, direction, seed, row.label, student(row),
                        switches=modules(row.preset))
                if "fig4" in wanted:
                    for filt in config.fig4_filters:
                        for omega in config.fig4_omegas:
                            row = Row(filt, FIG4[filt], FIG4[filt])
                            add("fig4", dataset, direction, seed, filt,
                                student(row, own={"omega": omega}), omega=omega)
                    add("fig4", dataset, direction, seed, FIG4_NONE.label, student(FIG4_NONE),
                        omega=np.nan)
                for base, rows in FIG5.items() if "fig5" in wanted else ():
                    for row in rows:
                        add("fig5", dataset, direction, seed, row.label, student(row),
                            base=base.upper())
                for row in TABLE6 if "table6" in wanted else ():
                    add("table6", dataset, direction, seed, row.label, student(row))
                for row in TABLE7 if "table7" in wanted else ():
                    if row.fusion is not None and row.fusion not in config.fusions:
                        continue
                    teacher = (None if row.fusion is None else
                               make.fusion_teacher(dataset, row.fusion, direction, seed))
                    add("table7", dataset, direction, seed, row.label, student(row, teacher))
    return jobs, pd.DataFrame(tags)


def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Run the grid (finished jobs come from the cache) and return one row per tag: the tag's
    fields plus the job's scores in percent (student ``acc``, ``teacher_acc`` of the teacher
    job, ``teacher_end_acc`` after training for methods that update the teacher), the epochs
    it trained (``epochs_run``), whether its validation score was still rising at its last
    epoch (``still_improving``), the per-item test correctness (``test_correct``, a 0/1
    string), the job key and its training seconds."""
    from cmkd.jobs import ProcessExecutor, run_jobs

    config.preflight()
    jobs, tags = grid(config)
    if executor is None and config.processes > 1:
        executor = ProcessExecutor(config.processes)
    rows = run_jobs(jobs, executor=executor, cache=cache, progress=progress)
    res = pd.DataFrame({
        "key": rows["key"].to_numpy(), "method": rows["method"].to_numpy(),
        "acc": 100 * rows["test_at_best_val"].astype(float).to_numpy(),
        "acc_last": 100 * rows["test_last"].astype(float).to_numpy(),
        "teacher_acc": 100 * rows["teacher_test"].astype(float).to_numpy(),
        "teacher_end_acc": 100 * pd.to_numeric(rows["teacher_end_test"]).to_numpy(),
        "epochs_run": rows["epochs_run"].to_numpy(),
        "still_improving": (rows["since_best"] == 0).to_numpy(),
        "test_correct": rows["test_correct"].to_numpy(),
        "seconds": rows["seconds"].astype(float).to_numpy()})
    out = tags.join(res, on="job").drop(columns="job")
    out.attrs["jobs"] = len(jobs)
    out.attrs["seconds"] = float(res.seconds.sum())
    return out


def histories(results: pd.DataFrame, cache=None) -> pd.DataFrame:
    """The per-epoch histories of the fig3 rows (from the cache): epoch, test accuracy (%) and
    the mean number per batch of samples whose KRC is <= omega."""
    from cmkd.jobs import cache as jc

    folder = jc.cache_dir(cache)
    frames = []
    for row in results[results.section == "fig3"].itertuples():
        h = pd.read_csv(folder / row.key / jc.HISTORY)
        krc = (h["n_krc_below_omega"] / h["steps"]) if "n_krc_below_omega" in h else np.nan
        frames.append(pd.DataFrame({"dataset": row.dataset, "direction": row.direction,
                                    "seed": row.seed, "label": row.label,
                                    "epoch": h["epoch"] + 1,
                                    "test_acc": 100 * h["test_accuracy"],
                                    "krc_below_omega_per_batch": krc}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- tables
def _mean_std(df: pd.DataFrame, by: list[str], value: str = "acc") -> pd.DataFrame:
    g = df.groupby(by, sort=False)[value]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "n": g.size()}).reset_index()


def _wide(df: pd.DataFrame, section: str, order: list[str]) -> pd.DataFrame:
    """Rows = labels in ``order``; one 'mean' and 'std' column pair per (dataset, column)."""
    sub = df[df.section == section]
    if sub.empty:
        return pd.DataFrame()
    s = _mean_std(sub, ["label", "dataset", "direction"])
    out = pd.DataFrame({"method": [lbl for lbl in order if lbl in set(s.label)]})
    for (dataset, direction), part in s.groupby(["dataset", "direction"], sort=False):
        part = part.set_index("label")
        col = f"{dataset} {column(dataset, direction)}"
        out[f"{col} mean"] = out.method.map(part["mean"])
        out[f"{col} std"] = out.method.map(part["std"])
    return out


def _labels(rows) -> list[str]:
    return [r.label for r in rows]


def table3(df: pd.DataFrame) -> pd.DataFrame:
    """C2KD Table 3: top-1 accuracy (%, mean and std over seeds) per method and column."""
    return _wide(df, "table3", _labels(TABLE3))


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """C2KD Table 1: Table 3's rows on AVE and VGGSound (all datasets when those are absent)."""
    t3 = df[df.section == "table3"]
    keep = t3[t3.dataset.isin(["ave", "vggsound"])]
    return _wide((keep if len(keep) else t3).assign(section="table3"), "table3",
                 _labels(TABLE1))


def table5(df: pd.DataFrame) -> pd.DataFrame:
    out = _wide(df, "table5", _labels(TABLE5))
    if not out.empty:
        out.insert(1, "modules", out.method.map({r.label: modules(r.preset) for r in TABLE5}))
    return out


def table6(df: pd.DataFrame) -> pd.DataFrame:
    return _wide(df, "table6", _labels(TABLE6))


def table7(df: pd.DataFrame) -> pd.DataFrame:
    """Student (S) and teacher (T) accuracy per row: the teacher is the unimodal one for NKD,
    the fusion model for +Cat / +FiLM / +OGM, and C2KD's updated teacher for Ours."""
    sub = df[df.section == "table7"].copy()
    if sub.empty:
        return pd.DataFrame()
    sub["t_acc"] = np.where(sub.label == "Ours", sub.teacher_end_acc, sub.teacher_acc)
    order = _labels(TABLE7)
    out = pd.DataFrame({"method": [lbl for lbl in order if lbl in set(sub.label)]})
    for (dataset, direction), part in sub.groupby(["dataset", "direction"], sort=False):
        g = part.groupby("label")
        col = f"{dataset} {column(dataset, direction)}"
        out[f"{col} S"] = out.method.map(g.acc.mean())
        out[f"{col} T"] = out.method.map(g.t_acc.mean())
    return out


def fig4_table(df: pd.DataFrame) -> pd.DataFrame:
    sub = df[df.section == "fig4"]
    if sub.empty:
        return pd.DataFrame()
    return _mean_std(sub, ["dataset", "direction", "label", "omega"])


def fig5_table(df: pd.DataFrame) -> pd.DataFrame:
    sub = df[df.section == "fig5"]
    if sub.empty:
        return pd.DataFrame()
    out = _mean_std(sub, ["dataset", "direction", "base", "label"])
    return out.rename(columns={"label": "stage"})


# ----------------------------------------------------------------------------- paper values
#: section -> (published table, the section's rows)
PAPER_TABLES = {"table3": ((3, TABLE3), (1, TABLE1)), "table5": ((5, TABLE5),),
                "table6": ((6, TABLE6),), "table7": ((7, TABLE7),)}


def compare(df: pd.DataFrame) -> dict[str, dict[str, tuple[float, float]]]:
    """Ours beside every published value that our rows have a counterpart for (the embedded
    data has none): {variant: {reference id: (mean, std)}} for
    :meth:`cmkd.reporting.Report.compare`.  Each row finds its published value by the fields
    (table, dataset, direction, method, variant; Table 7: the student's and the teacher's)."""
    out: dict[str, tuple[float, float]] = {}
    for (section, dataset, direction, label), g in df.groupby(
            ["section", "dataset", "direction", "label"]):
        for table, rows in PAPER_TABLES.get(section, ()):
            row = next((r for r in rows if r.label == label), None)
            if row is None:
                continue
            fields = dict(table=table, dataset=dataset,
                          direction=reference_direction(dataset, direction), method=row.paper)
            if table == 7:
                teacher = g.teacher_end_acc if row.preset == "c2kd" else g.teacher_acc
                cells = (("student", g.acc), ("teacher", teacher))
            else:
                cells = ((row.variant, g.acc),)
            for variant, values in cells:
                entry = paper_entry(**fields, variant=variant)
                if entry is not None and len(values):
                    out[entry["id"]] = (float(np.mean(values)), float(np.std(values)))
    return {"ours (test at best validation epoch)": out} if out else {}


# ----------------------------------------------------------------------------- claims
def _col_means(df: pd.DataFrame, section: str) -> pd.DataFrame:
    sub = df[df.section == section]
    return sub.groupby(["dataset", "direction", "label"]).acc.mean().unstack("label")


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's qualitative claims, each checked on our rows (means over seeds)."""
    out = []

    def claim(artefact, text, evidence, held):
        out.append({"artefact": artefact, "claim": text, "evidence": evidence,
                    "held": bool(held)})

    t3 = _col_means(df, "table3")
    if len(t3):
        ours = [c for c in ("Ours‡ (full)", "Ours† (top layers)") if c in t3.columns]
        ranks = []
        for idx, row in t3.iterrows():
            order = row.sort_values(ascending=False).index.tolist()
            best = min(order.index(c) for c in ours) + 1 if ours else None
            ranks.append((f"{idx[0]} {column(*idx)}", best))
        worst = max(r for _, r in ranks)
        claim("C2KD Table 3", "C2KD (either variant) is best or second in every column",
              "; ".join(f"{c}: rank {r}" for c, r in ranks), worst <= 2)
        if {"KD", "w/o KD"} <= set(t3.columns):
            diffs = []
            for (dataset, direction), row in t3.iterrows():
                diffs.append((dataset, direction, row["KD"] - row["w/o KD"]))
            teacher_acc = df[df.section == "table3"].groupby(
                ["dataset", "direction"]).teacher_acc.mean()
            student_alone = t3["w/o KD"]
            weak_to_strong = [(d, r, x) for d, r, x in diffs
                              if teacher_acc[(d, r)] < student_alone[(d, r)]]
            if weak_to_strong:
                claim("C2KD Table 1 / 3",
                      "KD from the weaker modality hurts the stronger one (KD < w/o KD where "
                      "the teacher is less accurate than the student trained alone)",
                      "; ".join(f"{d} {column(d, r)}: KD - w/o KD = {x:+.2f}"
                                for d, r, x in weak_to_strong),
                      all(x < 0 for _, _, x in weak_to_strong))
    t5 = _col_means(df, "table5")
    if len(t5) and {"(b) BD", "BD+NT", "BD+OFS"} <= set(t5.columns):
        nt = (t5["BD+NT"] - t5["(b) BD"]).mean()
        ofs = (t5["BD+OFS"] - t5["(b) BD"]).mean()
        claim("C2KD Table 5", "OFS and NT each help over bidirectional distillation (BD)",
              f"mean over columns: BD+NT - BD = {nt:+.2f}, BD+OFS - BD = {ofs:+.2f}",
              nt > 0 and ofs > 0)
    f4 = df[df.section == "fig4"]
    if len(f4):
        best = f4[f4.label != "w/o selection"].groupby(
            ["dataset", "direction", "label", "omega"]).acc.mean().groupby(
            ["dataset", "direction", "label"]).max().unstack("label")
        if "krc" in best.columns and best.shape[1] > 1:
            others = best.drop(columns="krc").max(axis=1)
            margin = (best["krc"] - others)
            claim("C2KD Fig. 4", "the KRC filter is at least as good as the cosine, Pearson and "
                  "gradient-cosine filters (best threshold of each)",
                  "; ".join(f"{d} {column(d, r)}: KRC - best other = {m:+.2f}"
                            for (d, r), m in margin.items()), (margin >= 0).all())
    f5 = df[df.section == "fig5"]
    if len(f5):
        m = f5.groupby(["dataset", "direction", "base", "label"]).acc.mean().unstack("label")
        if {"plain", "+BD+OFSD+proxy"} <= set(m.columns):
            gain = m["+BD+OFSD+proxy"] - m["plain"]
            claim("C2KD Fig. 5", "C2KD's modules improve DIST and NKD",
                  "; ".join(f"{b} {d} {column(d, r)}: {g:+.2f}" for (d, r, b), g in gain.items()),
                  (gain > 0).all())
    t6 = _col_means(df, "table6")
    if len(t6) and "Ours" in t6.columns:
        selfkd = [c for c in ("DLB", "ZipfKD", "USKD") if c in t6.columns]
        margin = t6["Ours"] - t6[selfkd].max(axis=1)
        claim("C2KD Table 6", "C2KD beats the self-KD methods",
              "; ".join(f"{d} {column(d, r)}: C2KD - best self-KD = {x:+.2f}"
                        for (d, r), x in margin.items()), (margin > 0).all())
    t7 = df[df.section == "table7"]
    if len(t7):
        fused = t7[t7.label.isin(TABLE7_LABELS.values())]
        uni_t = t7[t7.label == "NKD"].teacher_acc.mean()
        fused_t = fused.teacher_acc.mean()
        ours_s = t7[t7.label == "Ours"].acc.mean()
        best_fused_s = fused.groupby("label").acc.mean().max()
        claim("C2KD Table 7", "multimodal teachers are more accurate than the unimodal teacher "
              "without giving better students than C2KD",
              f"teacher accuracy fused {fused_t:.2f} vs unimodal {uni_t:.2f}; student: best "
              f"fused-teacher NKD {best_fused_s:.2f} vs C2KD {ours_s:.2f}",
              fused_t > uni_t and best_fused_s <= ours_s)
    return pd.DataFrame(out, columns=["artefact", "claim", "evidence", "held"])


# ----------------------------------------------------------------------------- figures
def plot_dynamics(hist: pd.DataFrame):
    """Fig. 3: test accuracy (solid) and samples per batch with KRC <= omega (dotted) over
    epochs, for SHAKE, NKD and C2KD (mean over seeds), one panel per column."""
    cols = list(hist.groupby(["dataset", "direction"]).groups)
    fig, axes = new_figure(ncols=len(cols), width=4.6 * len(cols), height=3.4, squeeze=False)
    colors = {"SHAKE": "#4C72B0", "NKD": "#DD8452", "Ours‡ (full)": "#000000",
              "Ours† (top layers)": "#8C8C8C"}
    for ax, (dataset, direction) in zip(axes[0], cols):
        sub = hist[(hist.dataset == dataset) & (hist.direction == direction)]
        ax2 = ax.twinx()
        for label, g in sub.groupby("label", sort=False):
            m = g.groupby("epoch").mean(numeric_only=True)
            color = colors.get(label, None)
            ax.plot(m.index, m.test_acc, "-", color=color, label=label)
            ax2.plot(m.index, m.krc_below_omega_per_batch, ":", color=color)
        ax.set_title(f"{dataset}: {' -> '.join(modalities(dataset, direction))}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax2.set_ylabel("samples per batch with KRC <= omega (dotted)")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def plot_filters(df: pd.DataFrame):
    """Fig. 4: accuracy vs omega per filter (mean +- std over seeds); dashed: no selection."""
    f4 = df[df.section == "fig4"]
    cols = list(f4.groupby(["dataset", "direction"]).groups)
    fig, axes = new_figure(ncols=len(cols), width=4.4 * len(cols), height=3.3, squeeze=False)
    for ax, (dataset, direction) in zip(axes[0], cols):
        sub = f4[(f4.dataset == dataset) & (f4.direction == direction)]
        for label, g in sub[sub.label != "w/o selection"].groupby("label", sort=False):
            s = g.groupby("omega").acc.agg(["mean", "std"])
            ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), marker="o", ms=3,
                        capsize=2, label=label)
        none = sub[sub.label == "w/o selection"].acc.mean()
        ax.axhline(none, color="0.4", linestyle="--", linewidth=1, label="w/o selection")
        ax.set_title(f"{dataset}: {' -> '.join(modalities(dataset, direction))}")
        ax.set_xlabel(r"$\omega$")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(fontsize=7, frameon=False)
    return fig


def plot_modules(df: pd.DataFrame):
    """Fig. 5: DIST and NKD plain and with C2KD's modules added (mean +- std over seeds)."""
    t = fig5_table(df)
    cols = list(t.groupby(["dataset", "direction"]).groups)
    fig, axes = new_figure(ncols=len(cols), width=4.4 * len(cols), height=3.3, squeeze=False)
    stages = [r.label for r in FIG5["dist"]]
    for ax, (dataset, direction) in zip(axes[0], cols):
        sub = t[(t.dataset == dataset) & (t.direction == direction)]
        width = 0.38
        for i, (base, g) in enumerate(sub.groupby("base", sort=False)):
            g = g.set_index("stage").reindex(stages)
            x = np.arange(len(stages)) + (i - 0.5) * width
            ax.bar(x, g["mean"], width, yerr=g["std"].fillna(0), capsize=2, label=base)
        ax.set_xticks(np.arange(len(stages)), stages, fontsize=7)
        lo = sub["mean"].min() - 3 * max(sub["std"].max(), 1.0)
        ax.set_ylim(max(lo, 0), None)
        ax.set_title(f"{dataset}: {' -> '.join(modalities(dataset, direction))}")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(fontsize=7, frameon=False)
    return fig
