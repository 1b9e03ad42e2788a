"""Notebook 05: MFH's feature ranking on learned features (Section 5.4, Appendix B.4; Tables 4,
8, 9; Fig. 4, 5, 6).

MFH ranks the channels of a trained teacher's feature layer by their modality-general decisive
information (Algorithm 1) and derives teachers by nullifying r% of them during distillation:
modality-general (the least salient dropped), modality-specific (the most salient dropped) and
random; regular KD keeps every channel.  MFH's hypothesis predicts the students' order
modality-specific < random < regular <= modality-general at every r (Tables 4 and 8), a sweet
spot as r grows (Fig. 5) and a plateau as the number M of permutations grows (Fig. 6).

The pipeline, per run (seed):

1. jobs (:mod:`cmkd.jobs`): the teacher (teacher modality, trained alone), a network of the
   student modality trained alone (the other modality's features for Algorithm 1, the no-KD
   baseline and, for Fig. 4, the visual teacher), and the no-KD student;
2. Algorithm 1 (:func:`cmkd.mfh.rank_features`) on the training split: ``X^a`` the teacher's
   feature ``layer``, ``X^b`` the other network's ``'pooled'`` features; two MLPs trained with
   Eq. (28), then M permutations per channel (one training, nested draws for the values of M);
3. student jobs: ``kd_nullified`` (:mod:`cmkd.methods`) from each derived teacher, its kept
   channels a hyperparameter (equal kept sets are one cached job), and from the regular
   teacher with every channel kept (the loss of ``kd`` exactly, tested; it reads the frozen
   teacher's stored features, computed once per training item, instead of running the teacher
   on every batch); the loss is MFH Eq. (1), ``rho * CE + (1 - rho) * KL``;
4. the derived teachers' own test scores (the trained teacher with the channels zeroed).

Data: ``avmnist_mini`` (default: audio teacher -> image student, MFH B.1's small CNNs), RAVDESS
in MFH's layout and VGGSound (paper profile, ``ravdess_root`` / ``vggsound_root``).
docs/official_code_audit.md M4 (last-batch scores) is not copied; M5 (the VGGSound script zeroes
channels 256-511 whatever the salience) is the kind ``official_half`` (option
``official_half_mask``: the upper half of the channels nullified), shown beside the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from cmkd.jobs import Job, load_model, run_jobs
from cmkd.jobs.builders import Builder, Training
from cmkd.params import ParamError, spec
from cmkd.reporting import new_figure
from cmkd.runtime import DEVICES, device_available, seed_for, torch_threads
from cmkd.verdicts import (
    claim_row,
    claims_frame,
    combine,
    verdict_difference,
    verdict_slope,
)

DATASETS = ("avmnist_mini", "ravdess", "vggsound")
DIRECTIONS = ("a2v", "v2a")
#: kinds of derived teacher, in MFH Table 4's column order (official_half: audit M5)
KINDS = ("specific", "random", "general", "official_half")
LABELS = {"nokd": "no KD", "regular": "regular", "specific": "modality-specific",
          "random": "random", "general": "modality-general",
          "official_half": "upper half zeroed (official VGGSound script)"}
#: "regular <= general": a loss within this many points counts as no loss
NOT_WORSE_MARGIN = 1.0
#: a validation curve has reached its plateau when it rises by less than this many points per
#: epoch over its last PLATEAU_EPOCHS epochs
PLATEAU_SLOPE = 0.5
PLATEAU_EPOCHS = 5


def _model_opts(value: dict) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"must be a mapping of model option names to values, got {value!r}")
    return value


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed of every run", low=0))
    n_runs: int = field(metadata=spec("runs (seeds) of every job", low=1, high=100))
    dataset: str = field(metadata=spec("'avmnist_mini' (embedded), 'ravdess' (MFH's layout, "
                                       "ravdess_root) or 'vggsound' (vggsound_root)",
                                       choices=DATASETS))
    ravdess_root: str = field(metadata=spec("folder of RAVDESS as MFH preprocessed it"))
    vggsound_root: str = field(metadata=spec("folder of VGGSound (C2KD's layout)"))
    speakers: str = field(metadata=spec("avmnist_mini: speakers 'shared' across splits or "
                                        "'disjoint'", choices=("shared", "disjoint")))
    per_class: int = field(metadata=spec("avmnist_mini: the first pairs of each class of each "
                                         "split kept (0: all)", low=0, high=10_000))
    image_size: int = field(metadata=spec("ravdess / vggsound: image side after resizing (0: "
                                          "the loader's default)", low=0, high=1024))
    direction: str = field(metadata=spec("'a2v': audio teacher, visual student; 'v2a': the "
                                         "reverse", choices=DIRECTIONS))
    teacher_model: str = field(metadata=spec("registry network of the teacher ('': the "
                                             "dataset's)"))
    teacher_options: dict = field(metadata=spec("its options", validate=_model_opts))
    student_model: str = field(metadata=spec("registry network of the student and of the "
                                             "student-modality network ('': the dataset's)"))
    student_options: dict = field(metadata=spec("its options", validate=_model_opts))
    layer: str = field(metadata=spec("the teacher's feature layer ranked and nullified"))
    ratios: list[float] = field(metadata=spec("nullifying ratios r of Tables 4 / 8", low=0,
                                              high=1, high_open=True, min_items=1))
    sweep_ratios: list[float] = field(metadata=spec("ratios r of Fig. 5 (modality-general; "
                                                    "empty: no sweep)", low=0, high=1,
                                                    high_open=True))
    permutations: int = field(metadata=spec("M of Algorithm 1 for the tables and Fig. 5",
                                            low=1, high=100_000))
    sweep_permutations: list[int] = field(metadata=spec("values of M of Fig. 6 (empty: no "
                                                        "sweep)", low=1, high=100_000))
    sweep_ratio: float = field(metadata=spec("r of Fig. 6", low=0, high=1, high_open=True))
    rank_epochs: int = field(metadata=spec("epochs of Algorithm 1's Eq. (28) training", low=1,
                                           high=100_000))
    rank_hidden: int = field(metadata=spec("hidden width of Algorithm 1's two MLPs", low=1,
                                           high=100_000))
    official_half_mask: bool = field(metadata=spec("also the official VGGSound script's "
                                                   "teacher: the upper half of the channels "
                                                   "zeroed whatever the salience (audit M5)"))
    rhos: list[float] = field(metadata=spec("rho of MFH Eq. (1): weight of the cross entropy, "
                                            "1 - rho that of the KL", low=0, high=1,
                                            min_items=1))
    temperature: float = field(metadata=spec("KD softening temperature", low=0, high=100,
                                             low_open=True))
    metric: str = field(metadata=spec("score: 'accuracy' or 'map' (VGGSound, MFH Table 9)",
                                      choices=("accuracy", "map")))
    teacher_epochs: int = field(metadata=spec("most epochs of every network trained alone",
                                              low=1, high=10_000))
    epochs: int = field(metadata=spec("most epochs of every student", low=1, high=10_000))
    patience: int = field(metadata=spec("early stopping: epochs without validation gain (0: "
                                        "none)", low=0, high=10_000))
    batch_size: int = field(metadata=spec("mini-batch size", low=2, high=100_000))
    optimizer: str = field(metadata=spec("'adamw' or 'sgd' (MFH RAVDESS: SGD lr 1e-2, "
                                         "momentum 0.9; VGGSound: AdamW lr 1e-3, wd 1e-5)",
                                         choices=("adamw", "sgd")))
    lr: float = field(metadata=spec("learning rate (constant)", low=0, high=10, low_open=True))
    momentum: float = field(metadata=spec("SGD momentum", low=0, high=1))
    weight_decay: float = field(metadata=spec("weight decay", low=0, high=1))
    gradcam_images: int = field(metadata=spec("test images of Fig. 4 (0: no Fig. 4)", low=0,
                                              high=64))
    gradcam_layer: str = field(metadata=spec("the visual network's feature map explained"))
    gradcam_ratio: float = field(metadata=spec("r of Fig. 4's modality-general visual teacher",
                                               low=0, high=1, high_open=True))
    processes: int = field(metadata=spec("jobs trained at once in worker processes (1: one "
                                         "after the other in this process)", low=1, high=64))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                      validate=device_available))

    def check(self) -> None:
        if self.sweep_permutations and self.sweep_ratio == 0:
            raise ParamError("sweep_ratio", "Fig. 6 needs r > 0 (at r = 0 no channel is "
                                            "nullified, so M changes nothing)")

    def preflight(self) -> None:
        """A real dataset must be found in its layout before any compute."""
        if self.dataset != "avmnist_mini":
            from cmkd.data import specs

            specs.preflight([self.dataset], self.params())

    def params(self) -> dict:
        out = {"ravdess_root": self.ravdess_root, "vggsound_root": self.vggsound_root}
        if self.dataset == "avmnist_mini":
            out.update(speakers=self.speakers, per_class=self.per_class)
        elif self.image_size:  # RAVDESS's loader takes (H, W)
            out["image_size"] = (self.image_size if self.dataset == "vggsound"
                                 else [self.image_size, self.image_size])
        return out


# ----------------------------------------------------------------------------- the jobs
def builder(config: Config) -> Builder:
    optim = {"optimizer": config.optimizer, "lr": config.lr,
             "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        optim["momentum"] = config.momentum
    training = Training(optim=optim, epochs=config.epochs, teacher_epochs=config.teacher_epochs,
                        batch_size=config.batch_size, device=config.device,
                        patience=config.patience or None)
    return Builder(config.params(), training)


def _modalities(config: Config) -> tuple[str, str]:
    from cmkd.data import specs

    return specs.modalities(config.dataset, config.direction)


def _models(config: Config) -> tuple:
    t = (config.teacher_model, config.teacher_options) if config.teacher_model else None
    s = (config.student_model, config.student_options) if config.student_model else None
    return t, s


def run_seed(config: Config, run: int) -> int:
    return seed_for(config.seed, run) % 2**31


def base_jobs(config: Config) -> dict[tuple[str, int], Job]:
    """(role, run) -> job: 'teacher', 'other' (the student modality's network trained alone:
    Algorithm 1's X^b, Fig. 4's visual teacher) and 'nokd' (the student without KD)."""
    b, d = builder(config), config.dataset
    t_mod, s_mod = _modalities(config)
    t_model, s_model = _models(config)
    out = {}
    for r in range(config.n_runs):
        seed = run_seed(config, r)
        out["teacher", r] = _with_metric(b.teacher(d, t_mod, seed, model=t_model), config)
        out["other", r] = _with_metric(b.teacher(d, s_mod, seed, model=s_model), config)
        out["nokd", r] = _with_metric(b.student(d, config.direction, seed, "nokd",
                                                model=s_model), config)
    return out


def _with_metric(job: Job, config: Config) -> Job:
    if job.metric == config.metric:
        return job
    teacher = None if job.teacher is None else _with_metric(job.teacher, config)
    return job.replace(metric=config.metric, teacher=teacher)


def keep_sets(salience: np.ndarray, kind: str, ratio: float, rng_seed: int) -> np.ndarray:
    """Kept channels of a derived teacher (:func:`cmkd.mfh.select_channels`; 'official_half':
    the lower half of the channels, whatever the salience, and ratio ignored)."""
    from cmkd.mfh import select_channels

    if kind == "official_half":
        return np.arange(len(salience) // 2)
    return select_channels(salience, kind, drop_ratio=ratio,
                           rng=np.random.default_rng(rng_seed))


def derived_keep(config: Config, salience: np.ndarray, kind: str, ratio: float,
                 run: int) -> np.ndarray:
    """Kept channels of run ``run``'s derived teacher of ``kind`` at ``ratio`` (the random
    draw seeded by the run and the ratio, as every grid of :func:`run` draws it)."""
    return keep_sets(salience, kind, ratio,
                     seed_for(run_seed(config, run), int(round(ratio * 1e6))))


def student_job(config: Config, teacher: Job, run: int, rho: float, keep=None) -> Job:
    """Run ``run``'s student distilled from ``teacher`` with MFH Eq. (1) at ``rho``: ``kd``
    (``keep`` None: the regular teacher) or ``kd_nullified`` keeping the channels ``keep`` of
    ``config.layer``."""
    _, s_model = _models(config)
    row = {"temperature": config.temperature, "ce_weight": rho, "kd_weight": 1 - rho}
    method = "kd"
    if keep is not None:
        row.update(layer=config.layer, keep=[int(k) for k in keep])
        method = "kd_nullified"
    job = builder(config).student(config.dataset, config.direction, run_seed(config, run),
                                  method, row=row, teacher=teacher, model=s_model)
    return _with_metric(job, config)


def derived_teacher(config: Config, kind: str, ratio: float, run: int = 0,
                    rho: float | None = None, cache=None, executor=None,
                    progress: bool = False) -> dict:
    """One derived teacher of notebook 05, for other notebooks: run ``run``'s base jobs
    (:func:`base_jobs`, trained or read from the cache), Algorithm 1 on the teacher's
    ``config.layer`` (:func:`rank`, as :func:`run` does it) and the kept channels of ``kind``
    ('general', 'specific', 'random', 'official_half') at ``ratio`` with M =
    ``config.permutations`` (:func:`derived_teachers`: several at once, one Algorithm 1).

    Returns ``{'teacher': Job, 'other': Job, 'nokd': Job, 'keep': (k,) int array,
    'salience': (C,) array, 'student': Job}``: the trained teacher's job (the derived teacher
    is it with only ``keep`` of ``config.layer``; :func:`teacher_score` scores it), the student
    modality's network trained alone, the no-KD student, and the ``kd_nullified`` student job
    at ``rho`` (default ``config.rhos[0]``), not trained.  The same arguments give the same
    jobs and channels as :func:`run`'s table.
    """
    out = derived_teachers(config, [(kind, ratio)], run, rho, cache, executor, progress)
    return {**{k: v for k, v in out.items() if k != "derived"}, **out["derived"][kind, ratio]}


def derived_teachers(config: Config, cells: list[tuple[str, float]], run: int = 0,
                     rho: float | None = None, cache=None, executor=None,
                     progress: bool = False) -> dict:
    """Several derived teachers of run ``run`` (notebook 09's settings): :func:`derived_teacher`
    for each (kind, ratio) of ``cells`` with one Algorithm 1; kind 'regular' is the regular
    teacher (every channel kept, ratio ignored: :func:`run`'s regular KD, a ``kd_nullified``
    job keeping every channel).

    Returns ``{'teacher', 'other', 'nokd': Job, 'salience': (C,) array, 'derived': {(kind,
    ratio): {'keep': (k,) int array, 'student': Job}}}``.
    """
    for kind, ratio in cells:
        if kind not in KINDS and kind != "regular":
            raise ValueError(f"kind must be 'regular' or one of {KINDS}, got {kind!r}")
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must lie in [0, 1), got {ratio!r}")
    if not 0 <= run < config.n_runs:
        raise ValueError(f"run must lie in [0, {config.n_runs}), got {run!r}")
    config.preflight()
    base = base_jobs(config)
    jobs = {role: base[role, run] for role in ("teacher", "other", "nokd")}
    with torch_threads(1):
        run_jobs(list(jobs.values()), executor=executor, cache=cache, progress=progress)
        salience = rank(config, jobs["teacher"], jobs["other"], cache,
                        seed=run_seed(config, run))["salience"][config.permutations]
    rho = config.rhos[0] if rho is None else rho
    derived = {}
    for kind, ratio in cells:
        keep = (np.arange(len(salience)) if kind == "regular"
                else derived_keep(config, salience, kind, ratio, run))
        derived[kind, ratio] = {"keep": keep, "student": student_job(config, jobs["teacher"],
                                                                      run, rho, keep)}
    return {**jobs, "salience": salience, "derived": derived}


def nullified_settings(config09, cache=None) -> list:
    """Notebook 09's settings ``feature_nullified`` (:func:`cmkd.experiments.
    diagnostic_validation.register_settings`): per run of notebook 05's parameters
    ``config09.feature_ranking`` (seed :func:`run_seed`), the regular teacher and each derived
    teacher of the table (modality-specific, random, modality-general) at each of ``ratios``
    (and, with ``official_half_mask``, the official script's half-zeroed one), at
    ``rhos[0]``.  The teacher the diagnostic sees is the derived one (a
    :class:`~cmkd.experiments.diagnostic_validation.Masked` reference: the trained teacher
    with only the kept channels of ``layer``); the no-KD baseline is 05's no-KD student; the
    one method measured is 05's student of that teacher (``kd``: Eq. (1) with 05's rho and
    temperature).  Every job is notebook 05's own (same keys: read from ``cache`` when 05 ran
    first, the base jobs trained here otherwise); Algorithm 1 reruns (deterministic, seeded as
    05 seeds it) to find the kept channels."""
    from cmkd import params
    from cmkd.experiments import diagnostic_validation as dv

    config = params.from_mapping(Config, config09.feature_ranking,
                                 "diagnostic_validation's feature_ranking")
    t_mod, s_mod = _modalities(config)
    kinds = [k for k in KINDS if k != "official_half"]
    cells = [("regular", 0.0)] + [(k, r) for r in config.ratios for k in kinds]
    if config.official_half_mask:  # one teacher whatever the ratio
        cells.append(("official_half", config.ratios[0]))
    per_run = [derived_teachers(config, cells, r, cache=cache) for r in range(config.n_runs)]
    seeds = [run_seed(config, r) for r in range(config.n_runs)]
    out = []
    for kind, ratio in cells:
        teacher, keeps = {}, set()
        for seed, d in zip(seeds, per_run):
            keep = d["derived"][kind, ratio]["keep"]
            keeps.add(len(keep))
            teacher[seed] = (d["teacher"] if kind == "regular" else
                             dv.Masked(d["teacher"], config.layer, tuple(int(k) for k in keep)))
        name = f"{config.dataset} {t_mod}>{s_mod} {LABELS[kind]}"
        if kind not in ("regular", "official_half"):
            name += f" r={100 * ratio:g}%"
        out.append(dv.Setting(
            name, f"{config.dataset} nullified", True, teacher,
            {seed: d["nokd"] for seed, d in zip(seeds, per_run)},
            {"kd": {seed: d["derived"][kind, ratio]["student"]
                    for seed, d in zip(seeds, per_run)}},
            {"dataset": config.dataset, "kind": kind, "ratio": ratio,
             "kept": min(keeps)}))
    return out


def _cells(config: Config) -> list[tuple[str, str, float, int, float]]:
    """(grid, kind, ratio, M, rho) of every derived teacher's student."""
    kinds = [k for k in KINDS if k != "official_half" or config.official_half_mask]
    out = [("table", k, r, config.permutations, rho) for rho in config.rhos
           for r in config.ratios for k in kinds]
    rho0 = config.rhos[0]
    out += [("fig5", "general", r, config.permutations, rho0) for r in config.sweep_ratios]
    out += [("fig6", "general", config.sweep_ratio, m, rho0) for m in config.sweep_permutations]
    return out


def _all_ms(config: Config) -> list[int]:
    return sorted({config.permutations, *config.sweep_permutations})


# ----------------------------------------------------------------------------- Algorithm 1
def _loader(job: Job, split: str, batch_size: int):
    from cmkd import data
    from cmkd.engine import make_loader

    ds = data.load(job.dataset, job.data_root, split, **job.dataset_options)
    return make_loader(ds, batch_size)


def rank(config: Config, teacher: Job, other: Job, cache=None, seed: int = 0) -> dict:
    """Algorithm 1 on the training split: ``{'salience': {M: (C,) array}, 'history':
    (epochs, 3) array}`` for the teacher's ``layer``, X^b the other network's 'pooled'."""
    from cmkd.mfh import layer_features, rank_features

    t_model, o_model = load_model(teacher, cache), load_model(other, cache)
    xa, y = layer_features(t_model, _loader(teacher, "train", config.batch_size),
                           teacher.inputs, config.layer)
    xb, y2 = layer_features(o_model, _loader(other, "train", config.batch_size),
                            other.inputs, "pooled")
    if not torch.equal(y, y2):
        raise RuntimeError("the two modalities' training splits are not paired")
    out = rank_features(xa, xb, y, permutations=_all_ms(config), epochs=config.rank_epochs,
                        hidden=config.rank_hidden, seed=seed)
    return {"salience": {m: p.numpy() for m, p in out["salience"].items()},
            "history": out["history"].numpy()}


class _Nullified(nn.Module):
    def __init__(self, model: nn.Module, layer: str, keep):
        super().__init__()
        self.model, self.layer, self.keep = model, layer, keep
        self.classes = model.classes

    def forward(self, *x):
        from cmkd.mfh import nullified_logits

        return nullified_logits(self.model, x, self.layer, self.keep)


def teacher_score(config: Config, teacher: Job, keep, cache=None) -> float:
    """Test score (%) of the trained teacher with only ``keep`` of its ``layer`` (None: all)."""
    from cmkd.engine import evaluate

    model = load_model(teacher, cache)
    if keep is not None:
        model = _Nullified(model, config.layer, list(map(int, keep))).eval()
    with torch.no_grad():
        out = evaluate(model, _loader(teacher, "test", config.batch_size), teacher.inputs,
                       (config.metric,))
    return 100 * float(out[config.metric])


# ----------------------------------------------------------------------------- run
def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Every job (cached ones are not rerun), Algorithm 1 and the derived teachers' scores.

    Returns
    -------
    DataFrame, one row per (grid, kind, ratio, M, rho, run): grid ('table', 'fig5', 'fig6' or
    'base'), kind ('nokd', 'regular', 'specific', 'random', 'general', 'official_half'),
    ratio, M, rho (NaN where not applicable), run, acc (student test score at its best
    validation epoch, %), teacher_acc (the derived teacher's test score, %), kept (channels
    kept), test_correct, key.  ``attrs``: seconds, jobs, n_test, salience ({run: {M: (C,)}}),
    rank_history ({run: (epochs, 3)}), channels.
    """
    start = time.perf_counter()
    config.preflight()
    if executor is None:  # cmkd reproduce --executor (CMKD_EXECUTOR), else config.processes
        from cmkd.jobs import ProcessExecutor
        from cmkd.jobs.cluster import configured_executor

        executor = configured_executor()
        if executor is None and config.processes > 1:
            executor = ProcessExecutor(config.processes)
    base = base_jobs(config)
    with torch_threads(1):
        base_rows = run_jobs(list(base.values()), executor=executor, cache=cache,
                             progress=progress)
    score = dict(zip(base, base_rows.test_at_best_val.astype(float)))
    correct = dict(zip(base, base_rows.test_correct))
    keys = dict(zip(base, base_rows.key))
    saliences, histories, students, meta = {}, {}, {}, {}
    with torch_threads(1):
        for r in range(config.n_runs):
            out = rank(config, base["teacher", r], base["other", r], cache,
                       seed=run_seed(config, r))
            saliences[r], histories[r] = out["salience"], out["history"]
    channels = len(next(iter(saliences[0].values())))
    for r in range(config.n_runs):
        teacher = base["teacher", r]
        for rho in config.rhos:  # regular KD: kd_nullified keeping every channel (= kd)
            students["table", "regular", 0.0, config.permutations, rho, r] = student_job(
                config, teacher, r, rho, np.arange(channels))
            meta["table", "regular", 0.0, config.permutations, rho, r] = None
        for grid, kind, ratio, m, rho in _cells(config):
            keep = derived_keep(config, saliences[r][m], kind, ratio, r)
            students[grid, kind, ratio, m, rho, r] = student_job(config, teacher, r, rho, keep)
            meta[grid, kind, ratio, m, rho, r] = keep
    with torch_threads(1):
        rows = run_jobs(list(students.values()), executor=executor, cache=cache,
                        progress=progress)
    t_scores: dict = {}
    out_rows = []
    for role, r in base:
        if role == "other":
            continue
        out_rows.append({"grid": "base", "kind": "nokd" if role == "nokd" else "teacher",
                         "ratio": np.nan, "M": np.nan, "rho": np.nan, "run": r,
                         "acc": 100 * score[role, r], "teacher_acc": np.nan,
                         "kept": np.nan, "test_correct": correct[role, r],
                         "key": keys[role, r]})
    for key, res in zip(students, rows.itertuples()):
        grid, kind, ratio, m, rho, r = key
        keep = meta[key]
        tkey = (r, None if keep is None else tuple(int(k) for k in keep))
        if tkey not in t_scores:
            t_scores[tkey] = teacher_score(config, base["teacher", r], keep, cache)
        out_rows.append({"grid": grid, "kind": kind, "ratio": ratio, "M": m, "rho": rho,
                         "run": r, "acc": 100 * float(res.test_at_best_val),
                         "teacher_acc": t_scores[tkey],
                         "kept": channels if keep is None else len(keep),
                         "test_correct": res.test_correct, "key": res.key})
    df = pd.DataFrame(out_rows)
    df.attrs.update(seconds=time.perf_counter() - start,
                    jobs=len(set(df.key)) + config.n_runs, n_test=len(str(df.test_correct.iloc[0])),
                    salience=saliences, rank_history=histories, channels=channels)
    return df


def histories(config: Config, df: pd.DataFrame, cache=None) -> pd.DataFrame:
    """Per-epoch validation score (%) of the teacher, the no-KD student and the table's
    students (read from the cache by their keys): kind, ratio, rho, run, epoch, val."""
    from cmkd.jobs import cache as jc

    cache = jc.cache_dir(cache)
    frames = []
    for row in df[df.grid.isin(["base", "table"])].itertuples():
        h = pd.read_csv(jc.folder(cache, row.key) / jc.HISTORY)
        col = f"val_{config.metric}"
        frames.append(pd.DataFrame({"kind": row.kind, "ratio": row.ratio, "rho": row.rho,
                                    "run": row.run, "epoch": h.epoch + 1,
                                    "val": 100 * h[col]}))
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- summaries
def _scores(df: pd.DataFrame, grid: str, kind: str, ratio=None, rho=None, m=None,
            col: str = "acc") -> pd.Series:
    d = df[(df.grid == grid) & (df.kind == kind)]
    if ratio is not None and kind != "regular":
        d = d[np.isclose(d.ratio, ratio)]
    if rho is not None:
        d = d[np.isclose(d.rho, rho)]
    if m is not None:
        d = d[d.M == m]
    return d.set_index("run")[col]


def _correct(df: pd.DataFrame, grid: str, kind: str, ratio=None, rho=None, m=None) -> np.ndarray:
    s = _scores(df, grid, kind, ratio, rho, m, col="test_correct").sort_index()
    return np.array([[c == "1" for c in v] for v in s], dtype=float)


def table8(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 8's layout (Table 9 with several rho): per rho and r, the student score of each
    teacher (mean and std over runs) and the derived teachers' own scores."""
    rows = []
    kinds = [k for k in KINDS if k in set(df.kind)]
    for rho in sorted(df[df.grid == "table"].rho.unique()):
        reg = _scores(df, "table", "regular", rho=rho)
        for ratio in sorted(df[(df.grid == "table") & (df.kind != "regular")].ratio.unique()):
            row = {"rho": rho, "r (%)": 100 * ratio, "regular mean": reg.mean(),
                   "regular std": reg.std(ddof=0)}
            for k in kinds:
                s = _scores(df, "table", k, ratio, rho)
                row[f"{k} mean"], row[f"{k} std"] = s.mean(), s.std(ddof=0)
            for k in kinds:
                row[f"{k} teacher"] = _scores(df, "table", k, ratio, rho,
                                              col="teacher_acc").mean()
            rows.append(row)
    return pd.DataFrame(rows)


def baselines(df: pd.DataFrame) -> pd.DataFrame:
    """The teacher and the no-KD student (mean, std over runs)."""
    rows = []
    for kind, label in (("teacher", "teacher (trained alone)"), ("nokd", "student without KD")):
        s = _scores(df, "base", kind)
        rows.append({"network": label, "mean": s.mean(), "std": s.std(ddof=0), "runs": len(s)})
    return pd.DataFrame(rows)


def sweep(df: pd.DataFrame, grid: str) -> pd.DataFrame:
    """Fig. 5 ('fig5': by r) or Fig. 6 ('fig6': by M): student and teacher score, mean and std
    over runs; Fig. 5 starts from regular KD at r = 0."""
    d = df[df.grid == grid]
    by = "ratio" if grid == "fig5" else "M"
    out = d.groupby(by).agg(student=("acc", "mean"), student_std=("acc", lambda x: x.std(ddof=0)),
                            teacher=("teacher_acc", "mean")).reset_index()
    if grid == "fig5" and len(d) and not np.isclose(out.ratio, 0).any():
        rho = d.rho.iloc[0]
        reg = df[(df.grid == "table") & (df.kind == "regular") & np.isclose(df.rho, rho)]
        if len(reg):
            out = pd.concat([pd.DataFrame({"ratio": [0.0], "student": [reg.acc.mean()],
                                           "student_std": [reg.acc.std(ddof=0)],
                                           "teacher": [reg.teacher_acc.mean()]}), out],
                            ignore_index=True)
    return out


# ----------------------------------------------------------------------------- claims
def claims(df: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """MFH Sec. 5.4's claims by the verdict rule (paired by run, the shared test set's
    sampling error from the per-item correctness)."""
    n_test = df.attrs.get("n_test") or len(str(df.test_correct.iloc[0]))
    out = []
    t = df[df.grid == "table"]
    ratios = sorted(t[t.kind != "regular"].ratio.unique())
    for rho in sorted(t.rho.unique()):
        def diff(a, ra, b, rb, alternative="greater", margin=None, label="", rho=rho):
            return verdict_difference(_scores(df, "table", a, ra, rho),
                                      _scores(df, "table", b, rb, rho), alternative=alternative,
                                      margin=margin, n_test=n_test,
                                      correct_a=_correct(df, "table", a, ra, rho),
                                      correct_b=_correct(df, "table", b, rb, rho), label=label)
        for a, b, text in (("random", "specific", "modality-specific < random"),
                           ("regular", "random", "random < regular")):
            parts = [diff(a, r, b, r, label=f"r {100 * r:g}%: {a} - {b}") for r in ratios]
            c = combine(parts)
            out.append(claim_row("MFH Table 4 / 8", f"{text} at every r (rho {rho:g})",
                                 "; ".join(p.part for p in parts) + " points", c))
        parts = [diff("general", r, "regular", r, "not_less", NOT_WORSE_MARGIN,
                      f"r {100 * r:g}%: general - regular") for r in ratios]
        c = combine(parts)
        out.append(claim_row("MFH Table 4 / 8", f"regular <= modality-general at every r "
                             f"(rho {rho:g})", "; ".join(p.part for p in parts)
                             + f" points (a loss counts from {NOT_WORSE_MARGIN:g})", c))
    f5 = df[df.grid == "fig5"]
    if len(f5):
        out.append(_sweet_spot(df, n_test))
    f6 = df[df.grid == "fig6"]
    if f6.M.nunique() >= 3:
        out.append(_plateau_m(df, n_test))
    if curves is not None and len(curves):
        out.append(plateau_claim(curves))
    return claims_frame(out)


def _sweet_spot(df: pd.DataFrame, n_test: int) -> dict:
    """Fig. 5: the best r inside the sweep beats both r = 0 (regular KD) and the largest r."""
    f5 = df[df.grid == "fig5"]
    rho = f5.rho.iloc[0]
    means = f5.groupby("ratio").acc.mean()
    best = float(means.idxmax())
    top = float(means.index.max())
    reg = _scores(df, "table", "regular", rho=rho)
    reg_c = _correct(df, "table", "regular", rho=rho)
    b, bc = _scores(df, "fig5", "general", best), _correct(df, "fig5", "general", best)
    e, ec = _scores(df, "fig5", "general", top), _correct(df, "fig5", "general", top)
    parts = [verdict_difference(b, reg, n_test=n_test, correct_a=bc, correct_b=reg_c,
                                label=f"best r {100 * best:g}% - regular (r 0)"),
             verdict_difference(b, e, n_test=n_test, correct_a=bc, correct_b=ec,
                                label=f"best r {100 * best:g}% - r {100 * top:g}%")]
    c = combine(parts)
    return claim_row("MFH Fig. 5", "a sweet spot in r: the student rises from r = 0, then falls "
                     "at the largest r", "; ".join(p.part for p in parts) + " points (the best r "
                     "is chosen on the test scores, so this is optimistic)", c)


def _plateau_m(df: pd.DataFrame, n_test: int) -> dict:
    """Fig. 6: no change between the two largest M (within the margin), and the largest M no
    worse than the smallest."""
    f6 = df[df.grid == "fig6"]
    ms = sorted(f6.M.unique())
    lo, hi2, hi = ms[0], ms[-2], ms[-1]

    def d(a, b, alt, margin, label):
        return verdict_difference(_scores(df, "fig6", "general", m=a),
                                  _scores(df, "fig6", "general", m=b), alternative=alt,
                                  margin=margin, n_test=n_test,
                                  correct_a=_correct(df, "fig6", "general", m=a),
                                  correct_b=_correct(df, "fig6", "general", m=b), label=label)

    parts = [d(hi, hi2, "equal", NOT_WORSE_MARGIN, f"M {hi:g} - M {hi2:g}"),
             d(hi, lo, "not_less", NOT_WORSE_MARGIN, f"M {hi:g} - M {lo:g}")]
    c = combine(parts)
    return claim_row("MFH Fig. 6", "a plateau in M: the largest two M give the same student, "
                     "no worse than the smallest M", "; ".join(p.part for p in parts)
                     + f" points (equal within {NOT_WORSE_MARGIN:g})", c)


def plateau_claim(curves: pd.DataFrame) -> dict:
    """Every table job's validation curve is flat over its last :data:`PLATEAU_EPOCHS` epochs."""
    parts = []
    for (kind, ratio, rho), g in curves.groupby(["kind", "ratio", "rho"], dropna=False):
        last = g[g.epoch > g.groupby("run").epoch.transform("max") - PLATEAU_EPOCHS]
        label = LABELS.get(kind, kind) + ("" if pd.isna(ratio) else f" r {100 * ratio:g}%") + (
            "" if pd.isna(rho) else f" rho {rho:g}")
        parts.append(verdict_slope(last.epoch, last.val, alternative="not_greater",
                                   margin=PLATEAU_SLOPE, label=label, unit="points per epoch"))
    c = combine(parts)
    worst = max(parts, key=lambda p: p.estimate if np.isfinite(p.estimate) else -np.inf)
    return claim_row("setting", "every job trained to a plateau (validation score flat over its "
                     f"last {PLATEAU_EPOCHS} epochs)", f"largest slope: {worst.label} "
                     f"{worst.text} points per epoch; a rise counts from {PLATEAU_SLOPE:g}", c)


KIND_IDS = ("regular", "specific", "random", "general")


def paper_ids(config: Config) -> dict[tuple[str, float, float], str]:
    """(kind, ratio, rho) -> reference id in cmkd/reference/mfh.yaml for ``config``'s setting:
    Table 8 (RAVDESS, audio -> images, rho 0; avmnist_mini stands beside it for orientation
    only), Table 9 (VGGSound ResNet-18, audio -> video, rho 0 and 0.5) or Table 4's ResNet-50
    rows (VGGSound, both directions, rho 0).  VGGSound's r is not published; the official
    script zeroes half the channels, so ours at r = 50% stand beside it."""
    out = {}
    if config.dataset in ("avmnist_mini", "ravdess"):
        for r in (0.25, 0.5, 0.75):
            for k in KIND_IDS:
                out[k, r, 0.0] = f"mfh.table8.r_{int(100 * r)}.{k}_acc"
    elif config.teacher_model == "resnet50":
        for k in KIND_IDS:
            out[k, 0.5, 0.0] = f"mfh.table4.vggsound_rn50_{config.direction}.{k}_map"
    else:
        for rho in (0.0, 0.5):
            for k in KIND_IDS:
                out[k, 0.5, rho] = f"mfh.table9.rho_{rho:g}.{k}_map"
    return out


def measured(df: pd.DataFrame, config: Config) -> dict[str, tuple[float, float]]:
    """Reference id -> (mean, std over runs) of ours (:meth:`cmkd.reporting.Report.compare`)."""
    out = {}
    t = df[df.grid == "table"]
    for (kind, ratio, rho), key in paper_ids(config).items():
        if not (np.isclose(t.rho, rho).any() and np.isclose(t.ratio, ratio).any()):
            continue
        s = _scores(df, "table", kind, ratio, rho)
        if len(s):
            out[key] = (float(s.mean()), float(s.std(ddof=0)))
    return out


# ----------------------------------------------------------------------------- figures
COLORS = {"regular": "#7f7f7f", "specific": "#d62728", "random": "#ff7f0e",
          "general": "#2ca02c", "official_half": "#9467bd", "nokd": "#000000"}


def plot_table8(df: pd.DataFrame):
    """Student score against r per kind of teacher (mean +-1 std over runs), one panel per
    rho; the no-KD student and regular KD as horizontal bands."""
    t = df[df.grid == "table"]
    rhos = sorted(t.rho.unique())
    fig, axes = new_figure(ncols=len(rhos), width=4.6 * len(rhos), height=3.6, sharey=True)
    axes = np.atleast_1d(axes)
    nokd = _scores(df, "base", "nokd")
    for ax, rho in zip(axes, rhos):
        reg = _scores(df, "table", "regular", rho=rho)
        for s, kind in ((nokd, "nokd"), (reg, "regular")):
            ax.axhline(s.mean(), color=COLORS[kind], ls=":" if kind == "nokd" else "--",
                       label=LABELS[kind])
        for kind in [k for k in KINDS if k in set(t.kind)]:
            g = t[(t.kind == kind) & np.isclose(t.rho, rho)].groupby("ratio").acc
            m, s = g.mean(), g.std(ddof=0).fillna(0)
            ax.errorbar(100 * m.index, m.values, yerr=s.values, fmt="o-", capsize=3,
                        color=COLORS[kind], label=LABELS[kind])
        ax.set_xlabel("channels nullified r (%)")
        ax.set_title(f"rho = {rho:g}")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("student test score (%)")
    return fig


def plot_sweeps(df: pd.DataFrame):
    """Fig. 5 (student and derived teacher against r) and Fig. 6 (student against M)."""
    fig, (ax, ax2) = new_figure(ncols=2, width=10, height=3.6)
    f5, f6 = sweep(df, "fig5"), sweep(df, "fig6")
    if len(f5):
        ax.errorbar(100 * f5.ratio, f5.student, yerr=f5.student_std.fillna(0), fmt="o-",
                    capsize=3, color=COLORS["general"], label="student (modality-general KD)")
        ax.plot(100 * f5.ratio, f5.teacher, "s--", color="0.4", label="teacher itself")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("channels nullified r (%)")
    ax.set_ylabel("test score (%)")
    ax.set_title("Fig. 5: nullifying ratio")
    if len(f6):
        ax2.errorbar(f6.M, f6.student, yerr=f6.student_std.fillna(0), fmt="o-", capsize=3,
                     color=COLORS["general"])
        ax2.set_xscale("log")
    ax2.set_xlabel("permutations M")
    ax2.set_title("Fig. 6: permutations")
    return fig


def plot_salience(df: pd.DataFrame):
    """Each run's salience (largest M), channels sorted, and Eq. (28)'s training curve."""
    fig, (ax, ax2) = new_figure(ncols=2, width=10, height=3.4)
    for r, by_m in df.attrs["salience"].items():
        m = max(by_m)
        ax.plot(np.sort(by_m[m])[::-1], label=f"run {r}, M {m}")
    ax.set_xlabel("channel (sorted)")
    ax.set_ylabel("salience p (max = 1)")
    ax.legend(fontsize=7, frameon=False)
    for r, h in df.attrs["rank_history"].items():
        for j, name in enumerate(("distance", "CE f1", "CE f2")):
            ax2.plot(np.arange(1, len(h) + 1), h[:, j], label=f"{name}" if r == 0 else None,
                     color=f"C{j}")
    ax2.set_xlabel("epoch")
    ax2.set_title("Algorithm 1, Eq. (28) training")
    ax2.legend(fontsize=7, frameon=False)
    return fig


def plot_curves(curves: pd.DataFrame):
    """Validation score per epoch of the teacher, the no-KD student and the table's students
    (mean over runs)."""
    fig, ax = new_figure(width=6.5, height=3.8)
    for (kind, ratio, rho), g in curves.groupby(["kind", "ratio", "rho"], dropna=False):
        s = g.groupby("epoch").val.mean()
        label = LABELS.get(kind, kind) + ("" if pd.isna(ratio) else f" {100 * ratio:g}%") + (
            "" if pd.isna(rho) or curves.rho.nunique() < 2 else f" rho {rho:g}")
        ax.plot(s.index, s.values, color=COLORS.get(kind, "#1f77b4"), alpha=0.8,
                ls="--" if kind == "teacher" else "-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score (%)")
    ax.legend(fontsize=6, frameon=False, ncol=2)
    return fig


# ----------------------------------------------------------------------------- Fig. 4
def gradcam(config: Config, cache=None, run: int = 0) -> dict:
    """Fig. 4: Grad-CAM of a regular and a modality-general *visual* network on the same test
    images.  The visual network is the student modality's network trained alone ('other';
    with direction 'a2v'), ranked by Algorithm 1 at its 'pooled' features against the audio
    teacher's ``layer``; the modality-general one nullifies ``gradcam_ratio`` of them.

    Returns {'images': (k, H, W), 'regular': (k, H, W), 'general': (k, H, W), 'labels': (k,)}.
    """
    from cmkd.mfh import grad_cam, layer_features, rank_features

    base = base_jobs(config)
    visual, audio = base["other", run], base["teacher", run]
    if config.direction != "a2v":
        visual, audio = audio, visual
    v_model, a_model = load_model(visual, cache), load_model(audio, cache)
    xa, y = layer_features(v_model, _loader(visual, "train", config.batch_size), visual.inputs,
                           "pooled")
    xb, _ = layer_features(a_model, _loader(audio, "train", config.batch_size), audio.inputs,
                           "pooled")
    with torch_threads(1):
        p = rank_features(xa, xb, y, permutations=config.permutations,
                          epochs=config.rank_epochs, hidden=config.rank_hidden,
                          seed=run_seed(config, run))["salience"][config.permutations]
    keep = keep_sets(p.numpy(), "general", config.gradcam_ratio, 0)
    # one test image per class first, then the next ones
    batch = next(iter(_loader(visual, "test", 512)))
    labels = batch["label"]
    order = np.argsort([(int((labels[:i] == labels[i]).sum()), int(labels[i]))
                        for i in range(len(labels))], axis=0)[:, 0]
    idx = torch.as_tensor(order[:config.gradcam_images])
    x = batch[visual.inputs[0]][idx]
    if x.dim() == 5:  # video (B, C, T, H, W): the middle frame is shown
        shown = x[:, :, x.shape[2] // 2]
    else:
        shown = x
    target = labels[idx]
    reg = grad_cam(v_model, x, config.gradcam_layer, target=target)
    gen = grad_cam(v_model, x, config.gradcam_layer, target=target, keep=list(map(int, keep)))
    return {"images": shown.mean(1).numpy(), "regular": reg.numpy(), "general": gen.numpy(),
            "labels": target.numpy()}


def plot_gradcam(cams: dict):
    k = len(cams["labels"])
    fig, axes = new_figure(nrows=3, ncols=k, width=1.3 * k + 1, height=4.2)
    axes = np.asarray(axes).reshape(3, k)
    for j in range(k):
        for i, name in enumerate(("images", "regular", "general")):
            ax = axes[i, j]
            ax.imshow(cams["images"][j], cmap="gray")
            if name != "images":
                ax.imshow(cams[name][j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"class {int(cams['labels'][j])}", fontsize=7)
    for i, name in enumerate(("input", "regular", "modality-general")):
        axes[i, 0].set_ylabel(name, fontsize=8)
    return fig
