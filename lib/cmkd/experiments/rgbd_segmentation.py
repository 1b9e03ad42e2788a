"""Notebook 10: RGB-D semantic segmentation, C2KD Table 4 (RGB <-> depth, DeepLab V3+ with
ResNet-18 / MobileNetV2 backbones, mIoU) and MFH Tables 1 (right), 3 and 6.

For every backbone pair (``rn18_rn18``, ``rn18_mnv2``, ``mnv2_rn18``: the RGB network's
backbone, then the depth network's), every direction (``d2rgb``: the depth network teaches the
RGB one; ``rgb2d``: the reverse) and every seed: the teacher trained alone (a teacher job), then
one student job per method (:mod:`cmkd.methods`: 'nokd', 'kd', 'shake', 'dist', 'nkd', 'cirkd',
'c2kd', 'c2kd_dist'), all through :mod:`cmkd.jobs` and the one loop :func:`cmkd.engine.fit`
(cached in ``.cache/jobs``).  The networks are :mod:`cmkd.models.deeplab`; every logit method
takes the labelled pixels of the batch as its samples (:mod:`cmkd.distill.dense`).

Data: ``rgbd_scenes`` (embedded, procedural, 5 classes; the default and smoke profiles) or NYU
Depth V2 (``nyudv2``: SA-Gate / DFormer layout, ``nyudv2_cen``: CEN layout; 795 training
images, 654 test, 40 classes; the paper profile).  The papers select on the test set; here the
validation split is carved from the training list (``val_fraction``) and the reported score is
the test mIoU at the best validation epoch.  Backbones are ImageNet-initialised only when the user
gives the weights files (``resnet18_weights``, ``mobilenet_v2_weights``: torchvision state dicts;
nothing is downloaded), from scratch otherwise (the report says which).

MFH (:func:`mfh_grid`, roles :data:`MFH_ROLES`): an RGB RN18 student per role, trained alone
(No-KD: Table 4's RGB no-KD job itself) or by MFH Eq. (1) KD (``mfh_rho`` CE + (1 - rho) KL,
T = 1) from the RGB teacher (UM-KD), an SA-Gate-like or CEN-like RGB-D teacher (CM-KD, Table 6;
Table 1 right is its SA-Gate column) or the depth teacher (Regular-KD) and the modality-general
RGB/D teacher (Table 3); the teachers are :mod:`cmkd.models.rgbd`'s, at the RN18 widths of
Table 4.  :func:`mfh_claims` scores MFH's claims (the multimodal teacher is better, its student
is not; the modality-general teacher's student beats the regular one at comparable teacher
mIoU).

Training (C2KD Sec. 4.2, following CIRKD): SGD, momentum 0.9, lr 0.02, 'poly' (power 0.9),
batch 16, 40k iterations (= ``epochs`` x iterations per epoch; 800 epochs of 50 iterations on
NYU's 795 images).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cmkd import data
from cmkd import methods as registry
from cmkd.data import specs
from cmkd.jobs import Job, ProcessExecutor, read_history, run_jobs
from cmkd.jobs.cluster import configured_executor
from cmkd.params import ParamError, spec
from cmkd.reporting import new_figure, paper_entry
from cmkd.runtime import DEVICES, device_available, select_device
from cmkd.verdicts import (
    claim_row,
    claims_frame,
    combine,
    exact,
    unless_unconverged,
    verdict_difference,
)

DATASETS = ("rgbd_scenes", "nyudv2", "nyudv2_cen")
PAIRS = ("rn18_rn18", "rn18_mnv2", "mnv2_rn18")
DIRECTIONS = ("d2rgb", "rgb2d")
SCHEDULES = ("poly", "constant")
METHODS = ("nokd", "kd", "shake", "dist", "nkd", "cirkd", "c2kd", "c2kd_dist")
for _name in METHODS:
    registry.resolve(_name)
LABELS = {"nokd": "w/o KD", "kd": "KD", "shake": "SHAKE", "dist": "DIST", "nkd": "NKD",
          "cirkd": "CIRKD", "c2kd": "C2KD (Ours)", "c2kd_dist": "C2KD + DIST (Ours+[17])"}
BACKBONES = {"rn18": "deeplabv3plus_resnet18", "mnv2": "deeplabv3plus_mobilenet_v2"}
#: modality -> (batch key, input channels)
MODALITIES = {"rgb": ("rgb", 3), "depth": ("depth", 1)}
#: MFH's RGB-D teachers (:mod:`cmkd.models.rgbd`): Table 6's multimodal ones and Table 3's
#: modality-general one
MFH_TEACHERS = {"sagate": "deeplabv3plus_sagate_resnet18", "cen": "deeplabv3plus_cen_resnet18",
                "general": "deeplabv3plus_general_resnet18"}
#: MFH roles: (role, teacher) with teacher 'rgb' / 'depth' (the RN18 DeepLab V3+ of that
#: modality), an MFH_TEACHERS key, or None (no KD); every student is the RGB RN18 network
MFH_ROLES = {"nokd": None, "umkd": "rgb", "cmkd_sagate": "sagate", "cmkd_cen": "cen",
             "regular_kd": "depth", "general_kd": "general"}
MFH_LABELS = {"nokd": "No-KD", "umkd": "UM-KD", "cmkd_sagate": "CM-KD (SA-Gate)",
              "cmkd_cen": "CM-KD (CEN)", "regular_kd": "Regular-KD",
              "general_kd": "Modality-general-KD"}
TEACHER_MODALITY = {"rgb": "RGB", "depth": "D", "sagate": "RGB + D", "cen": "RGB + D",
                    "general": "RGB/D"}


@dataclass(frozen=True)
class Config:
    seed: int = field(metadata=spec("base seed", low=0))
    n_seeds: int = field(metadata=spec("seeds per setting (C2KD: 3)", low=1, high=20))
    dataset: str = field(metadata=spec("rgbd_scenes (embedded), nyudv2 or nyudv2_cen",
                                       choices=DATASETS))
    nyudv2_root: str = field(metadata=spec("NYU Depth V2, SA-Gate / DFormer layout "
                                           "(docs/datasets.md)"))
    nyudv2_cen_root: str = field(metadata=spec("NYU Depth V2, CEN layout (docs/datasets.md)"))
    height: int = field(metadata=spec("input height (NYU: resized; rgbd_scenes: square)",
                                      low=16))
    width: int = field(metadata=spec("input width", low=16))
    n_train: int = field(metadata=spec("rgbd_scenes: training scenes", low=8))
    n_eval: int = field(metadata=spec("rgbd_scenes: validation and test scenes", low=4))
    val_fraction: float = field(metadata=spec("NYU: share of train.txt held out for "
                                              "validation", low=0, high=0.5, low_open=True))
    pairs: list[str] = field(metadata=spec("backbone pairs, RGB_depth (C2KD Table 4)",
                                           choices=PAIRS, min_items=1))
    directions: list[str] = field(metadata=spec("d2rgb (depth teaches RGB), rgb2d",
                                           choices=DIRECTIONS, min_items=1))
    methods: list[str] = field(metadata=spec("methods (C2KD Table 4 rows)", choices=METHODS,
                                        min_items=1))
    resnet_width: int = field(metadata=spec("ResNet-18 first-stage width (64: the real one)",
                                            low=2))
    mobilenet_width: float = field(metadata=spec("MobileNetV2 width multiplier (1.0: real)",
                                                 low=0, low_open=True))
    head_width: int = field(metadata=spec("ASPP / decoder channels (256: DeepLab V3+)", low=4))
    resnet18_weights: str = field(metadata=spec(
        "ImageNet ResNet-18 state dict (torchvision) for the encoders, '' for none"))
    mobilenet_v2_weights: str = field(metadata=spec(
        "ImageNet MobileNetV2 state dict (torchvision) for the encoders, '' for none"))
    teacher_epochs: int = field(metadata=spec("epochs of each teacher", low=1))
    epochs: int = field(metadata=spec("epochs of each student", low=1))
    batch_size: int = field(metadata=spec("mini-batch size (C2KD: 16)", low=2))
    lr: float = field(metadata=spec("SGD learning rate (C2KD: 0.02, poly 0.9)", low=0,
                                    low_open=True))
    schedule: str = field(metadata=spec("learning-rate schedule: poly (power 0.9 over the "
                                        "epoch cap; C2KD) or constant", choices=SCHEDULES))
    patience: int = field(metadata=spec("early stopping: epochs without a validation gain "
                                        "(0: none, every job trains to its epoch cap)", low=0))
    test_every: int = field(metadata=spec(
        "test split evaluated every this many epochs (and where validation improves, and at "
        "the end); 0: only at the last epoch and at the best-validation state, after training",
        low=0))
    method_hparams: dict = field(metadata=spec(
        "hyperparameters per method or preset over the registry's defaults",
        validate=registry.check_method_hparams))
    mfh_teachers: list[str] = field(metadata=spec(
        "MFH Tables 1 / 6 (sagate, cen: multimodal teachers) and Table 3 (general: the "
        "modality-general teacher); [] for none", choices=tuple(MFH_TEACHERS)))
    mfh_rho: float = field(metadata=spec("MFH Eq. (1) rho: weight of the CE, 1 - rho that of "
                                         "the KL (MFH B.1: 0.5)", low=0, high=1))
    processes: int = field(metadata=spec("jobs trained at once on a CPU (one torch thread "
                                         "each)", low=1, high=64))
    device: str = field(metadata=spec("compute device", choices=DEVICES,
                                      validate=device_available))

    def check(self) -> None:
        if "nokd" not in self.methods:
            raise ParamError("methods", "must include 'nokd' (the w/o-KD reference)")
        if self.dataset == "rgbd_scenes" and self.height != self.width:
            raise ParamError("width", f"rgbd_scenes renders square scenes: width must equal "
                                      f"height ({self.height}), got {self.width}")
        for name in ("resnet18_weights", "mobilenet_v2_weights"):
            path = getattr(self, name)
            if path and not specs.resolve_root(path).is_file():
                raise ParamError(name, f"weights file {path!r} not found (a torchvision "
                                       f"ImageNet state dict; nothing is downloaded)")


def preflight(config: Config) -> None:
    """A ParamError naming the root parameter and the expected layout when the real dataset is
    not where the params say (before any compute)."""
    if config.dataset == "rgbd_scenes":
        return
    root = getattr(config, f"{config.dataset}_root")
    mod = data.module(config.dataset)
    problems = mod.check(specs.resolve_root(root))
    if problems:
        raise ParamError(f"{config.dataset}_root", f"{root!r}: " + "; ".join(
            map(str, problems[:3])) + f"\nexpected layout (docs/datasets.md):\n{mod.LAYOUT}")


# ----------------------------------------------------------------------------- jobs
def _dataset(config: Config) -> tuple[dict, str | None]:
    if config.dataset == "rgbd_scenes":
        return ({"n": config.n_train, "n_eval": config.n_eval, "size": config.height,
                 "seed": config.seed}, None)
    root = str(specs.resolve_root(getattr(config, f"{config.dataset}_root")))
    return ({"size": [config.height, config.width], "val_fraction": config.val_fraction}, root)


def _model(config: Config, modality: str, backbone: str) -> tuple[str, dict]:
    key, channels = MODALITIES[modality]
    opts = {"classes": data.classes(config.dataset), "in_channels": channels,
            "head_width": config.head_width, "modality": key}
    if backbone == "rn18":
        opts["width"] = config.resnet_width
        weights = config.resnet18_weights
    else:
        opts["width_mult"] = config.mobilenet_width
        weights = config.mobilenet_v2_weights
    opts["weights"] = str(specs.resolve_root(weights)) if weights else None
    return BACKBONES[backbone], opts


def _backbones(pair: str, direction: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """((teacher modality, backbone), (student modality, backbone))."""
    rgb, depth = pair.split("_")
    if direction == "d2rgb":
        return ("depth", depth), ("rgb", rgb)
    return ("rgb", rgb), ("depth", depth)


def _job(config: Config, modality: str, backbone: str, seed: int, **kw) -> Job:
    model, opts = _model(config, modality, backbone)
    return _job_of(config, model, opts, (MODALITIES[modality][0],), seed, **kw)


def _job_of(config: Config, model: str, opts: dict, inputs: tuple, seed: int, **kw) -> Job:
    options, root = _dataset(config)
    optim = {"optimizer": "sgd", "lr": config.lr, "momentum": 0.9, "schedule": config.schedule}
    if config.schedule == "poly":
        optim["power"] = 0.9
    return Job(dataset=config.dataset, data_root=root, dataset_options=options, model=model,
               model_options=opts, inputs=inputs, metric="miou", optim=optim,
               batch_size=config.batch_size, seed=seed, device=config.device,
               patience=config.patience or None, test_every=config.test_every, **kw)


def seeds(config: Config) -> list[int]:
    return [config.seed + i for i in range(config.n_seeds)]


def teacher_job(config: Config, modality: str, backbone: str, seed: int) -> Job:
    """The network of ``modality`` with ``backbone`` trained alone (no KD)."""
    return _job(config, modality, backbone, seed, kind="teacher",
                epochs=config.teacher_epochs)


def student_job(config: Config, pair: str, direction: str, method: str, seed: int) -> Job:
    """The student of ``direction`` in backbone ``pair`` trained by ``method``."""
    (t_mod, t_bb), (s_mod, s_bb) = _backbones(pair, direction)
    name, hp = registry.hparams_for(method, config.method_hparams)
    teacher = (teacher_job(config, t_mod, t_bb, seed) if registry.get(name).needs_teacher
               else None)
    return _job(config, s_mod, s_bb, seed, method=name, hparams=hp, teacher=teacher,
                epochs=config.epochs)


def mfh_teacher_job(config: Config, teacher: str, seed: int) -> Job:
    """MFH's teacher ``teacher``: 'rgb' / 'depth' (the RN18 DeepLab V3+ of that modality) or an
    RGB-D network of :data:`MFH_TEACHERS`, trained alone."""
    if teacher in MODALITIES:
        return teacher_job(config, teacher, "rn18", seed)
    opts = {"classes": data.classes(config.dataset), "width": config.resnet_width,
            "head_width": config.head_width}
    return _job_of(config, MFH_TEACHERS[teacher], opts, ("rgb", "depth"), seed, kind="teacher",
                   epochs=config.teacher_epochs)


def mfh_roles(config: Config) -> list[str]:
    """The MFH roles the config asks for: no KD and UM-KD with any multimodal teacher, CM-KD per
    multimodal teacher, Regular-KD and Modality-general-KD with the general one."""
    chosen = set(config.mfh_teachers)
    if not chosen:
        return []
    out = ["nokd"]
    if chosen & {"sagate", "cen"}:
        out.append("umkd")
    out += [f"cmkd_{t}" for t in ("sagate", "cen") if t in chosen]
    if "general" in chosen:
        out += ["regular_kd", "general_kd"]
    return out


def mfh_student_job(config: Config, role: str, seed: int) -> Job:
    """The RGB RN18 student of MFH ``role`` (:data:`MFH_ROLES`): no KD, or MFH Eq. (1) KD
    (``rho`` CE + (1 - rho) KL, T = 1) from the role's teacher."""
    teacher = MFH_ROLES[role]
    if teacher is None:
        return student_job(config, "rn18_rn18", "d2rgb", "nokd", seed)
    hp = {"ce_weight": config.mfh_rho, "kd_weight": 1 - config.mfh_rho, "temperature": 1.0}
    name, hp = registry.hparams_for("kd", config.method_hparams, row=hp)
    return _job(config, "rgb", "rn18", seed, method=name, hparams=hp,
                teacher=mfh_teacher_job(config, teacher, seed), epochs=config.epochs)


