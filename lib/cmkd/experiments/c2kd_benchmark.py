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
``crisismmd_image_dim``.  They are code that the params file runs: the preflight checks them
without importing them, and the jobs import them when they open the data.  The encoders are
frozen feature extractors and every CrisisMMD model (teacher, student, fusion encoder) is an MLP
(``mlp``) on their features: C2KD does not say whether it fine-tunes BERT and MobileNetV2, and
fine-tuning them is not done here.
Your own data: ``pairs`` reads the file ``pairs_root`` (:mod:`cmkd.data.pairs`; modalities
``a`` and ``b``, a2v: a teaches b; MLPs on vectors, a small CNN on images), and a dataset added by
:func:`cmkd.data.register` with a spec is accepted by ``datasets`` in the process that registered
it (with ``processes`` 1, or a registration the worker processes import).

Directions: the Config's ``a2v`` is the non-visual modality (audio; CrisisMMD: text) teaching the
visual one (visual; image), ``v2a`` the reverse (:mod:`cmkd.data.specs`); the paper's columns name
the student modality (Visual / Audio; Image / Text) and its published values the direction by
the modalities' initials (a2v / v2a; t2i / i2t).

Rows.  Every row of every table is a method or preset of :mod:`cmkd.methods` (:class:`Row`);
hyperparameters come from the registry's defaults, the preset and the params file's
``method_hparams`` (:func:`cmkd.methods.hparams_for`; a row adds only what it varies, Fig. 4's
threshold).  The jobs are made by :class:`cmkd.jobs.builders.Builder`; a row names the published
number it stands beside by the reference's fields (table, dataset, direction, method, variant).

Your own methods: ``method_modules`` names modules of yours that register methods
(:mod:`cmkd.methods`: ``@register`` on a :class:`cmkd.methods.Method` subclass), imported when the
grid is built (validation only finds them); ``extra_methods`` adds a Table 3 row per method (its
label is its name; beside the paper's rows, not ranked by the claims, which are the paper's), and
``method_hparams`` sets their hyperparameters like any method's.
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
from cmkd.verdicts import (
    HELD,
    NOT_HELD,
    claim_row,
    claims_frame,
    combine,
    either,
    rank_at_most,
    verdict_difference,
)

SECTIONS = ("table3", "table5", "fig3", "fig4", "fig5", "table6", "table7")


class _Specs:
    """The names of :data:`cmkd.data.specs.SPECS` when asked, so that a dataset added later by
    :func:`cmkd.data.register` with a spec is accepted (a tuple-like choice list)."""

    def __contains__(self, name) -> bool:
        return name in specs.SPECS

    def __iter__(self):
        return iter(tuple(specs.SPECS))

    def __len__(self) -> int:
        return len(specs.SPECS)

    def __repr__(self) -> str:
        return repr(tuple(specs.SPECS))


#: the datasets a grid may name: every spec of :mod:`cmkd.data.specs` (registered ones too)
DATASETS = _Specs()
#: Fig. 4's filters (C2KD's KRC and its alternatives; 'none' is the w/o-selection row)
FILTERS = tuple(f for f in _FILTERS if f != "none")
FUSIONS = ("fusion_concat", "fusion_film", "fusion_ogm_ge")


class Row(NamedTuple):
    """A row of a table: its label as printed, the method or preset that trains it, the
    published value's ``method`` field and, where the paper distinguishes them, its ``variant``
    (Table 3: partial / full teacher update), the teacher (Table 7: a fusion model) and
    hyperparameters of its own over the preset's (Fig. 5's sensitivity rows), as (name, value)
    pairs."""

    label: str
    preset: str
    paper: str
    variant: str | None = None
    fusion: str | None = None
    hparams: tuple = ()


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
FIG5["dist"] += (Row("+BD+OFSD+proxy, C-1 columns", "c2kd_dist_removed", "c2kd_dist_removed"),
                 Row("+BD+OFSD+proxy, λ3 = 0.1", "c2kd_dist", "c2kd_dist",
                     hparams=(("lambda3", 0.1),)),
                 Row("+BD+OFSD+proxy, NT off", "c2kd_dist", "c2kd_dist",
                     hparams=(("nt", False),)))
#: our rows beside the paper's (controls, documented choices, trainable forms): no published
#: number stands beside them
EXTRA_ROWS = frozenset({SHAKE_RAW.label, C2KD_OFFICIAL.label, C2KD_CONTROL.label,
                        *(r.label for r in TABLE5 if "," in r.label or "control" in r.label),
                        *(r.label for r in FIG5["dist"][4:])})
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


