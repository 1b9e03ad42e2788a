"""The one training loop: :func:`fit` a method over torch DataLoaders, :func:`evaluate` a model,
:func:`collect_outputs` (logits and named features for the CKA / KRC diagnostics).

One run or a stack of runs.  A method built with ``runs=True`` on stacked models
(:func:`cmkd.models.stacked`: R independent runs of one architecture, every tensor with a leading
run dimension) trains through the same loop: batches hold (R, batch, ...) tensors
(:class:`cmkd.data.arrays.StackedDataset`), the method returns (R,) loss terms, their sum is
back-propagated (so each run's gradient is its own), and every run is scored, selected on its
own validation score and recorded in the history (a ``run`` column) separately.

Any ``cmkd.data.load`` dataset works: its items are dicts of modality tensors plus 'label', which
the default collate stacks into a batch dict.  What trains is the method's business
(:class:`cmkd.methods.base.Method`); the loop only optimises ``method.parameters()`` on
``method.step(batch, epoch)['total']``.

Model selection.  Every epoch evaluates the student on the validation and the test split.  The
default reported score, ``FitResult.test_at_best_val``, is the test score at the epoch of the best
validation score (the first metric of ``metrics``; the earliest epoch on ties): C2KD's official
code selects on validation, and choosing an epoch by its test score would leak the test set.
``FitResult.test_last`` (the last epoch's test score, what MFH's scripts print) is recorded too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cmkd.metrics.task import METRICS, StackScores, infer_task, task_metrics
from cmkd.models.batched import merge_runs
from cmkd.params import ParamError, from_mapping, spec
from cmkd.runtime import die_with_parent, seed_everything, seed_for, select_device

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "poly", "step")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (validated on construction).

    The papers' settings (docs/official_code_audit.md):
    C2KD: ``OptimConfig('sgd', lr=1e-2, momentum=0.9, schedule='poly', lr_min=1e-4)``;
    MFH VGGSound: ``OptimConfig('adamw', lr=1e-3, weight_decay=1e-5, schedule='step',
    step_size=25, gamma=0.1)``.
    """

    optimizer: str = field(default="sgd", metadata=spec(
        "'sgd' (torch.optim.SGD with momentum) or 'adamw'", choices=OPTIMIZERS))
    lr: float = field(default=0.01, metadata=spec("base learning rate", low=0, low_open=True))
    momentum: float = field(default=0.9, metadata=spec("SGD momentum", low=0, high=1,
                                                       high_open=True))
    weight_decay: float = field(default=0.0, metadata=spec("weight decay", low=0))
    schedule: str = field(default="constant", metadata=spec(
        "'constant'; 'poly': lr_min + (lr - lr_min) (1 - epoch / epochs)^power (C2KD); "
        "'step': lr gamma^(epoch // step_size) (StepLR, MFH VGGSound)", choices=SCHEDULES))
    lr_min: float = field(default=0.0, metadata=spec("poly: the floor (C2KD: 1e-4)", low=0))
    power: float = field(default=0.9, metadata=spec("poly: the exponent", low=0, low_open=True))
    step_size: int = field(default=25, metadata=spec("step: epochs between decays", low=1))
    gamma: float = field(default=0.1, metadata=spec("step: decay factor", low=0, high=1,
                                                    low_open=True))

    def __post_init__(self):
        from_mapping(OptimConfig, dataclasses.asdict(self), source="optim", partial=True)
        if self.lr_min > self.lr:
            raise ParamError("lr_min", f"must not exceed lr ({self.lr}), got {self.lr_min}",
                             "optim")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, source: str = "optim"
                     ) -> OptimConfig:
        """Validate a params-file mapping (missing names take their defaults)."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return from_mapping(cls, {**defaults, **(values or {})}, source=source)


def learning_rate(optim: OptimConfig, epoch: int, epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based) of ``epochs`` under ``optim``'s schedule."""
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must lie in [0, {epochs}), got {epoch}")
    if optim.schedule == "poly":
        return optim.lr_min + (optim.lr - optim.lr_min) * (1 - epoch / epochs) ** optim.power
    if optim.schedule == "step":
        return optim.lr * optim.gamma ** (epoch // optim.step_size)
    return optim.lr


def make_optimizer(parameters: Sequence[nn.Parameter], optim: OptimConfig
                   ) -> torch.optim.Optimizer:
    """torch.optim.SGD (momentum, weight decay) or AdamW at ``optim.lr``."""
    if optim.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)
    return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False, pin_memory: bool = False,
                batch_sampler=None) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds depend on ``seed`` only (its own
    generator), so a run does not depend on what else used the global random state.
    ``batch_sampler`` (a method's own batching, e.g. DLB's) replaces batch_size / shuffle.
    A dataset that fetches whole batches itself (``batched_fetch``: the array-backed and stacked
    datasets of :mod:`cmkd.data.arrays`) is read with one ``__getitems__`` call per batch."""
    common = dict(num_workers=num_workers, pin_memory=pin_memory,
                  worker_init_fn=functools.partial(_seed_worker, os.getpid())
                  if num_workers else None,
                  persistent_workers=num_workers > 0)
    if getattr(dataset, "batched_fetch", False):
        common["collate_fn"] = _as_batch
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)
    gen = torch.Generator().manual_seed(seed_for(seed, 1))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      drop_last=drop_last, **common)


def _as_batch(batch):
    """The collate function of datasets that build their batch in ``__getitems__``."""
    return batch


def _seed_worker(parent: int, worker_id: int) -> None:  # pragma: no cover - in a loader worker
    """A DataLoader worker: dies with ``parent``, the process that reads from it (a pool
    worker killed with -9 takes its loader workers along, :func:`cmkd.runtime.die_with_parent`;
    one that died while this worker started, before the signal was asked for, too), seeded."""
    die_with_parent(parent)
    seed_everything(torch.initial_seed() % 2**63)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    history : one row per epoch (per run and epoch for a stack, with a ``run`` column): epoch,
        lr, steps, the epoch mean of each loss term the method returns ('total', 'ce', 'kd',
        ...), the epoch sum of each 'n_*' counter, the epoch mean of each 'keep*' fraction, and
        ``train_<metric>`` (running, on the student's training-mode logits of each step),
        ``val_<metric>``, ``test_<metric>``.
    best_epoch : the epoch of the best validation score (the last epoch without validation).
    best_val, test_at_best_val : validation and test scores at ``best_epoch`` (the default
        reported score); val_last, test_last : the last epoch's.
    state_dicts : 'student', 'teacher', 'extra' at the end of training and 'best_student' at
        ``best_epoch`` (on the CPU; for a stack, run r of 'best_student' is from its own best
        epoch).
    teacher_test_last : the teacher's test scores after training, for methods that train it
        (online, bidirectional: C2KD Table 7 reports the updated teacher); empty otherwise.
    epochs_run : the epochs trained (fewer than asked when ``patience`` stopped training).
    since_best : the epochs between ``best_epoch`` and the last epoch trained (0: the run was
        still improving when training ended).
    test_correct : for a single-label classifier, the top-1 correctness (uint8 tensor, one
        entry per test item in the test loader's order) at ``best_epoch``; None otherwise.
        Two methods scored on the same test items can be compared item by item.
    runs : None for one run; R for a stack, where each score field (best_epoch, best_val,
        test_at_best_val, val_last, test_last, teacher_test_last, since_best, test_correct) is
        a list with one entry per run; :meth:`run` gives run r's view.
    """

    history: pd.DataFrame
    best_epoch: Any
    best_val: Any
    test_at_best_val: Any
    val_last: Any
    test_last: Any
    state_dicts: dict[str, dict] = field(repr=False)
    teacher_test_last: Any = field(default_factory=dict)
    runs: int | None = None
    epochs_run: int | None = None
    since_best: Any = None
    test_correct: Any = None

    def run(self, r: int) -> FitResult:
        """Run ``r`` of a stack as a one-run result (its history rows without the ``run``
        column; no state dicts: the stack's are in ``state_dicts``)."""
        if self.runs is None:
            raise ValueError("run() is for the result of a stack of runs")
        if not 0 <= r < self.runs:
            raise ValueError(f"run must lie in [0, {self.runs}), got {r}")
        h = self.history[self.history["run"] == r].drop(columns="run").reset_index(drop=True)
        return FitResult(history=h, best_epoch=self.best_epoch[r], best_val=self.best_val[r],
                         test_at_best_val=self.test_at_best_val[r], val_last=self.val_last[r],
                         test_last=self.test_last[r], state_dicts={},
                         teacher_test_last=(self.teacher_test_last[r] if self.teacher_test_last
                                            else {}),
                         epochs_run=self.epochs_run, since_best=self.since_best[r],
                         test_correct=self.test_correct[r])