def mfh_grid(config: Config) -> list[dict]:
    """Every (MFH role, seed) with its job."""
    return [{"role": r, "seed": s, "job": mfh_student_job(config, r, s)}
            for r in mfh_roles(config) for s in seeds(config)]


def grid(config: Config) -> list[dict]:
    """Every (pair, direction, method, seed) with its job."""
    return [{"pair": p, "direction": d, "method": m, "seed": s,
             "job": student_job(config, p, d, m, s)}
            for p in config.pairs for d in config.directions for m in config.methods
            for s in seeds(config)]


def _executor(config: Config, executor):
    """The caller's executor, else the environment's (``cmkd reproduce --executor``), else
    ``processes`` worker processes when > 1 (in this process otherwise)."""
    if executor is None:
        executor = configured_executor()
    if executor is None and config.processes > 1:
        executor = ProcessExecutor(config.processes)
    return executor


#: a run counts as converged when its last ``PLATEAU_EPOCHS`` epochs (with early stopping:
#: its last ``patience`` epochs) raised the best validation mIoU by less than
#: ``PLATEAU_GAIN`` points (0 for early stopping, which is what ended the run then)
PLATEAU_EPOCHS = 5
#: mIoU points: below the spread of one run over seeds on the default profile
PLATEAU_GAIN = 0.5


