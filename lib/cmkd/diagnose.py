"""`cmkd diagnose`: will crossmodal KD from modality A help a student on modality B?

A pre-flight check on a pair of modalities - a pairs file (:mod:`cmkd.data.pairs`) or any
dataset of :mod:`cmkd.data` with a pairing spec (:mod:`cmkd.data.specs`) - that trains **only
unimodal models** (one per modality and seed, the spec's model: MLPs on vectors, the registry's
CNNs on images and spectrograms; jobs of :mod:`cmkd.jobs`, so they are cached and shared with
the notebooks that build the same teacher jobs) and measures, on the held-out split (test; val
when the test split is empty):

- **imbalance** (C2KD Section 3.1, Fig. 1a): each modality's top-1 accuracy and mean predicted
  probability of the target class;
- **soft-label alignment** (C2KD Eq. 3, Fig. 1b): per item, Kendall's tau-a between the two
  modalities' logits (the KRC of C2KD's filter), its distribution, and the share of items the
  on-the-fly selection (``KRC > omega``) would keep;
- **feature similarity** (C2KD Fig. 6): linear CKA between the two models' penultimate
  features (``pooled``);
- **modality-general decisive share** (MFH Algorithm 1): for the teacher's penultimate
  channels, Algorithm 1's permutation salience (how far permuting channel c across items moves
  the teacher's soft labels from the student modality's; MSE, normalised by the maximum: the
  *spectrum*).  MFH's gamma is the share of the decisive features that are modality-general;
  its estimate weighs each channel's *decisiveness* ``d_c`` (the same permutations, against
  the teacher's own soft labels: how much the teacher's prediction depends on it) by its
  *generality* ``r_c``: the adjusted R^2 of the channel's within-class variation (class means
  removed) regressed linearly on the student modality's within-class logits, per item.  A
  modality-general feature varies with the same latent in both modalities, so the student's
  model reflects it item by item (r near 1); a modality-specific one is independent of the other
  modality given the class (r near 0).  Within-class, because every decisive feature covaries
  with the label and so with any good model of the other modality: that shared class is not
  what MFH calls modality-general.  ``gamma_hat = sum_c d_c r_c / sum_c d_c``;
  ``general_share`` is the share of the decisive channels (the fewest holding 90% of
  ``sum_c d_c``) with ``r_c >= 1/2``.  Unlike Algorithm 1's step 1 the two networks are not
  trained to agree (only unimodal models are trained), so the spectrum is descriptive: a
  channel both modalities carry can even *lower* the distance when permuted, where the two
  unaligned models map it to opposite outputs; the generality ``r_c`` does not depend on that
  alignment (a planted test shows both).  Data paired by class only (avdigits)
  has no per-item shared variation: gamma_hat is near 0 there by construction.

The rule that turns them into a verdict per direction is :data:`RULE` (documented in README;
fixed from the papers' mechanisms before any validation, never fitted).  ``pilot`` adds a
short no-KD / KD / C2KD comparison on the student modality (seeds;
:func:`cmkd.verdicts.verdict_difference` with per-item correctness), whose measured verdicts
stand beside the predicted ones.

Output folder: REPORT.md, report.html, figures (PNG) and diagnosis.json (``kd.verdict``,
``c2kd.verdict`` in ``help`` / ``hurt`` / ``unclear``; per direction under ``directions``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HELP, HURT, UNCLEAR = "help", "hurt", "unclear"
VERDICTS = (HELP, HURT, UNCLEAR)
#: items of every class the train split needs (fewer: a clear error before any training)
MIN_TRAIN_PER_CLASS = 5
#: items the held-out split needs for the measurements
MIN_HELD_OUT = 20
#: MFH: decisive features mostly modality-general (gamma > 1/2) is where KD helps
GAMMA_GENERAL = 0.5
#: C2KD's filter keeps a sample when KRC > omega; KD is aligned on average when mean KRC > this
KRC_ALIGNED = 0.0
#: the C2KD filter acts on most of the data when it keeps at least this share
KEEP_MAJORITY = 0.5
#: the decisive channels: the fewest holding this share of the summed decisiveness
DECISIVE_MASS = 0.9

RULE = f"""\
Per direction (teacher modality T -> student modality S), from the unimodal models only:

- teacher advantage: accuracy(T) - accuracy(S) on the held-out items, its 95% interval paired
  by seed and by item (cmkd.verdicts.verdict_difference): *stronger* when the interval lies
  above 0, *weaker* when it lies below 0.