def _use(flag, name: str, device: torch.device) -> bool:
    if flag == "auto":
        return device.type == "cuda"
    if flag not in (True, False):
        raise ValueError(f"{name} must be True, False or 'auto', got {flag!r}")
    if flag and device.type != "cuda":
        raise ValueError(f"{name}=True is only supported on CUDA (device is {device.type}); "
                         f"use {name}='auto' or False")
    return flag


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


class _Scores:
    """Metrics over one pass, built at the first batch (the task follows from its shapes)."""

    def __init__(self, names: Sequence[str], classes: int, device: torch.device):
        self.names, self.classes, self.device, self.metrics = tuple(names), classes, device, None
        self.labels = False

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if self.metrics is None:
            task = infer_task(logits, target)
            self.metrics = task_metrics(self.names, self.classes, task).to(self.device)
            # dense logits: the metrics get the top-1 class of each pixel, taken here with
            # max(1) (torchmetrics' own argmax over dim 1 of (B, C, H, W) costs 7x more on a
            # CPU; the same indices: the first maximal class either way), unless a metric
            # needs the scores themselves (average precision)
            self.labels = task == "segmentation" and "map" not in self.names
        target = target.long() if not target.is_floating_point() else target.int()
        self.metrics.update(logits.float().max(1).indices if self.labels else logits.float(),
                            target)

    def compute(self) -> dict[str, float]:
        if self.metrics is None:
            return {n: math.nan for n in self.names}
        return {k: float(v) for k, v in self.metrics.compute().items()}