def plateau_window(config: Config) -> int:
    """Epochs over which a run's validation gain is measured (:func:`late_gain`)."""
    return config.patience or PLATEAU_EPOCHS


def late_gain(val: pd.Series, window: int) -> float:
    """mIoU points the last ``window`` epochs of the validation curve ``val`` (fractions) added
    to the best before them (0 when they added nothing; inf when the run is not longer than
    ``window`` epochs)."""
    val = pd.to_numeric(val, errors="coerce").to_numpy(dtype=float)
    if len(val) <= window:
        return float("inf")
    return max(0.0, 100 * (np.nanmax(val[-window:]) - np.nanmax(val[:-window])))


def _converged(config: Config, history: pd.DataFrame) -> tuple[float, bool]:
    """(late gain, converged): early stopping ended the run, or its last
    :func:`plateau_window` epochs gained less than :data:`PLATEAU_GAIN` points."""
    window = plateau_window(config)
    gain = late_gain(history.val_miou, window)
    stopped = config.patience > 0 and int(history.since_best.iloc[-1]) >= config.patience
    return gain, bool(stopped or gain < PLATEAU_GAIN)


def _training(config: Config, row, job: Job, cache) -> dict:
    """How a job and its teacher trained: best_epoch, epochs_run, since_best (epochs after the
    best one), late_gain and converged (:func:`_converged`), the teacher's epochs_run,
    late_gain and converged (NaN without a teacher; from its history in the cache), seconds."""
    gain, ok = _converged(config, read_history(job, cache))
    out = {"best_epoch": int(row.best_epoch), "epochs_run": int(row.epochs_run),
           "since_best": int(row.since_best), "late_gain": gain, "converged": ok,
           "teacher_epochs_run": np.nan, "teacher_late_gain": np.nan,
           "teacher_converged": np.nan, "seconds": float(row.seconds)}
    if job.teacher is not None:
        h = read_history(job.teacher, cache)
        gain, ok = _converged(config, h)
        out.update(teacher_epochs_run=len(h), teacher_late_gain=gain, teacher_converged=ok)
    return out


