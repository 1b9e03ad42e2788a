"""Benchmark of notebook 01: batched MVD sweeps against a per-run loop.

Notebook 01 (paper profile: both sweeps, 10 runs x 11 settings, 1000 epochs) trained batched,
beside a per-run reference loop (one ``nn.Linear`` and ``torch.optim.SGD`` per model, as the
official script trains them, evaluated once at the end) timed on a few runs and scaled to the
whole sweep.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from cmkd.data import mvd
from cmkd.distill import kd_loss
from cmkd.experiments import mvd_sweeps
from cmkd.params import load_params
from cmkd.reporting import repo_root
from cmkd.runtime import rng_for


def _loop_one_run(spec, config, seed: int, eval_every: int | None) -> None:
    rng = rng_for(seed)
    tr = mvd.generate(spec, config.n_train, rng)
    te = mvd.generate(spec, config.n_test, rng, delta=tr.delta)
    xa, xb, y = (torch.from_numpy(a) for a in (tr.xa, tr.xb, tr.y))
    xa_te, xb_te = torch.from_numpy(te.xa), torch.from_numpy(te.xb)

    def fit(x, x_test, teacher=None):
        model = torch.nn.Linear(x.shape[1], 2)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr)
        for epoch in range(config.epochs):
            out = model(x)
            loss = F.cross_entropy(out, y)
            if teacher is not None:
                loss = config.loss_scale * (config.rho * loss + (1 - config.rho) *
                                            kd_loss(out, teacher,
                                                    temperature=config.temperature))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if eval_every and epoch % eval_every == 0:
                with torch.no_grad():
                    model(x_test).argmax(1)
        return model

    t = fit(xa, xa_te)
    fit(xb, xb_te)
    with torch.no_grad():
        soft = t(xa)
    fit(xb, xb_te, soft)


def run(repeats: int = 3, loop_runs: int = 2) -> list[dict]:
    """Rows: benchmark, runs, seconds, speed-up (loop over batched), device."""
    root = repo_root()
    config = load_params(root / "params/paper/01_mvd_synthetic_sweeps.yaml", mvd_sweeps.Config)
    n_settings = len(mvd_sweeps.settings(config))
    total_runs = n_settings * config.n_runs
    times = []
    for _ in range(repeats):
        df = mvd_sweeps.run(config)
        times.append(df.attrs["seconds"])
    batched = min(times)
    spec = mvd.vary_alpha_spec(10)
    _loop_one_run(spec, config, 0, None)  # warm-up
    rows = [{"benchmark": "notebook 01 paper profile, batched (cmkd)",
             "runs": total_runs, "seconds": batched, "speed-up": 1.0}]
    for label, every in (("per-run loop, evaluated at the end", None),
                         ("per-run loop, evaluated every epoch (official script's way)", 1)):
        start = time.perf_counter()
        for r in range(loop_runs):
            _loop_one_run(spec, config, r, every)
        per_run = (time.perf_counter() - start) / loop_runs
        rows.append({"benchmark": f"{label}, scaled from {loop_runs} runs",
                     "runs": total_runs, "seconds": per_run * total_runs,
                     "speed-up": per_run * total_runs / batched})
    for row in rows:
        row["device"] = df.attrs["device"]
    return rows