#: datasets whose seeds can train as one stack (a loader option ``order`` gives each run its own
#: order of training items; :func:`stack_seeds`)
STACKABLE = ("mfeat",)


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed; run r uses seed + r", low=0))
    n_seeds: int = field(metadata=spec("seeds per setting (C2KD: 3)", low=1, high=20))
    datasets: list[str] = field(metadata=spec(
        "datasets ('avdigits': embedded, not the papers' numbers; 'pairs': your file, "
        "pairs_root; a name added by cmkd.data.register with a spec)", choices=DATASETS,
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
                                        high=10, at_most="lr"))
    weight_decay: float = field(metadata=spec("SGD weight decay", low=0, high=1))
    method_hparams: dict = field(metadata=spec(
        "hyperparameters per method or preset over the registry's defaults (C2KD: omega 0; "
        "Ours-dagger, preset c2kd_partial: teacher_top_k 2)",
        validate=methods.check_method_hparams_deferred))
    method_modules: list[str] = field(kw_only=True, default_factory=list, metadata=spec(
        "modules of yours that register methods (cmkd.methods.register), by import path, "
        "imported when the grid is built", validate=methods.check_module))
    extra_methods: list[str] = field(kw_only=True, default_factory=list, metadata=spec(
        "methods (or presets) added as Table 3 rows beside the paper's, e.g. one of "
        "method_modules"))
    stack_seeds: list[str] = field(kw_only=True, default_factory=list, metadata=spec(
        "datasets whose n_seeds runs of a row train at once as one stack of models (the MLPs "
        "of mfeat: about 2x less CPU; each run keeps its own initialisation and its own order "
        "of training batches; the runs stop together once every one has stalled for "
        "`patience` epochs, each keeping its own best-validation epoch; rows whose method or "
        "teacher has no stacked form train seed by seed); []: every run alone",
        choices=STACKABLE))
    tensorboard: bool = field(kw_only=True, default=False, metadata=spec(
        "write each trained job's history as TensorBoard event files under .cache/tb/<job key>/ "
        "(cmkd reproduce --tensorboard does it for every notebook)"))
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
    pairs_root: str = field(metadata=spec(
        "your paired data: a .npz / .pt file (docs/datasets.md, cmkd.data.pairs) for the "
        "dataset 'pairs' ('' when unused)"))
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

    def check(self) -> None:
        """Method names (``extra_methods``, ``method_hparams``) are methods or presets, or left
        to ``method_modules`` (imported by :func:`grid`, which checks them again)."""
        from cmkd.params import ParamError

        methods.check_names(self.extra_methods, "extra_methods", self.method_modules)
        methods.check_names(self.method_hparams, "method_hparams", self.method_modules)
        rows = {r.preset for r in TABLE3} | {r.label for r in TABLE3}
        twice = [m for m in self.extra_methods if m in rows]
        if twice:
            raise ParamError("extra_methods", f"{twice[0]!r} is already a row of Table 3")

    def sections_of(self, dataset: str) -> set[str]:
        """The sections to produce on ``dataset``."""
        return set(self.dataset_sections.get(dataset, self.sections))

    def has(self, section: str) -> bool:
        """Whether ``section`` is produced on some dataset."""
        return any(section in self.sections_of(d) for d in self.datasets)

    def preflight(self) -> None:
        """Every selected real dataset must be found in its layout, and its encoders (CrisisMMD)
        well formed, not refused and found on sys.path, without importing them
        (:func:`cmkd.data.specs.preflight`): checked by ``cmkd reproduce`` with the other
        parameters and by :func:`run`, before any compute (not by plain validation, so a params
        file can name folders and modules of another machine)."""
        specs.preflight(self.datasets, dataclasses.asdict(self))
        methods.find_modules(self.method_modules)

    def user_code(self) -> list[tuple[str, str]]:
        """(parameter, import path) of the user's encoders that the jobs will import and run
        (:func:`cmkd.data.specs.user_code`) and of the method modules the grid imports;
        ``cmkd reproduce`` lists them before it starts."""
        return (specs.user_code(self.datasets, dataclasses.asdict(self))
                + [("method_modules", m) for m in self.method_modules])

    def table3_rows(self) -> tuple[Row, ...]:
        """Table 3's rows: the paper's and ours, then one per ``extra_methods``."""
        return TABLE3 + tuple(Row(m, m, m) for m in self.extra_methods)