#: CPU seconds per epoch of a job relative to a no-KD student's (default profile, batch 32,
#: one thread): students by method, teachers by network; SHAKE, NKD and DIST from batch 8
EPOCH_COST = {"c2kd_dist": 3.1, "c2kd": 2.8, "shake": 1.8, "nkd": 1.75, "cirkd": 1.7,
              "kd": 1.5, "dist": 1.35, "nokd": 1.0,
              MFH_TEACHERS["sagate"]: 1.8, MFH_TEACHERS["cen"]: 1.6,
              MFH_TEACHERS["general"]: 1.1}


def job_cost(job: Job) -> float:
    """A job's expected CPU time in no-KD student epochs (:data:`EPOCH_COST` x epochs)."""
    name = job.model if job.kind == "teacher" else job.method
    return EPOCH_COST.get(name, 1.0) * job.epochs


def _train(config: Config, cache, executor, progress: bool) -> pd.DataFrame:
    """Train every job of :func:`grid` and :func:`mfh_grid` (cached jobs are not rerun) in one
    call, teachers then students, the most expensive first within each (:func:`job_cost`), so
    that the workers run out of work together; the result rows, keyed by ``key``."""
    jobs = [c["job"] for c in grid(config)] + [c["job"] for c in mfh_grid(config)]
    teachers = {j.teacher.key: j.teacher for j in jobs if j.teacher is not None}
    ordered = (sorted(teachers.values(), key=job_cost, reverse=True)
               + sorted(jobs, key=job_cost, reverse=True))
    return run_jobs(ordered, executor=_executor(config, executor), cache=cache,
                    progress=progress)


