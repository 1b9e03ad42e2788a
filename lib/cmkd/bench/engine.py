"""Benchmark: the one training loop, one run at a time against a stack of runs, and where a job
of notebook 06 spends its time.

Stacking (``cmkd.engine.fit`` on a method built with ``runs=True``) trains R runs as one tensor
program.  Whether that pays depends on the model: each variant below trains the same runs
through the same loop, either one after the other (a plain model per run) or as one stack (the
model's stacked form, :func:`cmkd.models.stacked`), on the training split only (no evaluation),
one torch thread (as in a worker process of :class:`cmkd.jobs.ProcessExecutor`):

* ``mlp``: notebook 08's MLPs (x^a 25-d -> teacher, x^b 50-d -> student, two hidden layers of
  64, 5 classes, 2000 training samples, batch 128) - grouped layers
  (:class:`cmkd.models.batched.BatchedMLP`);
* ``cnn``: notebook 06's AV-digits CNNs (``avdigits_cnn``, audio teacher -> image student,
  batch 64, its 1140 training samples) - ``torch.func`` (:class:`cmkd.models.stack.Stacked`).

Each under KD and C2KD.  Reported: seconds per run and epoch, runs per hour at the default
profile's epochs (08: 30, 06: 5) and the stack's speed-up over one run at a time.

The profile: one epoch of a notebook-06 student job (AV-digits, audio teacher -> image student,
the default profile's batch 64) split into data loading, the forward pass with the losses (the
method's ``step``; the Kendall rank correlations inside it also on their own line), backward,
optimiser step, evaluation of the validation and test splits, and the start of a worker process
(a new interpreter importing cmkd and torch), so the convergence budget of later work can be
planned on measured costs.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from cmkd import data, methods, models
from cmkd.bench import best_seconds
from cmkd.data.arrays import StackedDataset
from cmkd.engine import evaluate, fit, make_loader
from cmkd.runtime import torch_threads

#: the default profile's student epochs of the notebooks the pairs come from
EPOCHS = {"mlp": 30, "cnn": 5}
RUNS = {"mlp": 8, "cnn": 4}


def _mvd(runs: int):
    """Notebook 08's default data (gamma 0.43), one draw per run: train sets."""
    return [data.load("mvd", None, "train", overlap=6, classes=5, n_train=2000, n_test=100,
                      seed=0, run=r) for r in range(runs)]


def _pair(kind: str, seeds: list[int] | None):
    """(teacher, student, teacher key, student key, classes): plain models (seeds None) or
    stacks of ``len(seeds)`` runs."""
    if kind == "mlp":
        specs = (("mlp", {"in_features": 25, "classes": 5, "hidden": (64, 64),
                          "modality": "xa"}, "xa"),
                 ("mlp", {"in_features": 50, "classes": 5, "hidden": (64, 64),
                          "modality": "xb"}, "xb"))
        classes = 5
    else:
        specs = (("avdigits_cnn", {"modality": "audio"}, "audio"),
                 ("avdigits_cnn", {"modality": "image"}, "image"))
        classes = 10
    built = []
    for name, opts, _ in specs:
        built.append(models.build(name, **opts) if seeds is None
                     else models.stacked(name, [s + 100 * len(built) for s in seeds], **opts))
    return built[0], built[1], specs[0][2], specs[1][2], classes


def _train_set(kind: str, runs: int | None):
    if kind == "mlp":
        sets = _mvd(runs or 1)
        return sets[0] if runs is None else StackedDataset(sets)
    train = data.load("avdigits", None, "train")
    return train if runs is None else StackedDataset([train] * runs)


def _epoch_seconds(kind: str, method: str, runs: int | None, batch: int) -> float:
    """Seconds of one training epoch through :func:`cmkd.engine.fit` (best of 2)."""
    torch.manual_seed(0)
    teacher, student, t_key, s_key, classes = _pair(kind, None if runs is None
                                                    else list(range(runs)))
    m = methods.build(method, student=student, teacher=teacher, classes=classes,
                      student_inputs=(s_key,), teacher_inputs=(t_key,),
                      **({} if runs is None else {"runs": True, "seeds": list(range(runs))}))
    loader = make_loader(_train_set(kind, runs), batch, shuffle=True, seed=0)
    return best_seconds(lambda: fit(m, loader, None, None, optim={"lr": 0.01}, epochs=1,
                                    device="cpu", progress=False), repeats=2)