# ----------------------------------------------------------------------------- the grid
def builder(config: Config):
    """The job builder of this grid (:class:`cmkd.jobs.builders.Builder`): C2KD's SGD with
    momentum 0.9 and poly decay, the config's epochs, batch size, device and method_hparams."""
    from cmkd.jobs.builders import Builder, Training

    optim = {"optimizer": "sgd", "lr": config.lr, "momentum": 0.9,
             "weight_decay": config.weight_decay, "schedule": "poly",
             "lr_min": config.lr_min}
    return Builder(dataclasses.asdict(config), Training(
        optim=optim, epochs=config.epochs, teacher_epochs=config.teacher_epochs,
        batch_size=config.batch_size, device=config.device, workers=config.workers,
        method_hparams=config.method_hparams, patience=config.patience or None))


def grid(config: Config) -> tuple[list, pd.DataFrame]:
    """Every job of the selected sections, and a table tagging each (section, dataset,
    direction, seed, label, job index): one job can serve several artefacts."""
    methods.activate(config.method_modules, config.method_hparams, config.extra_methods,
                     "extra_methods")
    jobs, tags, index = [], [], {}
    make = builder(config)
    table3_rows = config.table3_rows()

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

                for row in table3_rows if {"table3", "fig3"} & wanted else ():
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
                        add("fig5", dataset, direction, seed, row.label,
                            student(row, own=dict(row.hparams) or None), base=base.upper())
                for row in TABLE6 if "table6" in wanted else ():
                    add("table6", dataset, direction, seed, row.label, student(row))
                for row in TABLE7 if "table7" in wanted else ():
                    if row.fusion is not None and row.fusion not in config.fusions:
                        continue
                    teacher = (None if row.fusion is None else
                               make.fusion_teacher(dataset, row.fusion, direction, seed))
                    add("table7", dataset, direction, seed, row.label, student(row, teacher))
    tags = pd.DataFrame(tags)
    tags["run"] = 0
    return stack_seeds(jobs, tags, config.stack_seeds, config.seed)


def _unseeded(job):
    """``job`` with its seed and its teacher's seed set to 0: what the seeds of a row share."""
    teacher = None if job.teacher is None else job.teacher.replace(seed=0)
    return job.replace(seed=0, teacher=teacher)


def stacked_job(job, seeds: list[int], base_seed: int):
    """``job`` (and its teacher) as one stack of runs, run r initialised from ``seeds[r]`` and
    reading the train split in its own order (``order`` = its seed); ``base_seed`` seeds the
    batch order the runs share.  A ValueError when the method or a model has no stacked form."""
    runs = [{"seed": s, "dataset_options": {"order": s}} for s in seeds]
    teacher = None
    if job.teacher is not None:
        if job.teacher.teacher is not None:
            raise ValueError("a teacher with a teacher is not stacked")
        teacher = job.teacher.replace(seed=base_seed, runs=runs)
    out = job.replace(seed=base_seed, runs=runs, teacher=teacher)
    out.check()  # builds the stacked models and method: raises for those without one
    if teacher is not None:
        teacher.check()
    return out


def stack_seeds(jobs: list, tags: pd.DataFrame, datasets, base_seed: int
                ) -> tuple[list, pd.DataFrame]:
    """Fold the jobs of ``datasets`` that differ only in their seed (and their teacher's) into
    one stack per row (:func:`stacked_job`); a tag of seed s then points at its stack's run of
    seed s (``job``, ``run``).  Jobs whose method or models have no stacked form stay alone."""
    if not datasets:
        return jobs, tags
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        if job.dataset in datasets and not job.stacked and job.kind == "student":
            groups.setdefault(_unseeded(job).key, []).append(i)
    where: dict[int, tuple[int, int]] = {}  # old job index -> (new job index, run)
    out: list = []
    for members in groups.values():
        seeds = sorted(jobs[i].seed for i in members)
        if len(members) < 2 or len(set(seeds)) != len(seeds):
            continue
        try:
            stack = stacked_job(jobs[members[0]], seeds, base_seed)
        except ValueError:
            continue
        out.append(stack)
        for i in members:
            where[i] = (len(out) - 1, seeds.index(jobs[i].seed))
    for i, job in enumerate(jobs):
        if i not in where:
            out.append(job)
            where[i] = (len(out) - 1, 0)
    tags = tags.copy()
    moved = [where[i] for i in tags.job]
    tags["job"], tags["run"] = [j for j, _ in moved], [r for _, r in moved]
    return out, tags