def run(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Train every job of :func:`grid` and of :func:`mfh_grid` (:func:`_train`; cached jobs
    are not rerun); the rows of :func:`grid`'s jobs (:func:`run_mfh` reads the others).

    Returns one row per (pair, direction, method, seed): miou (test mIoU at the best validation
    epoch, %), teacher_miou, teacher_end_miou (C2KD trains its teacher), and how the job and
    its teacher trained (:func:`_training`: best_epoch, epochs_run, since_best, late_gain,
    converged, teacher_epochs_run, teacher_late_gain, teacher_converged, seconds).
    ``attrs``: seconds, device, jobs, window (:func:`plateau_window`), patience.
    """
    preflight(config)
    start = time.perf_counter()
    cells = grid(config)
    by_key = {r.key: r for r in _train(config, cache, executor, progress).itertuples()}
    out = []
    for c in cells:
        r = by_key[c["job"].key]
        end = pd.to_numeric(pd.Series([r.teacher_end_test])).iloc[0]
        out.append({"pair": c["pair"], "direction": c["direction"], "method": c["method"],
                    "seed": c["seed"], "miou": 100 * float(r.test_at_best_val),
                    "teacher_miou": 100 * float(r.teacher_test),
                    "teacher_end_miou": 100 * float(end) if pd.notna(end) else np.nan,
                    **_training(config, r, c["job"], cache)})
    df = pd.DataFrame(out)
    df.attrs.update(window=plateau_window(config), patience=config.patience)
    df.attrs.update(seconds=time.perf_counter() - start, device=str(select_device(config.device)),
                    jobs=len({c["job"].key for c in cells}))
    return df


def run_mfh(config: Config, cache=None, executor=None, progress: bool = True) -> pd.DataFrame:
    """Train every job of :func:`mfh_grid` (with :func:`grid`'s, :func:`_train`: after
    :func:`run` all of them are cached and nothing is rerun).  One row per (role, seed): role,
    seed, teacher (None for no KD), miou (the student's test mIoU at its best validation
    epoch, %), teacher_miou (the teacher's, on its
    evaluation input: RGB + D for the multimodal teachers, D for the depth and the
    modality-general ones), and how the job and its teacher trained (:func:`_training`)."""
    preflight(config)
    cells = mfh_grid(config)
    if not cells:
        return pd.DataFrame(columns=["role", "seed", "teacher", "miou", "teacher_miou"])
    by_key = {r.key: r for r in _train(config, cache, executor, progress).itertuples()}
    out = []
    for c in cells:
        r = by_key[c["job"].key]
        out.append({"role": c["role"], "seed": c["seed"], "teacher": MFH_ROLES[c["role"]],
                    "miou": 100 * float(r.test_at_best_val),
                    "teacher_miou": 100 * float(r.teacher_test),
                    **_training(config, r, c["job"], cache)})
    df = pd.DataFrame(out)
    df.attrs.update(window=plateau_window(config), patience=config.patience)
    return df


def histories(config: Config, cache=None) -> pd.DataFrame:
    """The per-epoch history of every student job (pair, direction, method, seed columns)."""
    parts = []
    for c in grid(config):
        h = read_history(c["job"], cache)
        parts.append(h.assign(pair=c["pair"], direction=c["direction"], method=c["method"],
                              seed=c["seed"]))
    return pd.concat(parts, ignore_index=True)


def mfh_histories(config: Config, cache=None) -> pd.DataFrame:
    """The per-epoch history of every MFH student job (role, seed columns)."""
    parts = [read_history(c["job"], cache).assign(role=c["role"], seed=c["seed"])
             for c in mfh_grid(config)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ----------------------------------------------------------------------------- tables
def _column(pair: str, direction: str) -> str:
    rgb, depth = pair.split("_")
    return (f"RGB {rgb.upper()} (depth {depth.upper()} teacher)" if direction == "d2rgb"
            else f"depth {depth.upper()} (RGB {rgb.upper()} teacher)")


def table4(df: pd.DataFrame) -> pd.DataFrame:
    """C2KD Table 4 layout: methods (rows) x (pair, student) columns, mean mIoU (%) over seeds
    and its std."""
    g = df.groupby(["method", "pair", "direction"]).miou
    mean, std = g.mean(), g.std(ddof=0)
    order = [m for m in METHODS if m in set(df.method)]
    out = pd.DataFrame({"method": [LABELS[m] for m in order]})
    for (p, d) in dict.fromkeys(zip(df.pair, df.direction)):
        col = _column(p, d)
        out[f"{col} mean"] = [mean.get((m, p, d), np.nan) for m in order]
        out[f"{col} std"] = [std.get((m, p, d), np.nan) for m in order]
    return out


def _variant(pair: str) -> str:
    rgb, depth = pair.split("_")
    return f"rgb{rgb}_depth{depth}"


def paper_ids(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """{reference id: (our mean, our std)} for every cell of ours that C2KD Table 4 prints."""
    out = {}
    for (m, p, d), g in df.groupby(["method", "pair", "direction"]):
        entry = paper_entry(table=4, dataset="nyu", direction=d, method=m, variant=_variant(p))
        if entry is not None:
            out[entry["id"]] = (float(g.miou.mean()), float(g.miou.std(ddof=0)))
    return out


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the paper's Table 4 cell, per (method, pair, direction)."""
    rows = []
    for (m, p, d), g in df.groupby(["method", "pair", "direction"], sort=False):
        entry = paper_entry(table=4, dataset="nyu", direction=d, method=m, variant=_variant(p))
        rows.append({"method": LABELS[m], "column": _column(p, d),
                     "paper (NYU)": np.nan if entry is None else entry["value"],
                     "ours": g.miou.mean(), "ours std": g.miou.std(ddof=0),
                     "ours minus w/o KD": g.miou.mean() - df[
                         (df.method == "nokd") & (df.pair == p) & (df.direction == d)
                     ].miou.mean()})
    return pd.DataFrame(rows)


def _mean_std(df: pd.DataFrame, role: str, col: str) -> tuple[float, float]:
    x = df[df.role == role][col]
    return (float(x.mean()), float(x.std(ddof=0))) if len(x) else (np.nan, np.nan)


def _mfh_paper(table: int, variant: str | None, role: str, what: str) -> float:
    entry = paper_entry(file="mfh.yaml", table=table, dataset="nyu", role=role, measure=what,
                        variant=variant)
    return np.nan if entry is None else entry["value"]


def mfh_table6(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 6 (and Table 1 right) layout: No-KD, UM-KD, CM-KD rows per multimodal teacher
    (SA-Gate, CEN): teacher modality and mIoU, student mIoU (%, mean and std over seeds), the
    paper's (NYU Depth V2) beside."""
    rows = []
    for arch in ("sagate", "cen"):
        if f"cmkd_{arch}" not in set(df.role):
            continue
        for role in ("nokd", "umkd", f"cmkd_{arch}"):
            t, ts = _mean_std(df, role, "teacher_miou") if role != "nokd" else (np.nan, np.nan)
            m, ms = _mean_std(df, role, "miou")
            kind = role.split("_")[0]
            rows.append({"teacher net": "SA-Gate" if arch == "sagate" else "CEN",
                         "row": MFH_LABELS[role].split(" (")[0],
                         "teacher mod.": TEACHER_MODALITY.get(MFH_ROLES[role], "-"),
                         "teacher mIoU": t, "teacher std": ts,
                         "paper teacher": _mfh_paper(6, arch, kind, "teacher"),
                         "student mIoU (RGB)": m, "student std": ms,
                         "paper student": _mfh_paper(6, arch, kind, "student")})
    return pd.DataFrame(rows)


def mfh_table3(df: pd.DataFrame) -> pd.DataFrame:
    """MFH Table 3 layout: No-KD, Regular-KD (depth teacher), Modality-general-KD (RGB/D
    teacher, scored on depth) -> RGB student, the paper's beside."""
    rows = []
    if "general_kd" not in set(df.role):
        return pd.DataFrame(rows)
    for role in ("nokd", "regular_kd", "general_kd"):
        t, ts = _mean_std(df, role, "teacher_miou") if role != "nokd" else (np.nan, np.nan)
        m, ms = _mean_std(df, role, "miou")
        rows.append({"row": MFH_LABELS[role],
                     "teacher mod.": TEACHER_MODALITY.get(MFH_ROLES[role], "-"),
                     "teacher mIoU": t, "teacher std": ts,
                     "paper teacher": _mfh_paper(3, None, role, "teacher"),
                     "student mIoU (RGB)": m, "student std": ms,
                     "paper student": _mfh_paper(3, None, role, "student")})
    return pd.DataFrame(rows)


def mfh_paper_ids(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """{MFH reference id: (our mean, our std)} for every MFH cell we have."""
    out = {}
    for table, variants in ((6, ("sagate", "cen")), (3, (None,))):
        for variant in variants:
            for role in set(df.role):
                kind = role.split("_")[0] if table == 6 else role
                if table == 6 and role not in ("nokd", "umkd", f"cmkd_{variant}"):
                    continue
                for what, col in (("teacher", "teacher_miou"), ("student", "miou")):
                    entry = paper_entry(file="mfh.yaml", table=table, dataset="nyu",
                                        role=kind, measure=what, variant=variant)
                    if entry is not None and not (role == "nokd" and what == "teacher"):
                        out[entry["id"]] = _mean_std(df, role, col)
    return out


# ----------------------------------------------------------------------------- claims
def _unconverged(rows: pd.DataFrame, name: str, col: str = "converged") -> list[str]:
    """'<name>, seed s' for each row whose run had not converged (``col`` False; rows without
    the column, e.g. planted results, count as converged)."""
    if col not in rows:
        return []
    return [f"{name}, seed {s}" for s, ok in zip(rows.seed, rows[col]) if ok is False
            or (not pd.isna(ok) and not bool(ok))]


def _mark(names: list[str]) -> str:
    """The evidence's note on runs short of their plateau (empty when there are none)."""
    return (f"; NOT CONVERGED (validation still gained {PLATEAU_GAIN:g}+ mIoU points in "
            f"their last epochs; undecided whatever the interval): {', '.join(names)}"
            if names else "")


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """C2KD Sec. 4.2's claims, per backbone pair and direction combined: C2KD beats KD in both
    directions; replacing its KL by DIST adds more; C2KD beats CIRKD when depth teaches RGB.
    Differences are paired over seeds (every method of a seed shares the teacher and the data
    order); each seed's test set is the same, so the spread over seeds is the noise measured
    (with one seed every verdict is undecided).  A part resting on a run that had not converged
    (``converged`` False) is undecided whatever its interval, and the evidence names the run."""
    out = []
    present = set(df.method)

    def rows(m, p, d):
        return df[(df.method == m) & (df.pair == p) & (df.direction == d)]

    def diff(a, b, p, d):
        x, y = rows(a, p, d).set_index("seed").miou, rows(b, p, d).set_index("seed").miou
        short = (_unconverged(rows(a, p, d), f"{LABELS[a]} {p} {d}")
                 + _unconverged(rows(b, p, d), f"{LABELS[b]} {p} {d}"))
        v = verdict_difference(x, y, alternative="greater", label=f"{p} {d}")
        return unless_unconverged(v, short), short

    cells = list(dict.fromkeys(zip(df.pair, df.direction)))
    for a, b, claim, where in (
            ("c2kd", "kd", "C2KD beats KD in both directions", cells),
            ("c2kd_dist", "c2kd", "C2KD with DIST beats C2KD with KL", cells),
            ("c2kd", "cirkd", "C2KD beats CIRKD when depth teaches RGB",
             [c for c in cells if c[1] == "d2rgb"]),
            ("c2kd", "nokd", "C2KD beats no KD in both directions", cells)):
        if a not in present or b not in present or not where:
            continue
        parts = [diff(a, b, p, d) for p, d in where]
        v = combine([x for x, _ in parts], label=claim)
        evidence = ("; ".join(f"{x.label}: {x.text}" for x, _ in parts) + " mIoU points"
                    + _mark([n for _, short in parts for n in short]))
        out.append(claim_row("C2KD Table 4", claim, evidence, v))
    return claims_frame(out)


#: "not better" claims: a gain counts from this many mIoU points (notebook 04's margin)
NOT_BETTER_MARGIN = 1.0
#: "comparable teacher mIoU" (MFH Table 3): teachers within this many mIoU points
COMPARABLE_MARGIN = 3.0


def mfh_claims(df: pd.DataFrame) -> pd.DataFrame:
    """MFH's segmentation claims by the verdict rule, paired over seeds: per multimodal teacher
    (Table 6), the teacher beats the RGB (UM-KD) teacher yet its student does not beat the UM-KD
    student (a gain counts from :data:`NOT_BETTER_MARGIN`); Table 3, the modality-general
    teacher's student beats the regular depth teacher's student, at comparable teacher mIoU
    (within :data:`COMPARABLE_MARGIN`)."""
    out = []

    def col(role, c):
        return df[df.role == role].set_index("seed")[c]

    def short(roles, c="converged"):
        return [n for r in roles for n in _unconverged(df[df.role == r], MFH_LABELS[r]
                                                       + (" teacher" if c != "converged"
                                                          else " student"), c)]

    def scored(v, roles, c="converged"):
        names = short(roles, c)
        return unless_unconverged(v, names), _mark(names)

    present = set(df.role)
    for arch, label in (("sagate", "SA-Gate"), ("cen", "CEN")):
        role = f"cmkd_{arch}"
        if role not in present or "umkd" not in present:
            continue
        art = "MFH Table 6" + (" / Table 1 (right)" if arch == "sagate" else "")
        v, note = scored(verdict_difference(col(role, "teacher_miou"),
                                            col("umkd", "teacher_miou"), alternative="greater"),
                         (role, "umkd"), "teacher_converged")
        out.append(claim_row(art, f"the multimodal ({label}-like, RGB + D) teacher beats the "
                             "RGB teacher", f"RGB + D - RGB teacher {v.text} mIoU points" + note,
                             v))
        v, note = scored(verdict_difference(col(role, "miou"), col("umkd", "miou"),
                                            alternative="not_greater",
                                            margin=NOT_BETTER_MARGIN), (role, "umkd"))
        out.append(claim_row(art, f"yet its student is not better than the UM-KD student "
                             f"({label}-like teacher)",
                             f"CM-KD - UM-KD student {v.text} mIoU points (a gain counts from "
                             f"{NOT_BETTER_MARGIN:g})" + note, v))
    if {"general_kd", "regular_kd"} <= present:
        v, note = scored(verdict_difference(col("general_kd", "teacher_miou"),
                                            col("regular_kd", "teacher_miou"),
                                            alternative="equal", margin=COMPARABLE_MARGIN),
                         ("general_kd", "regular_kd"), "teacher_converged")
        out.append(claim_row("MFH Table 3", "the modality-general (RGB/D) and the regular "
                             "depth teacher have comparable mIoU on depth",
                             f"general - regular teacher {v.text} mIoU points (comparable "
                             f"within {COMPARABLE_MARGIN:g})" + note, v))
        v, note = scored(verdict_difference(col("general_kd", "miou"), col("regular_kd", "miou"),
                                            alternative="greater"), ("general_kd", "regular_kd"))
        out.append(claim_row("MFH Table 3", "the modality-general teacher's RGB student beats "
                             "the regular depth teacher's",
                             f"Modality-general-KD - Regular-KD student {v.text} mIoU points"
                             + note, v))
    return claims_frame(out)


def _get(row, name: str) -> float:
    return getattr(row, name, np.nan)


def jobs_trained(runs: pd.DataFrame, mfh: pd.DataFrame) -> pd.DataFrame:
    """Every distinct job of the notebook once (students of Table 4 and MFH, and their
    teachers): table, name, seed, epochs_run, late_gain, converged; teachers named by their
    network (one row per teacher job, however many students share it)."""
    rows = []
    for r in runs.itertuples():
        name = f"{LABELS[r.method]} ({_column(r.pair, r.direction)})"
        rows.append(("C2KD Table 4", name, r.seed, r.epochs_run, _get(r, "late_gain"),
                     r.converged))
        if not pd.isna(r.teacher_converged):
            t_mod, t_bb = _backbones(r.pair, r.direction)[0]
            rows.append(("teacher", f"{t_mod} {t_bb.upper()}", r.seed, r.teacher_epochs_run,
                         _get(r, "teacher_late_gain"), r.teacher_converged))
    for r in mfh.itertuples():
        if r.role != "nokd":
            rows.append(("MFH", MFH_LABELS[r.role], r.seed, r.epochs_run,
                         _get(r, "late_gain"), r.converged))
        if not pd.isna(r.teacher_converged):
            name = (f"{r.teacher} RN18" if r.teacher in MODALITIES
                    else f"{TEACHER_MODALITY[r.teacher]} ({r.teacher})")
            rows.append(("teacher", name, r.seed, r.teacher_epochs_run,
                         _get(r, "teacher_late_gain"), r.teacher_converged))
    out = pd.DataFrame(rows, columns=["table", "job", "seed", "epochs_run", "late_gain",
                                      "converged"])
    return out.drop_duplicates(["table", "job", "seed"], ignore_index=True)


def convergence_table(runs: pd.DataFrame, mfh: pd.DataFrame) -> pd.DataFrame:
    """Per (table, job) over seeds: epochs trained (mean, max), the largest validation gain of
    the last :func:`plateau_window` epochs (mIoU points) and how many runs converged
    (:func:`_converged`)."""
    jobs = jobs_trained(runs, mfh)
    g = jobs.groupby(["table", "job"], sort=False)
    return g.agg(runs=("seed", "size"), epochs_mean=("epochs_run", "mean"),
                 epochs_max=("epochs_run", "max"), late_gain_max=("late_gain", "max"),
                 converged=("converged", lambda c: int(c.astype(bool).sum()))).reset_index()


def convergence_claim(runs: pd.DataFrame, mfh: pd.DataFrame) -> dict:
    """Every job (students and teachers) trained to its plateau (:func:`_converged`; an exact
    count, no interval)."""
    window = runs.attrs.get("window", PLATEAU_EPOCHS)
    jobs = jobs_trained(runs, mfh)
    short = jobs[~jobs.converged.astype(bool)]
    names = [f"{j}, seed {s}" + ("" if pd.isna(g) else f" (+{g:.2f})")
             for j, s, g in zip(short.job, short.seed, short.late_gain)]
    rule = (f"early stopping (patience {runs.attrs['patience']}) or a gain below "
            if runs.attrs.get("patience") else "a gain below ")
    evidence = (f"{len(jobs) - len(short)} of {len(jobs)} jobs converged"
                + (f"; not converged (gain of the last {window} epochs): {', '.join(names)}"
                   if names else ""))
    return claim_row("setting", f"every job trained to a plateau ({rule}{PLATEAU_GAIN:g} mIoU "
                     f"points of validation over its last {window} epochs)", evidence,
                     exact(not names, note=f"{len(short)} of {len(jobs)} short"))


def all_claims(runs: pd.DataFrame, mfh: pd.DataFrame) -> pd.DataFrame:
    """C2KD Table 4's claims (:func:`claims`), then MFH's (:func:`mfh_claims`), then whether
    every job trained to its plateau (:func:`convergence_claim`, when the rows say)."""
    parts = [claims(runs)] + ([mfh_claims(mfh)] if len(mfh) else [])
    if "converged" in runs:
        parts.append(claims_frame([convergence_claim(runs, mfh)]))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- figures
COLORS = {"nokd": "#7f7f7f", "kd": "#1f77b4", "shake": "#8c564b", "dist": "#2ca02c",
          "nkd": "#d62728", "cirkd": "#9467bd", "c2kd": "#000000", "c2kd_dist": "#ff7f0e"}


def plot_curves(hist: pd.DataFrame):
    """Validation mIoU per epoch of every student (mean over seeds), one panel per
    (pair, direction): the learning curves that say whether training reached a plateau."""
    cells = list(dict.fromkeys(zip(hist.pair, hist.direction)))
    fig, axes = new_figure(ncols=len(cells), width=3.4 * len(cells), height=3.2, squeeze=False)
    col = "val_miou" if hist.get("val_miou") is not None and hist.val_miou.notna().any() \
        else "test_miou"
    for ax, (p, d) in zip(axes[0], cells):
        h = hist[(hist.pair == p) & (hist.direction == d)]
        for m, g in h.groupby("method", sort=False):
            s = g.groupby("epoch")[col].mean() * 100
            ax.plot(s.index + 1, s.to_numpy(), color=COLORS[m], label=LABELS[m], lw=1.2)
        ax.set_title(_column(p, d), fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(f"{col.replace('_', ' ')} (%)")
    axes[0][-1].legend(fontsize=6, frameon=False)
    fig.suptitle("learning curves of the students", fontsize=10)
    return fig


MFH_COLORS = {"nokd": "#7f7f7f", "umkd": "#1f77b4", "cmkd_sagate": "#d62728",
              "cmkd_cen": "#ff7f0e", "regular_kd": "#2ca02c", "general_kd": "#9467bd"}


def plot_mfh_curves(hist: pd.DataFrame):
    """Validation mIoU per epoch of every MFH RGB student (mean over seeds)."""
    fig, axes = new_figure(ncols=1, width=4.2, height=3.2, squeeze=False)
    ax = axes[0][0]
    for role, g in hist.groupby("role", sort=False):
        s = g.groupby("epoch").val_miou.mean() * 100
        ax.plot(s.index + 1, s.to_numpy(), color=MFH_COLORS[role], label=MFH_LABELS[role],
                lw=1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val miou (%)")
    ax.legend(fontsize=6, frameon=False)
    fig.suptitle("MFH Tables 1 / 3 / 6: learning curves of the RGB students", fontsize=10)
    return fig