def stacking_rows() -> list[dict]:
    """Runs per hour, one at a time against stacked, for the MLPs and CNNs under KD and C2KD."""
    rows = []
    for kind, batch in (("mlp", 128), ("cnn", 64)):
        runs = RUNS[kind]
        for method in ("kd", "c2kd"):
            with torch_threads(1):
                single = _epoch_seconds(kind, method, None, batch)
                stacked = _epoch_seconds(kind, method, runs, batch) / runs
            for mode, per_run in (("one run at a time", single),
                                  (f"stack of {runs}", stacked)):
                rows.append({
                    "benchmark": f"{kind.upper()} pair, {method}, {mode}",
                    "seconds": per_run,
                    "runs per hour": 3600 / (per_run * EPOCHS[kind]),
                    "speed-up": single / per_run,
                    "check": (f"per run and epoch; {EPOCHS[kind]} epochs a run"
                              + ("" if per_run == single
                                 else "; stacking pays" if per_run < single
                                 else "; stacking does not pay")),
                    "device": "cpu, 1 thread"})
    return rows


@contextlib.contextmanager
def _timed(module, name: str, totals: dict, key: str) -> Iterator[None]:
    """Within the block, calls of ``module.name`` add their seconds to ``totals[key]``."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, original)


def _profile_epoch(method: str) -> dict[str, float]:
    """Seconds of one epoch of a notebook-06 student job, by component."""
    import cmkd.distill.c2kd as c2kd_losses
    import cmkd.methods.c2kd as c2kd_method
    from cmkd.engine import OptimConfig, make_optimizer

    torch.manual_seed(0)
    teacher, student, t_key, s_key, classes = _pair("cnn", None)
    m = methods.build(method, student=student, teacher=teacher, classes=classes,
                      student_inputs=(s_key,), teacher_inputs=(t_key,))
    sets = {s: data.load("avdigits", None, s) for s in ("train", "val", "test")}
    loaders = {s: make_loader(d, 64, shuffle=s == "train", seed=0) for s, d in sets.items()}
    opt = make_optimizer(m.parameters(), OptimConfig())
    out = dict.fromkeys(("data loading", "forward and losses", "of which Kendall tau",
                         "backward", "optimiser step", "evaluation (val + test)"), 0.0)
    start = time.perf_counter()
    batches = list(loaders["train"])
    out["data loading"] = time.perf_counter() - start
    m.train()
    krc: dict[str, float] = {}
    with _timed(c2kd_losses, "kendall_tau", krc, "krc"), \
            _timed(c2kd_method, "kendall_tau", krc, "krc"):
        for batch in batches:
            t0 = time.perf_counter()
            terms = m.step(batch, 0)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            out["forward and losses"] += t1 - t0
            out["backward"] += t2 - t1
            out["optimiser step"] += t3 - t2
    out["of which Kendall tau"] = krc.get("krc", 0.0)
    start = time.perf_counter()
    for split in ("val", "test"):
        evaluate(m.student, loaders[split], m.student_inputs)
    out["evaluation (val + test)"] = time.perf_counter() - start
    return out


def _process_start() -> float:
    """Seconds for a new interpreter to import what a job worker imports (best of 3)."""
    code = "import torch, cmkd.jobs.run, cmkd.methods, cmkd.models, cmkd.engine"
    return best_seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True),
                        repeats=3)


def profile_rows() -> list[dict]:
    """Where one epoch of a notebook-06 student job goes (KD and C2KD)."""
    rows = []
    start = _process_start()
    for method in ("kd", "c2kd"):
        with torch_threads(1):
            _profile_epoch(method)  # warm-up
            parts = _profile_epoch(method)
        total = sum(v for k, v in parts.items() if k != "of which Kendall tau")
        for name, seconds in parts.items():
            rows.append({"benchmark": f"06 job epoch, {method}: {name}", "seconds": seconds,
                         "runs per hour": float("nan"), "speed-up": float("nan"),
                         "check": f"{seconds / total:.0%} of the epoch", "device": "cpu, 1 thread"})
    rows.append({"benchmark": "06 job: worker process start (import torch and cmkd)",
                 "seconds": start, "runs per hour": float("nan"), "speed-up": float("nan"),
                 "check": "once per worker process", "device": "cpu"})
    return rows


def run() -> list[dict]:
    """Rows: benchmark, seconds (per run and epoch, or per component), runs per hour, speed-up
    of a stack over one run at a time, check, device."""
    return stacking_rows() + profile_rows()