def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Run the grid (finished jobs come from the cache) and return one row per tag: the tag's
    fields plus the job's scores in percent (student ``acc``, ``teacher_acc`` of the teacher
    job, ``teacher_end_acc`` after training for methods that update the teacher), the epochs
    it trained (``epochs_run``), whether its validation score was still rising at its last
    epoch (``still_improving``), the per-item test correctness (``test_correct``, a 0/1
    string, None for tasks without one top-1 label), the job key, its training seconds and
    ``n_test``, the items of the test split it is scored on (every seed of a column is scored
    on the same split: the claims' test-sampling term)."""
    from cmkd.jobs import ProcessExecutor, run_jobs
    from cmkd.jobs.cluster import configured_executor

    config.preflight()
    jobs, tags = grid(config)
    if executor is None:  # cmkd reproduce --executor (CMKD_EXECUTOR)
        executor = configured_executor()
    if executor is None and config.processes > 1:
        executor = ProcessExecutor(config.processes)
    rows = run_jobs(jobs, executor=executor, cache=cache, progress=progress,
                        tensorboard=config.tensorboard or None)
    sizes: dict[str, int] = {}
    index = [(i, r) for i, job in enumerate(jobs) for r in range(len(job.runs) or 1)]
    res = pd.DataFrame({
        "job": [i for i, _ in index], "run": [r for _, r in index],
        "key": rows["key"].to_numpy(), "method": rows["method"].to_numpy(),
        "acc": 100 * rows["test_at_best_val"].astype(float).to_numpy(),
        "acc_last": 100 * rows["test_last"].astype(float).to_numpy(),
        "teacher_acc": 100 * rows["teacher_test"].astype(float).to_numpy(),
        "teacher_end_acc": 100 * pd.to_numeric(rows["teacher_end_test"]).to_numpy(),
        "epochs_run": rows["epochs_run"].to_numpy(),
        "still_improving": (rows["since_best"] == 0).to_numpy(),
        "test_correct": rows["test_correct"].to_numpy(),
        "seconds": rows["seconds"].astype(float).to_numpy(),
        "n_test": [test_size(jobs[i], sizes) for i, _ in index]})
    out = tags.merge(res, on=["job", "run"], how="left", validate="many_to_one").drop(
        columns="job")
    out.attrs["jobs"] = len(jobs)
    out.attrs["seconds"] = float(res.drop_duplicates("job").seconds.sum())  # a stack: once
    return out


def test_size(job, sizes: dict | None = None) -> int:
    """Items in the test split ``job`` is scored on: its dataset's test split opened with the
    job's loader options (without the user's encoders, which do not change the count and can
    be slow to load).  ``sizes`` caches the counts by dataset, folder and options."""
    import json

    from cmkd import data

    encoders = set(specs.spec(job.dataset).encoders) if job.dataset in specs.SPECS else set()
    options = {k: v for k, v in job.dataset_options.items() if k not in encoders}
    key = json.dumps([job.dataset, job.data_root, options], sort_keys=True, default=str)
    sizes = {} if sizes is None else sizes
    if key not in sizes:
        sizes[key] = len(data.load(job.dataset, job.data_root, "test", **options))
    return sizes[key]


def histories(results: pd.DataFrame, cache=None, section: str = "fig3") -> pd.DataFrame:
    """The per-epoch histories of a section's rows (from the cache): epoch, validation and test
    accuracy (%) and the mean number per batch of samples whose KRC is <= omega."""
    from cmkd.jobs import cache as jc

    folder = jc.cache_dir(cache)
    frames = []
    for row in results[results.section == section].itertuples():
        h = pd.read_csv(jc.history_file(folder, row.key))
        if "run" in h:  # a stack's history: one block of epochs per run
            h = h[h["run"] == row.run].reset_index(drop=True)
        krc = (h["n_krc_below_omega"] / h["steps"]) if "n_krc_below_omega" in h else np.nan
        omega = getattr(row, "omega", np.nan)  # Fig. 4: one row per filter and threshold
        label = row.label if pd.isna(omega) else f"{row.label}, ω = {omega:g}"
        frames.append(pd.DataFrame({"dataset": row.dataset, "direction": row.direction,
                                    "seed": row.seed, "label": label,
                                    "epoch": h["epoch"] + 1,
                                    "val_acc": 100 * h["val_accuracy"],
                                    "test_acc": 100 * h["test_accuracy"],
                                    "krc_below_omega_per_batch": krc}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Per section, dataset, column and row: the epochs its runs trained (mean, max) and how
    many were still improving at their last epoch (best validation there: early stopping did
    not end them, the epoch cap did)."""
    if "epochs_run" not in df or df.empty:
        return pd.DataFrame()
    runs = df[df.section != "fig3"].drop_duplicates(["section", "key", "run"])  # fig3: table3's
    out = runs.groupby(["section", "dataset", "direction", "label"], sort=False).agg(
        epochs_mean=("epochs_run", "mean"), epochs_max=("epochs_run", "max"),
        still_improving=("still_improving", "sum"), runs=("key", "size")).reset_index()
    out.insert(2, "column", [column(d, r) for d, r in zip(out.dataset, out.direction)])
    return out.drop(columns="direction")


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
    """C2KD Table 3: top-1 accuracy (%, mean and std over seeds) per method and column (the
    paper's rows and ours, then the config's ``extra_methods``)."""
    order = _labels(TABLE3)
    extra = df[(df.section == "table3") & ~df.label.isin(order)].label.unique().tolist()
    return _wide(df, "table3", order + extra)


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


def per_seed(df: pd.DataFrame, section: str, value: str = "acc") -> pd.DataFrame:
    """Every seed's ``value`` (default the student's accuracy, %) in ``section``: one row per
    (dataset, column[, base], method[, omega]) in the table's order, one column per seed
    ('seed 0', ...), then the mean and std over seeds (what the section's table shows)."""
    sub = df[df.section == section]
    if sub.empty:
        return pd.DataFrame()
    extra = [c for c in ("base", "omega") if c in sub and sub[c].notna().any()]
    keys = ["dataset", "direction", *(["base"] if "base" in extra else []), "label",
            *(["omega"] if "omega" in extra else [])]
    sub = sub.assign(**{c: sub[c].fillna("") if c == "base" else sub[c] for c in extra})
    wide = sub.groupby(keys + ["seed"], sort=False, dropna=False)[value].mean().unstack("seed")
    seeds = sorted(wide.columns)
    values = wide[seeds].to_numpy(dtype=float)
    wide = wide[seeds].rename(columns=lambda s: f"seed {s}").rename_axis(columns=None)
    wide["mean"] = np.nanmean(values, axis=1)
    wide["std"] = np.nanstd(values, axis=1)
    out = wide.reset_index().rename(columns={"label": "method"})
    out.insert(1, "column", [column(d, r) for d, r in zip(out.dataset, out.direction)])
    return out.drop(columns="direction")


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
#: "at least as good as" / "no better than": a shortfall (excess) below this many points counts
#: as none (the equivalence margin of those claims)
MARGIN = 1.0
OURS = ("Ours‡ (full)", "Ours† (top layers)")


def _seeds(part: pd.DataFrame, label: str, value: str = "acc") -> pd.Series:
    """``value`` per seed (index) of the rows of ``part`` labelled ``label``."""
    return part[part.label == label].groupby("seed")[value].mean()


def _correct(part: pd.DataFrame, label: str) -> np.ndarray | None:
    """Per-item test correctness (seeds x items, in seed order) of the rows labelled ``label``,
    or None when a row has none (rows from before it was recorded, or other tasks)."""
    rows = part[part.label == label].sort_values("seed")
    if "test_correct" not in rows or rows.test_correct.isna().any() or rows.empty:
        return None
    return np.array([[c == "1" for c in s] for s in rows.test_correct], dtype=np.uint8)


def _improving(sub: pd.DataFrame) -> str:
    """'; k of n runs still improving at their last epoch' for the rows of a claim (empty when
    none was, or when the rows do not say)."""
    if "still_improving" not in sub or sub.empty:
        return ""
    runs = sub.drop_duplicates(["key", "run"] if "run" in sub else "key") if "key" in sub else sub
    k = int(runs.still_improving.fillna(False).astype(bool).sum())
    return (f"; STILL IMPROVING at the last epoch: {k} of {len(runs)} runs (the verdict may "
            f"change with longer training)" if k else "")


def _n_test(part: pd.DataFrame, n_test: int | None) -> int:
    """The test split's size of a column's rows: their ``n_test`` column, else the argument."""
    if "n_test" in part and part["n_test"].notna().any():
        sizes = part["n_test"].dropna().unique()
        if len(sizes) > 1:
            raise ValueError(f"one column's rows name several test-set sizes: {sorted(sizes)}")
        return int(sizes[0])
    if n_test is None:
        raise ValueError("claims() needs the test split's size: an 'n_test' column (run() adds "
                         "it) or the n_test argument")
    return int(n_test)


def claims(df: pd.DataFrame, n_test: int | None = None) -> pd.DataFrame:
    """The paper's qualitative claims, each scored on our rows by the rule of
    :mod:`cmkd.verdicts`.

    Every part is a difference of accuracies paired by seed, in one column (dataset and student
    modality), with the test-sampling term of the column's test split (the rows' ``n_test``,
    else ``n_test``: every seed is scored on the same split); a claim holds when all its parts
    do.  "Best or second" (Table 3) holds in a column when C2KD (either variant) is
    significantly better than all but at most one other method, fails when at least two are
    significantly better (:func:`cmkd.verdicts.rank_at_most`).  "At least as good as" (Fig. 4)
    and "without giving better students" (Table 7) take the equivalence margin :data:`MARGIN`.
    Fig. 4 compares each filter at its best threshold by mean (chosen on the same runs).
    """
    out = []

    def claim(artefact, text, evidence, verdict):
        out.append(claim_row(artefact, text, evidence, verdict))

    def columns(sub):
        for (dataset, direction), part in sub.groupby(["dataset", "direction"], sort=False):
            yield f"{dataset} {column(dataset, direction)}", part, _n_test(part, n_test)

    def diff(part, a, b, n, label, value="acc", **kw):
        ca, cb = (_correct(part, a), _correct(part, b)) if value == "acc" else (None, None)
        if ca is None or cb is None or ca.shape != cb.shape:
            ca = cb = None
        return verdict_difference(_seeds(part, a, value), _seeds(part, b, value), n_test=n,
                                  correct_a=ca, correct_b=cb, label=label, **kw)

    t3 = df[df.section == "table3"]
    present = set(t3.label)
    ours = [c for c in OURS if c in present]
    if len(t3) and ours:
        cols, evidence = [], []
        for name, part, n in columns(t3):
            means = part.groupby("label").acc.mean()
            others = [r.label for r in TABLE3 if r.label in set(part.label)
                      and r.label not in OURS and r.label not in NOT_RANKED]
            variants = []
            for o in (c for c in ours if c in set(part.label)):
                diffs = [diff(part, o, other, n, f"{name}, {o} - {other}") for other in others]
                variants.append(rank_at_most(diffs, 2, label=f"{name}, {o}"))
                rank = 1 + int((means[others] > means[o]).sum())
                worse = sum(d.verdict == HELD for d in diffs)
                better = sum(d.verdict == NOT_HELD for d in diffs)
                edge = variants[-1].deciding
                evidence.append(f"{name}, {o}: rank {rank} by mean, significantly above {worse} "
                                f"and below {better} of {len(others)} others "
                                f"({variants[-1].verdict}; at the edge, "
                                f"{edge.label.removeprefix(name + ', ')}: {edge.text})")
            cols.append(either(variants, label=name))
        v = combine(cols)
        claim("C2KD Table 3", "C2KD (either variant) is best or second in every column",
              "; ".join(evidence) + _ranked_note(present) + _improving(t3), v)
        if {OURS[0], C2KD_CONTROL.label} <= present:
            parts = [diff(part, OURS[0], C2KD_CONTROL.label, n, f"{name}: C2KD - control")
                     for name, part, n in columns(t3)]
            v = combine(parts)
            claim("control (Table 3)", "C2KD's gain needs its crossmodal term: Ours‡ beats the "
                  "same training with lambda3 = 0 (proxies and bidirectional updates only)",
                  v.evidence + _improving(t3[t3.label.isin([OURS[0], C2KD_CONTROL.label])]), v)
        if {OURS[0], C2KD_OFFICIAL.label} <= present:
            parts = [diff(part, OURS[0], C2KD_OFFICIAL.label, n,
                          f"{name}: paper's - official choices", alternative="equal",
                          margin=MARGIN) for name, part, n in columns(t3)]
            v = combine(parts)
            claim("documented choice (Table 3)", "the paper's reading of Eq. 6 (target removed, "
                  "mean over kept samples) and the official code's (target zeroed, batch mean) "
                  "train C2KD equally well",
                  f"{v.evidence} (margin {MARGIN:g} point)", v)
        if {"KD", "w/o KD"} <= present:
            parts = []
            for name, part, n in columns(t3):
                teacher = part[part.label != "w/o KD"].teacher_acc.mean()
                if teacher < part[part.label == "w/o KD"].acc.mean():
                    parts.append(diff(part, "KD", "w/o KD", n, f"{name}: KD - w/o KD",
                                      alternative="less"))
            if parts:
                v = combine(parts)
                claim("C2KD Table 1 / 3",
                      "KD from the weaker modality hurts the stronger one (KD < w/o KD where "
                      "the teacher is less accurate than the student trained alone)",
                      v.evidence, v)
    t5 = df[df.section == "table5"]
    if len(t5) and {"(b) BD", "BD+NT", "BD+OFS"} <= set(t5.label):
        parts = [diff(part, module, "(b) BD", n, f"{name}: {module} - BD")
                 for name, part, n in columns(t5) for module in ("BD+NT", "BD+OFS")]
        v = combine(parts)
        claim("C2KD Table 5", "OFS and NT each help over bidirectional distillation (BD)",
              v.evidence + _improving(t5), v)
        if {"BD+NT, target zeroed", "BD+OFS, batch mean"} <= set(t5.label):
            parts = [diff(part, module, "(b) BD", n, f"{name}: {module} - BD")
                     for name, part, n in columns(t5)
                     for module in ("BD+NT, target zeroed", "BD+OFS, batch mean")]
            v = combine(parts)
            claim("C2KD Table 5, official code's choices", "OFS and NT each help over BD, with "
                  "the target logit zeroed (NT) and the masked KL averaged over the batch (OFS)",
                  v.evidence + _improving(t5), v)
        control = "(d) λ3 = 0 (control)"
        if {"(d) C2KD", control} <= set(t5.label):
            parts = [diff(part, "(d) C2KD", control, n, f"{name}: C2KD - control")
                     for name, part, n in columns(t5)]
            v = combine(parts)
            claim("control (Table 5)", "full C2KD beats its own training without the "
                  "crossmodal term (lambda3 = 0)", v.evidence + _improving(t5), v)
    f4 = df[(df.section == "fig4") & (df.label != FIG4_NONE.label)]
    if len(f4) and "krc" in set(f4.label) and f4.label.nunique() > 1:
        parts = []
        for name, part, n in columns(f4):
            best = {}
            for filt, g in part.groupby("label", sort=False):
                omega = g.groupby("omega").acc.mean().idxmax()
                best[filt] = g[g.omega == omega]
            if "krc" not in best:
                continue
            for filt in (f for f in best if f != "krc"):
                both = pd.concat([best["krc"], best[filt]])
                parts.append(diff(both, "krc", filt, n, f"{name}: KRC - {filt}",
                                  alternative="not_less", margin=MARGIN))
        if parts:
            v = combine(parts)
            claim("C2KD Fig. 4", "the KRC filter is at least as good as the cosine, Pearson and "
                  "gradient-cosine filters (best threshold of each)",
                  f"{v.evidence} (margin {MARGIN:g} point)", v)
    f5 = df[df.section == "fig5"]
    if len(f5) and {"plain", "+BD+OFSD+proxy"} <= set(f5.label):
        parts = [diff(g, "+BD+OFSD+proxy", "plain", n, f"{base} {name}")
                 for name, part, n in columns(f5)
                 for base, g in part.groupby("base", sort=False)]
        v = combine(parts)
        claim("C2KD Fig. 5", "C2KD's modules improve DIST and NKD (DIST inside C2KD: our "
              "construction, the target masked)", v.evidence + _improving(f5), v)
        removed = FIG5["dist"][4].label
        dist = f5[f5.base == "DIST"]
        if removed in set(dist.label):
            parts = [diff(part, removed, "plain", n, f"DIST {name}")
                     for name, part, n in columns(dist)]
            v = combine(parts)
            claim("C2KD Fig. 5, DIST on C-1 columns", "C2KD's modules improve DIST when DIST "
                  "sees the C - 1 non-target columns side by side (class identity lost)",
                  v.evidence + _improving(dist), v)
    t6 = df[df.section == "table6"]
    selfkd = [c for c in ("DLB", "ZipfKD", "USKD") if c in set(t6.label)]
    if len(t6) and "Ours" in set(t6.label) and selfkd:
        parts = [diff(part, "Ours", m, n, f"{name}: C2KD - {m}")
                 for name, part, n in columns(t6) for m in selfkd]
        v = combine(parts)
        claim("C2KD Table 6", "C2KD beats the self-KD methods", v.evidence, v)
    t7 = df[df.section == "table7"]
    fusions = [lbl for lbl in TABLE7_LABELS.values() if lbl in set(t7.label)]
    if len(t7) and fusions and {"NKD", "Ours"} <= set(t7.label):
        parts = []
        for name, part, n in columns(t7):
            for f in fusions:
                parts.append(diff(part, f, "NKD", n, f"{name}: teacher {f} - unimodal",
                                  value="teacher_acc"))
                parts.append(diff(part, f, "Ours", n, f"{name}: student NKD{f} - C2KD",
                                  alternative="not_greater", margin=MARGIN))
        fused = t7[t7.label.isin(fusions)]
        v = combine(parts)
        claim("C2KD Table 7", "multimodal teachers are more accurate than the unimodal teacher "
              "without giving better students than C2KD",
              f"teacher accuracy fused {fused.teacher_acc.mean():.2f} vs unimodal "
              f"{t7[t7.label == 'NKD'].teacher_acc.mean():.2f}; student: best fused-teacher NKD "
              f"{fused.groupby('label').acc.mean().max():.2f} vs C2KD "
              f"{t7[t7.label == 'Ours'].acc.mean():.2f}; {v.evidence} (student margin "
              f"{MARGIN:g} point)", v)
    return claims_frame(out)


def _ranked_note(present) -> str:
    """How Table 3's ranking treats the extra rows (said in the claim's evidence)."""
    notes = []
    if SHAKE_RAW.label in present:
        notes.append("SHAKE ranked in its raw-logit form (the official layer-normalised form "
                     "does not train these models; it stays in the table, unranked)")
    if {C2KD_OFFICIAL.label, C2KD_CONTROL.label} & set(present):
        notes.append("the official-choices and lambda3 = 0 rows are C2KD's own variants, "
                     "not competitors")
    return f" ({'; '.join(notes)})" if notes else ""


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


def plot_curves(hist: pd.DataFrame):
    """Validation accuracy per epoch of every row a claim scores (mean over seeds; a curve ends
    where early stopping ended its last run), one panel per dataset and column: where a curve
    still rises at its end, the run had not converged."""
    cols = list(hist.groupby(["dataset", "direction"], sort=False).groups)
    ncols = min(len(cols), 2)
    nrows = -(-len(cols) // ncols)
    fig, axes = new_figure(nrows=nrows, ncols=ncols, width=5.2 * ncols, height=3.6 * nrows,
                           squeeze=False)
    for ax, (dataset, direction) in zip(axes.flat, cols):
        sub = hist[(hist.dataset == dataset) & (hist.direction == direction)]
        for label, g in sub.groupby("label", sort=False):
            m = g.groupby("epoch").val_acc.mean()
            control = "control" in label or label in NOT_RANKED
            ax.plot(m.index, m.to_numpy(), ":" if control else "-", linewidth=1.2,
                    color="#000000" if label in OURS else None, label=label)
        ax.set_title(f"{dataset}: {' -> '.join(modalities(dataset, direction))}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
    for ax in list(axes.flat)[len(cols):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="lower center",
               ncols=min(len(labels), 5), bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) // 5)))
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
    fig, axes = new_figure(ncols=len(cols), width=4.6 * len(cols), height=4.2, squeeze=False)
    stages = [r.label for r in FIG5["dist"]]
    for ax, (dataset, direction) in zip(axes[0], cols):
        sub = t[(t.dataset == dataset) & (t.direction == direction)]
        width = 0.38
        for i, (base, g) in enumerate(sub.groupby("base", sort=False)):
            g = g.set_index("stage").reindex(stages)
            x = np.arange(len(stages)) + (i - 0.5) * width
            ax.bar(x, g["mean"], width, yerr=g["std"].fillna(0), capsize=2, label=base)
        ax.set_xticks(np.arange(len(stages)), stages, fontsize=7, rotation=35, ha="right")
        lo = sub["mean"].min() - 3 * max(sub["std"].max(), 1.0)
        ax.set_ylim(max(lo, 0), None)
        ax.set_title(f"{dataset}: {' -> '.join(modalities(dataset, direction))}")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(fontsize=7, frameon=False)
    return fig