def _scores(names: Sequence[str], classes: int, runs: int | None, device: torch.device):
    """Scores of one run (``_Scores``: a dict) or of a stack (StackScores: a list of dicts)."""
    if runs is None:
        return _Scores(names, classes, device)
    return StackScores(names, classes, runs, device)


def _runs_of(model: nn.Module) -> int | None:
    runs = getattr(model, "n_runs", None)
    return runs if isinstance(runs, int) else None


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, inputs: Sequence[str],
             metrics: Sequence[str] = ("accuracy",), device: torch.device | str = "cpu", *,
             amp: bool = False, channels_last: bool = False):
    """Scores of ``model`` (in eval mode) over ``loader``: metric name -> value, or for a
    stacked model (``n_runs``) one such dict per run.

    inputs : the batch keys fed to the model, in order (e.g. ``method.student_inputs``).
    metrics : names of :data:`cmkd.metrics.task.METRICS`; the task (multiclass, multilabel,
        segmentation) follows from the shapes of logits and 'label'.
    """
    return _evaluate(model, loader, inputs, metrics, torch.device(device), amp, channels_last,
                     correct=False)[0]


@torch.no_grad()
def _evaluate(model, loader, inputs, metrics, device, amp, channels_last, correct):
    """:func:`evaluate`'s scores and, with ``correct`` and a single-label classifier, the
    per-item correctness of its top-1 prediction in the loader's order (uint8, (n,) or
    (R, n) for a stack; None for other tasks)."""
    was_training = model.training
    model.eval()
    runs = _runs_of(model)
    scores = _scores(metrics, model.classes, runs, device)
    hits: list[torch.Tensor] | None = [] if correct else None
    try:
        for batch in loader:
            batch = _to_device(batch, device, channels_last)
            with _autocast(device, amp):
                logits = model(*[batch[k] for k in inputs])
            target = batch["label"]
            scores.update(logits, target)
            if hits is not None:
                if (target.is_floating_point() or logits.dim() > 3
                        or logits.shape[:-1] != target.shape):
                    hits = None  # multilabel or dense: no single top-1 prediction per item
                else:
                    hits.append((logits.argmax(-1) == target).to(torch.uint8).cpu())
    finally:
        model.train(was_training)
    items = None if not hits else torch.cat(hits, 0 if runs is None else 1)
    return scores.compute(), items