- aligned: the mean KRC (Kendall's tau-a of the two models' logits, per item) > {KRC_ALIGNED}.
- general: gamma_hat (the estimated share of the teacher's decisive information that is
  modality-general: decisiveness by Algorithm 1's permutations, weighted generality as the
  within-class R^2 on S's logits) >= {GAMMA_GENERAL}.
- keep share: items with KRC > omega (C2KD's filter).

KD (MFH: KD helps when the decisive features are modality-general; C2KD Section 3.1: a weaker
teacher and misaligned soft labels hurt):
  help    if the teacher is stronger and aligned and general;
  hurt    if the teacher is weaker, or not aligned;
  unclear otherwise (e.g. a stronger, aligned teacher whose decisive features are mostly
          modality-specific: MFH predicts little gain).

C2KD (its filter distils only the items whose soft labels agree, non-target classes only):
  help    if the teacher is not weaker and general and the filter keeps >= {KEEP_MAJORITY:.0%};
  hurt    if the teacher is weaker and the filter keeps < {KEEP_MAJORITY:.0%};
  unclear otherwise.

The thresholds are the theories' natural midpoints (gamma = 1/2: half the decisive information
shared; KRC = 0: no rank agreement; half the items kept), fixed before any validation.
"""


class DiagnoseError(ValueError):
    """Input that cannot be diagnosed; the message lists every problem found."""

    def __init__(self, source, problems: Sequence[str]):
        self.source, self.problems = str(source), list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"cmkd diagnose {self.source}: {self.problems[0]}"
        return (f"cmkd diagnose {self.source}: {len(self.problems)} problems:\n"
                + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class Settings:
    """How the unimodal models (and the pilot's students) train and what is measured.

    seeds : models per modality (seeds ``seed`` .. ``seed + seeds - 1``); epochs / patience /
    batch_size / lr : the training (SGD momentum 0.9, poly decay to lr / 100, as notebook 06);
    device : 'auto', 'cpu', 'cuda', 'mps'; omega : C2KD's KRC threshold; permutations :
    Algorithm 1's M; pilot : also train no-KD / KD / C2KD students; pilot_epochs : their epochs
    (default ``epochs``); cache : the job cache (default :func:`cmkd.jobs.cache_dir`);
    progress : tqdm bars.
    """

    seeds: int = 2
    seed: int = 0
    epochs: int = 20
    patience: int | None = 3
    batch_size: int = 64
    lr: float = 0.01
    device: str = "auto"
    omega: float = 0.0
    permutations: int = 10
    pilot: bool = False
    pilot_epochs: int | None = None
    cache: str | None = None
    progress: bool = True

    def problems(self) -> list[str]:
        from cmkd.runtime import DEVICES

        out = []
        for name in ("seeds", "epochs", "batch_size", "permutations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                out.append(f"{name} must be an int >= 1, got {v!r}")
        if self.pilot and self.seeds < 2:
            out.append("the pilot needs seeds >= 2 for a spread over seeds")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            out.append(f"seed must be an int >= 0, got {self.seed!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            out.append(f"patience must be None or an int >= 1, got {self.patience!r}")
        if self.pilot_epochs is not None and (not isinstance(self.pilot_epochs, int)
                                              or self.pilot_epochs < 1):
            out.append(f"pilot_epochs must be None or an int >= 1, got {self.pilot_epochs!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            out.append(f"lr must be a number > 0, got {self.lr!r}")
        if not (isinstance(self.omega, (int, float)) and -1 <= self.omega < 1):
            out.append(f"omega must lie in [-1, 1), got {self.omega!r}")
        if self.device not in DEVICES:
            out.append(f"device must be one of {DEVICES}, got {self.device!r}")
        return out


# ----------------------------------------------------------------------------- the input
@dataclass(frozen=True)
class Source:
    """What is diagnosed: a dataset of the registry (``pairs`` for a file), its grid params
    (root), its two modalities and the directions asked for, as (teacher, student)."""

    label: str
    dataset: str
    params: dict
    modalities: tuple[str, str]
    directions: tuple[tuple[str, str], ...]
    views: tuple[str, str] | None = None  # mfeat: the two views


#: grid parameters a dataset's loader options may name, with the value diagnose uses
DEFAULT_PARAMS = {"image_size": 224}


def _is_file(source: str) -> bool:
    from cmkd.data import pairs

    return Path(source).suffix.lower() in pairs.SUFFIXES or Path(source).expanduser().is_file()


def resolve_source(source, teacher: str | None = None, student: str | None = None,
                   root: str | None = None) -> Source:
    """The :class:`Source` of ``source`` (a pairs file, or a dataset name with ``root`` for a
    real dataset); ``teacher`` / ``student`` name modalities (one of them may be left out:
    the other modality; both left out: both directions).  DiagnoseError on unknown names."""
    from cmkd import data
    from cmkd.data import specs

    source = str(source)
    views = None
    if _is_file(source):
        if root:
            raise DiagnoseError(source, ["--root is for a dataset name; a file is its own root"])
        dataset, params = "pairs", {"pairs_root": str(Path(source).expanduser().resolve())}
        mods = ("a", "b")
    else:
        if source not in data.DATASETS and source not in specs.SPECS:
            raise DiagnoseError(source, [
                f"neither a file (.npz / .pt / .pth) nor a known dataset; datasets with two "
                f"modalities: {', '.join(n for n in specs.SPECS if n != 'pairs')}"])
        if source not in specs.SPECS:
            raise DiagnoseError(source, [f"dataset {source!r} has no pairing spec (two "
                                         f"modalities); known: {', '.join(specs.SPECS)}"])
        dataset = source
        params = dict(DEFAULT_PARAMS)
        param = specs.root_param(dataset)
        if param is not None:
            if not root:
                raise DiagnoseError(source, [f"dataset {dataset!r} is read from a folder: "
                                             f"give it with --root"])
            params[param] = str(Path(root).expanduser().resolve())
        elif root:
            raise DiagnoseError(source, [f"dataset {dataset!r} is embedded; --root is not used"])
        if dataset == "mfeat":
            mods = tuple(specs.MFEAT_DIMS)
            chosen = [m for m in (teacher, student) if m]
            if not chosen:
                chosen = list(specs.MFEAT_VIEWS)
            for m in chosen:
                if m not in mods:
                    raise DiagnoseError(source, [f"unknown modality {m!r}; mfeat's views: "
                                                 f"{', '.join(mods)}"])
            if len(chosen) == 1:
                raise DiagnoseError(source, ["mfeat has six views: name both --teacher and "
                                             "--student"])
            views = (chosen[0], chosen[1])
            mods = views
        else:
            mods = specs.spec(dataset).modalities
    for m in (teacher, student):
        if m is not None and m not in mods:
            raise DiagnoseError(source, [f"unknown modality {m!r}; this data's modalities: "
                                         f"{', '.join(mods)}"])
    if teacher is not None and teacher == student:
        raise DiagnoseError(source, [f"teacher and student are both {teacher!r}; name two "
                                     f"different modalities"])
    if teacher is None and student is None:
        directions = ((mods[0], mods[1]), (mods[1], mods[0]))
    else:
        t = teacher if teacher is not None else next(m for m in mods if m != student)
        s = student if student is not None else next(m for m in mods if m != t)
        directions = ((t, s),)
    label = Path(source).name if dataset == "pairs" else source
    return Source(label, dataset, params, tuple(mods), directions, views)


@contextmanager
def _spec(src: Source):
    """mfeat's spec set to the chosen views while jobs are built (restored afterwards)."""
    from cmkd.data import specs

    if src.views is None:
        yield
        return
    old = specs.SPECS["mfeat"]
    specs.SPECS["mfeat"] = specs.mfeat_spec(src.views)
    try:
        yield
    finally:
        specs.SPECS["mfeat"] = old


def direction_name(src: Source, teacher: str) -> str:
    """'a2v' when ``teacher`` is the spec's first modality, 'v2a' otherwise."""
    return "a2v" if teacher == src.modalities[0] else "v2a"


def _labels(ds) -> torch.Tensor | None:
    tensors = getattr(ds, "tensors", None)
    if isinstance(tensors, dict) and "label" in tensors:
        return tensors["label"]
    labels = getattr(ds, "labels", None)
    return None if labels is None else torch.as_tensor(np.asarray(labels))


def check_input(src: Source) -> dict:
    """Every problem of the input at once (DiagnoseError), before any training: the file's own
    checks (:mod:`cmkd.data.pairs`: missing arrays, unequal lengths, shapes, NaN / inf, labels,
    splits), the real dataset's folder (:func:`cmkd.data.specs.preflight`), models the data's
    shapes cannot feed, a single class, fewer than :data:`MIN_TRAIN_PER_CLASS` train items in a
    class, fewer than :data:`MIN_HELD_OUT` held-out items.  Returns the split sizes and the
    held-out split's name."""
    from cmkd import data
    from cmkd.data import specs
    from cmkd.data.files import DatasetError
    from cmkd.params import ParamError

    with _spec(src):
        try:
            specs.preflight([src.dataset], src.params)
        except (ParamError, DatasetError) as err:
            raise DiagnoseError(src.label, [str(err)]) from None
        try:
            classes = data.classes(src.dataset, specs.root(src.dataset, src.params))
        except DatasetError as err:
            raise DiagnoseError(src.label, [str(err)]) from None
        problems = []
        if classes < 2:
            problems.append(f"the labels hold a single class ({classes}); a classifier needs at "
                            f"least 2")
        for m in src.modalities:
            try:
                specs.model(src.dataset, m, src.params)
            except ValueError as err:
                problems.append(str(err))
        opts = specs.loader_options(src.dataset, src.params)
        where = specs.root(src.dataset, src.params)
        sizes = {}
        for split in ("train", "val", "test"):
            try:
                ds = data.load(src.dataset, where, split, **opts)
            except DatasetError as err:
                raise DiagnoseError(src.label, [*problems, str(err)]) from None
            sizes[split] = len(ds)
            labels = _labels(ds)
            if split == "train" and labels is not None and classes >= 2:
                counts = torch.bincount(labels.long().flatten(), minlength=classes)
                few = [(k, int(c)) for k, c in enumerate(counts.tolist())
                       if c < MIN_TRAIN_PER_CLASS]
                if few:
                    shown = ", ".join(f"class {k}: {c}" for k, c in few[:10])
                    problems.append(f"too few train items per class (need >= "
                                    f"{MIN_TRAIN_PER_CLASS}): {shown}"
                                    + (f" and {len(few) - 10} more" if len(few) > 10 else ""))
        held = "test" if sizes["test"] else "val"
        if sizes[held] < MIN_HELD_OUT:
            problems.append(f"the held-out split has {sizes[held]} items (test {sizes['test']}, "
                            f"val {sizes['val']}); the measurements need >= {MIN_HELD_OUT}")
    if problems:
        raise DiagnoseError(src.label, problems)
    return {"classes": classes, "sizes": sizes, "held_out": held}


# ----------------------------------------------------------------------------- jobs
def builder(src: Source, settings: Settings, epochs: int | None = None):
    from cmkd.jobs.builders import Builder, Training

    optim = {"optimizer": "sgd", "lr": settings.lr, "momentum": 0.9, "weight_decay": 0.0,
             "schedule": "poly", "lr_min": settings.lr / 100}
    return Builder(src.params, Training(
        optim=optim, epochs=epochs or settings.epochs, teacher_epochs=settings.epochs,
        batch_size=settings.batch_size, device=settings.device,
        method_hparams={"c2kd": {"omega": float(settings.omega)}},
        patience=settings.patience))


def unimodal_jobs(src: Source, settings: Settings) -> dict:
    """(modality, seed) -> the unimodal job (the teacher job of notebook 06's grids)."""
    b = builder(src, settings)
    with _spec(src):
        return {(m, s): b.teacher(src.dataset, m, s) for m in src.modalities
                for s in range(settings.seed, settings.seed + settings.seeds)}


PILOT_METHODS = ("nokd", "kd", "c2kd")


def pilot_jobs(src: Source, settings: Settings) -> dict:
    """(teacher, student, method, seed) -> the pilot's student job."""
    b = builder(src, settings, settings.pilot_epochs or settings.epochs)
    out = {}
    with _spec(src):
        for t, s in src.directions:
            for method in PILOT_METHODS:
                for seed in range(settings.seed, settings.seed + settings.seeds):
                    out[(t, s, method, seed)] = b.student(
                        src.dataset, direction_name(src, t), seed, method)
    return out


# ----------------------------------------------------------------------------- measuring
def outputs(job, src: Source, split: str, cache) -> dict[str, torch.Tensor]:
    """A trained unimodal job's logits, labels and penultimate features on ``split``."""
    from cmkd import data
    from cmkd.data import specs

    with _spec(src):
        ds = data.load(src.dataset, specs.root(src.dataset, src.params), split,
                       **specs.loader_options(src.dataset, src.params))
    return job_outputs(job, split, cache, ds)


def job_outputs(job, split: str, cache, dataset=None) -> dict[str, torch.Tensor]:
    """A trained single-model job's logits, labels and penultimate features (``pooled``) on
    ``split`` of its own data (``dataset``: that split already loaded), and the model."""
    from cmkd import data
    from cmkd.engine import collect_outputs, make_loader
    from cmkd.jobs import load_model

    if dataset is None:
        dataset = data.load(job.dataset, job.data_root, split, **dict(job.dataset_options))
    model = load_model(job, cache)
    out = collect_outputs(model, make_loader(dataset, 256), job.inputs, ("pooled",))
    out["model"] = model
    return out


def _head(model):
    """The teacher's classifier on its penultimate features, then softmax (Algorithm 1's
    network above the ranked layer, on probabilities)."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, torch.nn.Linear):
        return torch.nn.Sequential(classifier, torch.nn.Softmax(-1))
    return lambda f: torch.softmax(model.classify(f), -1)


def within_class_r2(x: torch.Tensor, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per column of ``x`` (n, C): the adjusted R^2 of its within-class part (class means
    removed) regressed on the within-class part of ``z`` (n, K) by least squares, clipped to
    [0, 1]; the degrees of freedom count the class means and the regressors."""
    x, z = x.double(), z.double()
    labels = labels.long()
    classes = int(labels.max()) + 1

    def centred(v):
        sums = torch.zeros(classes, v.shape[1], dtype=v.dtype).index_add_(0, labels, v)
        counts = torch.bincount(labels, minlength=classes).clamp_min(1).to(v.dtype)
        return v - (sums / counts[:, None])[labels]

    xc, zc = centred(x), centred(z)
    coef = torch.linalg.lstsq(zc, xc, driver="gelsd").solution
    resid = ((xc - zc @ coef) ** 2).sum(0)
    total = (xc ** 2).sum(0)
    n, used = len(x), torch.bincount(labels).gt(0).sum().item()
    dof_total, dof_resid = n - used, n - used - torch.linalg.matrix_rank(zc).item()
    if dof_resid < 1:
        return torch.full((x.shape[1],), math.nan, dtype=torch.float64)
    r2 = 1 - (resid / dof_resid) / (total / dof_total).clamp_min(1e-300)
    return torch.where(total > 0, r2.clamp(0, 1), torch.zeros_like(r2))


@torch.no_grad()
def salience(teacher_out: dict, student_logits: torch.Tensor, labels: torch.Tensor,
             permutations: int, seed: int) -> dict:
    """The teacher's penultimate channels against the student modality: Algorithm 1's
    permutation salience (``algorithm1``: against the student modality's soft labels, less
    the distance without permutation, normalised by its largest magnitude as in the paper),
    each channel's decisiveness (``decisive``: the same permutations against the teacher's own
    soft labels), its generality (``general``: :func:`within_class_r2` on the student's
    logits), the estimate ``gamma_hat`` and ``general_share`` (module docstring)."""
    from cmkd.mfh import permutation_salience

    model, h = teacher_out["model"], teacher_out["pooled"].flatten(1)
    p_t = torch.softmax(teacher_out["logits"], -1)
    p_s = torch.softmax(student_logits, -1)
    head = _head(model)
    g = torch.Generator().manual_seed(seed)
    alg1 = permutation_salience(head, h, p_s, permutations=permutations, generator=g,
                                normalize="none", distance="mse").double()
    # the unaligned pair's distance before any permutation is removed (Algorithm 1's step 1
    # makes it small; here it is not), then the paper's division by the maximum
    alg1 = alg1 - ((p_t - p_s) ** 2).mean().double()
    alg1 = alg1 / alg1.abs().max().clamp_min(1e-300)
    g = torch.Generator().manual_seed(seed)  # the same shuffles for both
    own = permutation_salience(head, h, p_t, permutations=permutations, generator=g,
                               normalize="none", distance="mse").double()
    general = within_class_r2(h, student_logits, labels)
    total = float(own.sum())
    gamma = float((own * general).sum() / total) if total > 0 else math.nan
    order = torch.argsort(own, descending=True)
    mass = torch.cumsum(own[order], 0) / max(total, 1e-300)
    count = int(torch.searchsorted(mass, torch.tensor(DECISIVE_MASS, dtype=mass.dtype))) + 1
    decisive = order[:min(count, len(order))]
    return {"algorithm1": alg1.numpy(), "decisive": own.numpy(), "general": general.numpy(),
            "gamma_hat": gamma,
            "general_share": float((general[decisive] >= 0.5).double().mean()),
            "decisive_channels": int(len(decisive)), "channels": int(h.shape[1])}


def _advantage(acc_t: dict, acc_s: dict, corr_t: dict, corr_s: dict, label: str):
    import pandas as pd

    from cmkd.verdicts import verdict_difference

    seeds = sorted(acc_t)
    return verdict_difference(pd.Series([acc_t[s] for s in seeds], index=seeds),
                              pd.Series([acc_s[s] for s in seeds], index=seeds),
                              correct_a=np.stack([corr_t[s] for s in seeds]),
                              correct_b=np.stack([corr_s[s] for s in seeds]), label=label)


def predict(stronger: bool, weaker: bool, krc_mean: float, gamma_hat: float,
            keep_share: float) -> tuple[dict, dict]:
    """The verdicts of :data:`RULE` for KD and C2KD, each with its reason."""
    aligned = krc_mean > KRC_ALIGNED
    general = gamma_hat >= GAMMA_GENERAL
    keeps = keep_share >= KEEP_MAJORITY
    facts = (f"teacher {'stronger' if stronger else 'weaker' if weaker else 'not clearly stronger'}"
             f"; mean KRC {krc_mean:+.3f} ({'aligned' if aligned else 'not aligned'}); "
             f"gamma_hat {gamma_hat:.2f} ({'general' if general else 'mostly specific'}); "
             f"filter keeps {keep_share:.0%}")
    if stronger and aligned and general:
        kd = HELP
    elif weaker or not aligned:
        kd = HURT
    else:
        kd = UNCLEAR
    if not weaker and general and keeps:
        c2 = HELP
    elif weaker and not keeps:
        c2 = HURT
    else:
        c2 = UNCLEAR
    return {"verdict": kd, "reason": facts}, {"verdict": c2, "reason": facts}


def _accuracy(out: dict) -> float:
    return float((out["logits"].argmax(-1) == out["label"]).double().mean())


def measure_direction(teacher: dict, student: dict, omega: float = 0.0, permutations: int = 10,
                      names: tuple[str, str] = ("teacher", "student")) -> dict:
    """The indicators of one direction and :data:`RULE`'s verdicts, from unimodal models only.

    teacher, student : seed -> :func:`job_outputs` of the teacher modality's and the student
        modality's unimodal model of that seed, on the same held-out items (in the same order).
    Returns teacher_advantage (points, 95% interval, verdict), krc (mean, median, quantiles,
    keep_share above ``omega``), gamma_hat (and per seed), general_share, the salience per seed
    and the ``kd`` / ``c2kd`` verdicts with their reason.
    """
    from cmkd.metrics.krc import kendall_tau

    seeds = sorted(teacher)
    if sorted(student) != seeds:
        raise ValueError(f"teacher and student outputs cover different seeds: {seeds} and "
                         f"{sorted(student)}")
    t, s_mod = names

    def correct(out):
        return (out["logits"].argmax(-1) == out["label"]).numpy().astype(np.uint8)

    adv = _advantage({s: 100 * _accuracy(teacher[s]) for s in seeds},
                     {s: 100 * _accuracy(student[s]) for s in seeds},
                     {s: correct(teacher[s]) for s in seeds},
                     {s: correct(student[s]) for s in seeds}, f"accuracy {t} - {s_mod}")
    krc = np.concatenate([kendall_tau(teacher[s]["logits"].double(),
                                      student[s]["logits"].double(), "a").numpy()
                          for s in seeds])
    sal = [salience(teacher[s], student[s]["logits"], teacher[s]["label"], permutations, s)
           for s in seeds]
    gamma = float(np.nanmean([x["gamma_hat"] for x in sal]))
    keep = float((krc > omega).mean())
    kd, c2 = predict(adv.verdict == "held", adv.verdict == "NOT held", float(krc.mean()),
                     gamma, keep)
    return {
        "teacher_advantage": {"estimate": adv.estimate, "interval": [adv.low, adv.high],
                              "verdict": adv.verdict, "unit": "points"},
        "krc": {"mean": float(krc.mean()), "median": float(np.median(krc)),
                "quantiles": {str(q): float(np.quantile(krc, q))
                              for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
                "keep_share": keep, "omega": omega},
        "gamma_hat": gamma,
        "gamma_hat_seeds": [x["gamma_hat"] for x in sal],
        "general_share": float(np.mean([x["general_share"] for x in sal])),
        "decisive_channels": sal[0]["decisive_channels"], "channels": sal[0]["channels"],
        "salience": sal,
        "kd": kd, "c2kd": c2}


def _measured(rows, direction, method, base="nokd", n_test=None):
    """The pilot's verdict on method - no KD (help / hurt / unclear) with its interval."""
    import pandas as pd

    from cmkd.verdicts import HELD, NOT_HELD, verdict_difference

    def pick(m):
        sel = [r for r in rows if r["direction"] == direction and r["method"] == m]
        acc = pd.Series({r["seed"]: 100 * r["test_at_best_val"] for r in sel})
        corr = np.stack([np.frombuffer(r["test_correct"].encode(), np.uint8) - 48 for r in
                         sorted(sel, key=lambda r: r["seed"])]) if sel and sel[0][
            "test_correct"] else None
        return acc.sort_index(), corr

    a, ca = pick(method)
    b, cb = pick(base)
    v = verdict_difference(a, b, correct_a=ca, correct_b=cb, label=f"{method} - {base}")
    word = HELP if v.verdict == HELD else HURT if v.verdict == NOT_HELD else UNCLEAR
    return {"verdict": word, "gain": v.estimate, "interval": [v.low, v.high],
            "text": v.interval, "accuracy": float(a.mean()), "baseline": float(b.mean())}


def diagnose(source, teacher: str | None = None, student: str | None = None, *,
             root: str | None = None, out: str | Path | None = None,
             settings: Settings | None = None, executor=None) -> dict:
    """Run the diagnostic (module docstring) and return ``diagnosis.json``'s content; with
    ``out``, write REPORT.md, report.html, the figures and diagnosis.json there.  Every input
    problem is a DiagnoseError before any training.

    ``executor``: what trains the models (``cmkd diagnose --executor``): an executor of
    :mod:`cmkd.jobs.executors` (a :class:`cmkd.jobs.cluster.DaskExecutor`, ...), or a
    :class:`cmkd.jobs.cluster.ExecutorChoice`, checked with the input (a DiagnoseError before
    any training), built once the jobs are checked and closed at the end; None: the one the
    environment names (``CMKD_EXECUTOR``), else this process.  The results do not depend on it.
    """
    from cmkd.jobs import cache_dir
    from cmkd.jobs.cluster import ExecutorChoice, ExecutorError

    settings = settings or Settings()
    bad = settings.problems()
    if isinstance(executor, ExecutorChoice):
        try:
            executor.check()
        except ExecutorError as err:
            bad.append(f"executor: {err}")
    if bad:
        raise DiagnoseError(source, bad)
    src = resolve_source(source, teacher, student, root)
    info = check_input(src)
    cache = cache_dir(settings.cache)
    jobs = unimodal_jobs(src, settings)
    pjobs = pilot_jobs(src, settings) if settings.pilot else {}
    with _spec(src):
        for job in [*jobs.values(), *pjobs.values()]:
            job.check()
    if not isinstance(executor, ExecutorChoice):
        return _diagnose(source, src, info, cache, jobs, pjobs, settings, out, executor)
    built = executor.build(quiet=not settings.progress)
    try:
        return _diagnose(source, src, info, cache, jobs, pjobs, settings, out, built)
    finally:
        close = getattr(built, "close", None)
        if close is not None:
            close()


def _diagnose(source, src: Source, info: dict, cache: Path, jobs: dict, pjobs: dict,
              settings: Settings, out, executor) -> dict:
    """:func:`diagnose` once its input is checked: train (``executor``), measure, write."""
    from cmkd.jobs import run_jobs
    from cmkd.metrics.cka import cka
    from cmkd.metrics.krc import kendall_tau

    rows = run_jobs(list(jobs.values()), executor=executor, cache=cache,
                    progress=settings.progress)
    seeds = list(range(settings.seed, settings.seed + settings.seeds))
    held = info["held_out"]
    outs = {k: outputs(j, src, held, cache) for k, j in jobs.items()}
    modal = {}
    for m in src.modalities:
        acc = {s: float((outs[m, s]["logits"].argmax(-1) == outs[m, s]["label"]).double().mean())
               for s in seeds}
        tp = {s: float(torch.softmax(outs[m, s]["logits"], -1).gather(
            1, outs[m, s]["label"].long()[:, None]).mean()) for s in seeds}
        modal[m] = {"accuracy": float(np.mean(list(acc.values()))), "accuracy_seeds": acc,
                    "target_probability": float(np.mean(list(tp.values()))),
                    "target_probability_seeds": tp,
                    "model": jobs[m, seeds[0]].model,
                    "val_accuracy": float(rows[rows.key == jobs[m, seeds[0]].key]
                                          .best_val.iloc[0])}
    m0, m1 = src.modalities
    cka_seeds = [float(cka(outs[m0, s]["pooled"].flatten(1), outs[m1, s]["pooled"].flatten(1)))
                 for s in seeds]
    krc_all = {s: kendall_tau(outs[m0, s]["logits"].double(), outs[m1, s]["logits"].double(),
                              "a").numpy() for s in seeds}
    directions = []
    for t, s_mod in src.directions:
        d = measure_direction({s: outs[t, s] for s in seeds}, {s: outs[s_mod, s] for s in seeds},
                              settings.omega, settings.permutations, (t, s_mod))
        directions.append({"teacher": t, "student": s_mod,
                           "direction": direction_name(src, t), **d})
    result = {
        "input": {"source": str(source), "dataset": src.dataset, "modalities": list(src.modalities),
                  "classes": info["classes"], "split_sizes": info["sizes"],
                  "held_out": held},
        "settings": dataclasses.asdict(settings),
        "modalities": modal,
        "cka_linear": float(np.mean(cka_seeds)), "cka_linear_seeds": cka_seeds,
        "directions": directions, "rule": RULE,
    }
    if settings.pilot:
        prow = run_jobs(list(pjobs.values()), executor=executor, cache=cache,
                        progress=settings.progress)
        recs = []
        for (t, s_mod, method, seed), job in pjobs.items():
            r = prow[prow.key == job.key].iloc[0]
            recs.append({"direction": f"{t}->{s_mod}", "method": method, "seed": seed,
                         "test_at_best_val": float(r.test_at_best_val),
                         "test_correct": r.test_correct})
        for d in directions:
            name = f"{d['teacher']}->{d['student']}"
            d["pilot"] = {"kd": _measured(recs, name, "kd"),
                          "c2kd": _measured(recs, name, "c2kd"),
                          "accuracy": {m: float(np.mean([r["test_at_best_val"] for r in recs
                                                         if r["direction"] == name
                                                         and r["method"] == m])) * 100
                                       for m in PILOT_METHODS}}
    first = directions[0]
    for key in ("kd", "c2kd"):
        result[key] = {"verdict": first[key]["verdict"], "reason": first[key]["reason"],
                       "direction": f"{first['teacher']}->{first['student']}",
                       "by_direction": {f"{d['teacher']}->{d['student']}": d[key]["verdict"]
                                        for d in directions}}
    if out is not None:
        write(result, Path(out), np.concatenate([krc_all[s] for s in seeds]))
    return result


# ----------------------------------------------------------------------------- the report
def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


WORDS = {HELP: "likely to help", HURT: "likely to hurt", UNCLEAR: "unclear"}


def figures(result: dict, out: Path, krc: np.ndarray) -> list[tuple[str, str]]:
    """imbalance.png, krc.png, salience.png in ``out``; (file, caption) of each."""
    from cmkd.reporting import new_figure

    made = []
    mods = list(result["modalities"])
    fig, axes = new_figure(1, 2, width=8, height=3.2)
    for ax, key, title in ((axes[0], "accuracy_seeds", "top-1 accuracy"),
                           (axes[1], "target_probability_seeds", "mean target probability")):
        vals = [list(result["modalities"][m][key].values()) for m in mods]
        ax.bar(mods, [np.mean(v) for v in vals], color=["tab:blue", "tab:orange"][:len(mods)],
               yerr=[np.ptp(v) / 2 for v in vals], capsize=4)
        ax.set_ylim(0, 1)
        ax.set_title(title)
    fig.savefig(out / "imbalance.png", dpi=110)
    made.append(("imbalance.png", "Imbalance (C2KD Fig. 1a): each modality's unimodal model on "
                                  "the held-out items; bars: mean over seeds, whiskers: half "
                                  "the range."))
    d0 = result["directions"][0]
    fig, ax = new_figure(width=5, height=3.2)
    krc = np.asarray(krc)
    ax.hist(krc, bins=np.linspace(-1, 1, 41), color="tab:gray")
    ax.axvline(d0["krc"]["omega"], color="tab:red", ls="--",
               label=f"omega = {d0['krc']['omega']:g}: keeps {d0['krc']['keep_share']:.0%}")
    ax.axvline(krc.mean(), color="k", label=f"mean {krc.mean():+.3f}")
    ax.set_xlabel("KRC (Kendall tau-a) of the two modalities' logits, per item")
    ax.set_ylabel("items")
    ax.legend(fontsize=8)
    fig.savefig(out / "krc.png", dpi=110)
    made.append(("krc.png", "Soft-label alignment (C2KD Eq. 3, Fig. 1b): KRC per held-out item "
                            "(all seeds); C2KD's filter keeps the items right of omega."))
    fig, axes = new_figure(1, len(result["directions"]), width=4.2 * len(result["directions"]),
                           height=3.2, squeeze=False)
    for ax, d in zip(axes[0], result["directions"]):
        sal = d["salience"][0]
        own, alg1 = np.asarray(sal["decisive"]), np.asarray(sal["algorithm1"])
        order = np.argsort(-alg1)
        ax.plot(alg1[order], label="Algorithm 1 salience (increase / max)")
        ax.plot(own[order] / (own.max() if own.max() > 0 else 1.0), lw=0.8,
                label="decisiveness (/ max)")
        ax.scatter(np.arange(len(order)), np.asarray(sal["general"])[order], s=4, c="tab:green",
                   label="generality (within-class R^2)")
        ax.set_xlabel("teacher channel, by Algorithm 1 salience")
        ax.set_title(f"{d['teacher']} -> {d['student']}: gamma_hat {d['gamma_hat']:.2f}",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.savefig(out / "salience.png", dpi=110)
    made.append(("salience.png", "MFH Algorithm 1 on the teacher's penultimate channels (first "
                                 "seed), sorted by their salience; beside it each channel's "
                                 "decisiveness and generality, whose weighted mean is "
                                 "gamma_hat."))
    return made


def markdown(result: dict, figs: list[tuple[str, str]]) -> str:
    """REPORT.md's text."""
    inp = result["input"]
    lines = [f"# cmkd diagnose: {inp['source']}", ""]
    for d in result["directions"]:
        lines.append(f"- **{d['teacher']} teaching {d['student']}**: KD is "
                     f"**{WORDS[d['kd']['verdict']]}**, C2KD is **{WORDS[d['c2kd']['verdict']]}** "
                     f"({d['kd']['reason']}).")
        if "pilot" in d:
            p = d["pilot"]
            lines.append(f"  - pilot (measured): KD - no KD {p['kd']['text']}: "
                         f"{p['kd']['verdict']}; C2KD - no KD {p['c2kd']['text']}: "
                         f"{p['c2kd']['verdict']}")
    lines += ["", f"Data: `{inp['dataset']}`, modalities {', '.join(inp['modalities'])}, "
                  f"{inp['classes']} classes, splits {inp['split_sizes']}; measured on the "
                  f"{inp['held_out']} split with {result['settings']['seeds']} seed(s) per "
                  f"modality.", "", "## Unimodal models (imbalance)", "",
              "| modality | model | accuracy | mean target probability | val accuracy |",
              "|---|---|---|---|---|"]
    for m, v in result["modalities"].items():
        lines.append(f"| {m} | {v['model']} | {100 * v['accuracy']:.1f}% | "
                     f"{v['target_probability']:.3f} | {100 * v['val_accuracy']:.1f}% |")
    lines += ["", f"Linear CKA between the two models' penultimate features: "
                  f"{result['cka_linear']:.3f} (per seed: "
                  f"{', '.join(f'{c:.3f}' for c in result['cka_linear_seeds'])}).", "",
              "## Per direction", "",
              "| teacher -> student | teacher advantage (points, 95% CI) | mean KRC | median KRC "
              "| filter keeps | gamma_hat | general channels | KD | C2KD |",
              "|---|---|---|---|---|---|---|---|---|"]
    for d in result["directions"]:
        a = d["teacher_advantage"]
        lines.append(
            f"| {d['teacher']} -> {d['student']} | {a['estimate']:+.1f} [{a['interval'][0]:+.1f}"
            f", {a['interval'][1]:+.1f}] | {d['krc']['mean']:+.3f} | {d['krc']['median']:+.3f} | "
            f"{d['krc']['keep_share']:.0%} | {d['gamma_hat']:.2f} | "
            f"{d['general_share']:.0%} of {d['decisive_channels']} | {d['kd']['verdict']} | "
            f"{d['c2kd']['verdict']} |")
    if any("pilot" in d for d in result["directions"]):
        lines += ["", "## Pilot (measured on the student modality)", "",
                  "| teacher -> student | no KD | KD | C2KD | KD - no KD | C2KD - no KD |",
                  "|---|---|---|---|---|---|"]
        for d in result["directions"]:
            p = d["pilot"]
            lines.append(f"| {d['teacher']} -> {d['student']} | {p['accuracy']['nokd']:.1f}% | "
                         f"{p['accuracy']['kd']:.1f}% | {p['accuracy']['c2kd']:.1f}% | "
                         f"{p['kd']['text']} ({p['kd']['verdict']}) | {p['c2kd']['text']} "
                         f"({p['c2kd']['verdict']}) |")
    lines += ["", "## Figures", ""]
    for f, cap in figs:
        lines += [f"![{f}]({f})", "", cap, ""]
    lines += ["## The rule", "", "```", RULE.rstrip(), "```", ""]
    return "\n".join(lines)


def _html(md: str) -> str:
    """A small Markdown subset (headings, bullets, tables, images, code, bold) as HTML."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not set(lines[i]) <= set("|-: "):
                    rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if r == 0 else 'td'}>{inline(c)}</"
                                 f"{'th' if r == 0 else 'td'}>" for c in row) + "</tr>"
                for r, row in enumerate(rows)) + "</table>")
            continue
        m = re.match(r"!\[(.*?)\]\((.*?)\)", line)
        if m:
            out.append(f'<p><img src="{html.escape(m.group(2))}" alt="{html.escape(m.group(1))}"'
                       f' style="max-width:100%"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.lstrip().startswith("- "):
            out.append(f"<ul><li>{inline(line.lstrip()[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:.2em .5em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cmkd diagnose</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write(result: dict, out: Path, krc: np.ndarray) -> None:
    """REPORT.md, report.html, the figures and diagnosis.json in ``out`` (created); ``krc``:
    the per-item KRC values drawn."""
    out.mkdir(parents=True, exist_ok=True)
    figs = figures(result, out, krc)
    md = markdown(result, figs)
    (out / "REPORT.md").write_text(md)
    (out / "report.html").write_text(_html(md))
    (out / "diagnosis.json").write_text(json.dumps(_jsonable(result), indent=1) + "\n")