@torch.no_grad()
def collect_outputs(model: nn.Module, loader: DataLoader, inputs: Sequence[str],
                    feature_names: Sequence[str] = (), device: torch.device | str = "cpu"
                    ) -> dict[str, torch.Tensor]:
    """Logits, labels and named features of ``model`` over ``loader``, concatenated on the CPU.

    Returns
    -------
    dict with 'logits' (n, classes), 'label' (n, ...) and one (n, ...) tensor per name of
    ``feature_names`` (names of ``model.forward_features``' dict, e.g. 'pooled').  The model
    runs in eval mode, in float32, in the loader's order.  For a stacked model every tensor
    keeps its leading run dimension and samples are concatenated along dimension 1.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    dim = 0 if _runs_of(model) is None else 1
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "label": [],
                                            **{n: [] for n in feature_names}}
    try:
        for batch in loader:
            batch = _to_device(batch, device, False)
            logits, feats = model.forward_features(*[batch[k] for k in inputs])
            missing = [n for n in feature_names if n not in feats]
            if missing:
                raise KeyError(f"model has no feature(s) {missing}; it returns {list(feats)}")
            parts["logits"].append(logits.float().cpu())
            parts["label"].append(batch["label"].cpu())
            for n in feature_names:
                parts[n].append(feats[n].float().cpu())
    finally:
        model.train(was_training)
    if not parts["logits"]:
        raise ValueError("the loader yielded no batch")
    return {k: torch.cat(v, dim) for k, v in parts.items()}


def fit(method, train_loader: DataLoader, val_loader: DataLoader | None,
        test_loader: DataLoader | None, *, optim: OptimConfig | Mapping, epochs: int,
        device: torch.device | str = "auto", seed: int = 0, progress: bool = True,
        amp: bool | str = "auto", channels_last: bool | str = "auto",
        metrics: Sequence[str] = ("accuracy",), test_every: int = 1,
        patience: int | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``method`` (a :class:`cmkd.methods.base.Method`) for ``epochs`` epochs.

    Parameters
    ----------
    method : its student, teacher and extra modules are moved to ``device`` and trained in
        place; ``method.parameters()`` are optimised on ``method.step(batch, epoch)['total']``
        (summed over the runs of a stack: a method built with ``runs=True``).
    train_loader, val_loader, test_loader : DataLoaders yielding dicts of tensors with 'label'
        (:func:`make_loader`; for a stack, (R, batch, ...) tensors).  Without ``val_loader`` the
        last epoch is selected.
    optim : an :class:`OptimConfig` (or a mapping validated into one); the learning rate is set
        at the start of each epoch by :func:`learning_rate`.
    epochs : number of passes over ``train_loader`` (a training batch of a single sample, the
        tail of an epoch, is skipped: batch normalisation cannot train on one sample).
    device : 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' (:func:`cmkd.runtime.select_device`).
    seed : seeds Python, NumPy and torch before training (dropout, a loader without its own
        generator); with the same seed, models and data a CPU run repeats bit for bit.
    progress : tqdm bars per epoch (TQDM_DISABLE=1 switches them off).
    amp : bf16 autocast: 'auto' = on CUDA only; True is refused off CUDA.
    channels_last : channels_last memory format for models and 4-d inputs: 'auto' = on CUDA,
        for one run (a stack keeps the default format: its conv weights, with their run
        dimension, are 5-d, which channels_last does not take; True is refused for a stack).
    metrics : names of :data:`cmkd.metrics.task.METRICS`; the first selects the best epoch.
    test_every : the test split is evaluated at every epoch whose validation score is a new
        best (of any run), at the last epoch and every ``test_every`` epochs; 1 (default) draws
        the whole test curve in the history, a larger value saves the evaluations the scores
        do not need (the history's test columns are then empty at the other epochs).  0: only
        at the last epoch and, once training has ended, at each run's best-validation state
        (kept in memory anyway for the checkpoint): the same scores as any other value, with
        the fewest test passes (a test column only at the last epoch).
    on_epoch : called with each history row (a dict; one per run for a stack) after its epoch.
    """
    if not isinstance(optim, OptimConfig):
        optim = OptimConfig.from_mapping(optim)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty list of {METRICS}, got {list(metrics)!r}")
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 0:
        raise ValueError(f"test_every must be an int >= 0, got {test_every!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                 or patience < 1):
        raise ValueError(f"patience must be a positive int or None, got {patience!r}")
    device = select_device(device) if isinstance(device, str) else torch.device(device)
    use_amp = _use(amp, "amp", device)
    use_cl = _use(channels_last, "channels_last", device)
    if use_cl and method.n_runs is not None:
        if channels_last is True:
            raise ValueError(f"channels_last=True is for one run; a stack of {method.n_runs} "
                             f"runs keeps the default memory format (its conv weights carry "
                             f"a run dimension); use channels_last='auto' or False")
        use_cl = False
    seed_everything(seed)
    method.to(device, torch.channels_last if use_cl else None)
    opt = make_optimizer(method.parameters(), optim)
    runs = method.n_runs
    track = _Selection(metrics[0], runs, method.student)
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    evaluate_kw = dict(metrics=metrics, device=device, amp=use_amp, channels_last=use_cl)
    rows: list[dict] = []
    for epoch in range(epochs):
        lr = learning_rate(optim, epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        method.train()
        sums, steps, train_scores = _train_epoch(method, train_loader, opt, epoch, epochs,
                                                 device, use_amp, use_cl, metrics, acc_dtype,
                                                 progress)
        val = (evaluate(method.student, val_loader, method.student_inputs, **evaluate_kw)
               if val_loader is not None else None)
        since = track.since_best_after(epoch, val)
        stop = patience is not None and val is not None and min(since) >= patience
        wanted = (stop or epoch == epochs - 1
                  or (test_every > 0 and ((epoch + 1) % test_every == 0 or track.improves(val))))
        test, correct = (_evaluate(method.student, test_loader, method.student_inputs,
                                   correct=True, **evaluate_kw)
                         if test_loader is not None and wanted else (None, None))
        track.update(epoch, val, test, correct)
        new = _history_rows(epoch, lr, steps, sums, train_scores, val, test, runs, since)
        rows.extend(new)
        if on_epoch is not None:
            for row in new:
                on_epoch(dict(row))
        if stop:
            break
    if test_loader is not None and test_every == 0:
        track.test_best_states(lambda: _evaluate(method.student, test_loader,
                                                 method.student_inputs, correct=True,
                                                 **evaluate_kw))
    method.eval()
    states = {k: _cpu(v) for k, v in method.state_dict().items()}
    states["best_student"] = track.best_state()
    teacher_test: Any = {} if runs is None else []
    if test_loader is not None and method.trains_teacher():
        teacher_test = evaluate(method.teacher, test_loader, method.teacher_inputs,
                                **evaluate_kw)
    return FitResult(history=pd.DataFrame(rows), best_epoch=track.best_epoch,
                     best_val=track.best_val, test_at_best_val=track.test_best,
                     val_last=track.val_last, test_last=track.test_last, state_dicts=states,
                     teacher_test_last=teacher_test, runs=runs, epochs_run=epoch + 1,
                     since_best=track.since_best, test_correct=track.test_correct)


def _train_epoch(method, loader, opt, epoch, epochs, device, use_amp, use_cl, metrics,
                 acc_dtype, progress):
    """One pass over ``loader``: (sums of the loss terms, steps, running train scores)."""
    runs = method.n_runs
    sample_dim = 0 if runs is None else 1
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    train_scores = _scores(metrics, method.classes, runs, device)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
               **({} if progress else {"disable": True}))
    for batch in bar:
        if batch["label"].shape[sample_dim] < 2:  # a trailing batch of one: BatchNorm cannot
            continue                              # train on it
        batch = _to_device(batch, device, use_cl)
        method.last_student_logits = None
        with _autocast(device, use_amp):
            terms = method.step(batch, epoch)
        _check_terms(method, terms, runs)
        total = terms["total"]
        opt.zero_grad(set_to_none=True)
        (total if runs is None else total.sum()).backward()
        method.after_backward(epoch)
        opt.step()
        for k, v in terms.items():
            v = v.detach().to(acc_dtype)
            sums[k] = sums[k] + v if k in sums else v
        steps += 1
        if method.last_student_logits is not None:
            train_scores.update(method.last_student_logits, batch["label"])
    if steps == 0:
        raise ValueError("the training loader yielded no batch")
    return sums, steps, train_scores.compute()


def _check_terms(method, terms: Mapping[str, torch.Tensor], runs: int | None) -> None:
    want = () if runs is None else (runs,)
    shaped = {k: tuple(v.shape) for k, v in terms.items() if tuple(v.shape) != want}
    if shaped:
        if runs is None:
            raise ValueError(f"method {method.name!r} returned non-scalar terms {shaped}; fit "
                             f"needs scalars (a method built with runs=True trains stacked "
                             f"models)")
        raise ValueError(f"method {method.name!r} trains a stack of {runs} runs but returned "
                         f"terms of shapes {shaped}; each term must have shape ({runs},)")


def _history_rows(epoch, lr, steps, sums, train_scores, val, test, runs, since) -> list[dict]:
    def row(r=None):
        out: dict[str, Any] = {} if r is None else {"run": r}
        out.update({"epoch": epoch, "lr": lr, "steps": steps,
                    "since_best": since[0 if r is None else r]})
        for k, v in sums.items():
            v = float(v) if r is None else float(v[r])
            out[k] = v if k.startswith("n_") else v / steps
        for prefix, scores in (("train", train_scores), ("val", val), ("test", test)):
            if scores is not None:
                scores = scores if r is None else scores[r]
                out.update({f"{prefix}_{k}": v for k, v in scores.items()})
        return out

    return [row()] if runs is None else [row(r) for r in range(runs)]


class _Selection:
    """Best-validation selection of one run or of each run of a stack (earliest on ties)."""

    def __init__(self, select: str, runs: int | None, student: nn.Module):
        self.select, self.runs, self.student = select, runs, student
        n = 1 if runs is None else runs
        self._best = [None] * n
        self._epoch = [None] * n
        self._val: list[dict] = [{} for _ in range(n)]
        self._test: list[dict] = [{} for _ in range(n)]
        self._state: list[dict | None] = [None] * n
        self._val_last: list[dict] = [{} for _ in range(n)]
        self._test_last: list[dict] = [{} for _ in range(n)]
        self._last_epoch = -1
        self._correct: list[torch.Tensor | None] = [None] * n
        self._correct_last: list[torch.Tensor | None] = [None] * n

    def since_best_after(self, epoch: int, val) -> list[int]:
        """Per run, the epochs since its best validation score once ``val`` (epoch ``epoch``'s
        scores) is counted: 0 at a new best; epoch + 1 while it has no finite score."""
        vals = [{}] * len(self._best) if val is None else ([val] if self.runs is None else val)
        out = []
        for v, best, at in zip(vals, self._best, self._epoch):
            score = v.get(self.select, math.nan)
            if not math.isnan(score) and (best is None or score > best):
                out.append(0)
            else:
                out.append(epoch + 1 if at is None else epoch - at)
        return out

    def improves(self, val) -> bool:
        """Whether ``val`` (this epoch's validation scores) is a new best for some run."""
        if val is None:
            return False
        val = [val] if self.runs is None else val
        return any(not math.isnan(v.get(self.select, math.nan))
                   and (b is None or v[self.select] > b) for v, b in zip(val, self._best))

    def update(self, epoch: int, val, test, correct=None) -> None:
        n = len(self._best)
        val = [{}] * n if val is None else ([val] if self.runs is None else val)
        test = [{}] * n if test is None else ([test] if self.runs is None else test)
        correct = ([None] * n if correct is None
                   else [correct] if self.runs is None else list(correct))
        self._correct_last = correct
        self._val_last, self._test_last, self._last_epoch = list(val), list(test), epoch
        snapshot = None
        for r in range(n):
            score = val[r].get(self.select, math.nan)
            if not math.isnan(score) and (self._best[r] is None or score > self._best[r]):
                if snapshot is None:
                    snapshot = _cpu_state(self.student)
                self._best[r], self._epoch[r] = score, epoch
                self._val[r], self._test[r], self._state[r] = dict(val[r]), dict(test[r]), \
                    snapshot
                self._correct[r] = correct[r]

    def best_state(self) -> dict:
        last = None
        for r in range(len(self._best)):
            if self._state[r] is None:  # no validation split (or no finite score): last epoch
                last = last or _cpu_state(self.student)
                self._epoch[r], self._state[r] = self._last_epoch, last
                self._val[r], self._test[r] = dict(self._val_last[r]), dict(self._test_last[r])
                self._correct[r] = self._correct_last[r]
        if self.runs is None:
            return self._state[0]
        return merge_runs(self._state)

    def test_best_states(self, evaluate: Callable[[], tuple]) -> None:
        """Fill in the test scores (and per-item correctness) of every run whose best
        validation epoch was not tested (``fit(test_every=0)``): the student is evaluated by
        ``evaluate()`` (:func:`_evaluate` on the test split) with the best states loaded, then
        given back its last epoch's state."""
        self.best_state()  # runs without a finite validation score: their last epoch
        todo = [r for r in range(len(self._best)) if not self._test[r]]
        if not todo:
            return
        last = _cpu_state(self.student)
        best = self._state[0] if self.runs is None else merge_runs(self._state)
        self.student.load_state_dict(best)
        try:
            test, correct = evaluate()
        finally:
            self.student.load_state_dict(last)
        test = [test] if self.runs is None else test
        correct = ([None] * len(self._best) if correct is None
                   else [correct] if self.runs is None else list(correct))
        for r in todo:
            self._test[r], self._correct[r] = dict(test[r]), correct[r]

    def _one(self, values):
        return values[0] if self.runs is None else list(values)

    @property
    def best_epoch(self):
        return self._one(self._epoch)

    @property
    def best_val(self):
        return self._one(self._val)

    @property
    def test_best(self):
        return self._one(self._test)

    @property
    def since_best(self):
        """Epochs between each run's best validation epoch and the last epoch trained."""
        return self._one([self._last_epoch - e for e in self._epoch])

    @property
    def test_correct(self):
        """Per run, the test items' top-1 correctness (uint8) at its best epoch, or None."""
        return self._one(self._correct)

    @property
    def val_last(self):
        return self._one([dict(v) for v in self._val_last])

    @property
    def test_last(self):
        return self._one([dict(t) for t in self._test_last])


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return _cpu(model.state_dict())


__all__ = ["FitResult", "OptimConfig", "collect_outputs", "evaluate", "fit", "learning_rate",
           "make_loader", "make_optimizer"]
