"""Data-parallel training of one job on several processes (GPUs), launched by ``torchrun``::

    torchrun --nproc_per_node 8 -m cmkd.ddp JOB.json --out runs/big   # one node, 8 GPUs

``JOB.json`` is a job's config (``job.json`` of a cached job, or ``Job.to_json()``).  Every
process builds the same student, method and optimiser as :func:`cmkd.jobs.run.run_job` (seeded
by the job), reads its own shard of each epoch's shuffled training set (a
``DistributedSampler``), and the gradients are averaged over the processes after every
backward pass, before the method's own gradient hook and the optimiser step: the arithmetic of
``DistributedDataParallel``.  Every rank evaluates the whole validation and test splits (the
engine's torchmetrics scores synchronise over the process group); rank 0 writes the result (the
loss terms of its history are rank 0's shard's).

Why not the ``DistributedDataParallel`` wrapper itself: the methods call their student's
``features`` and ``blocks`` directly (feature distillation, C2KD's proxies), which bypass a
wrapper's ``forward`` and so its gradient hooks; averaging the gradients in the training loop's
hook (``Method.after_backward``) gives the same update for every method without changing them.
BatchNorm layers keep per-process batch statistics (as DDP without SyncBatchNorm).

The learning rate (linear scaling rule, Goyal et al. 2017, "Accurate, large minibatch SGD"):
with ``--batch per-process`` (default) every process keeps the job's ``batch_size``, so the
global batch is ``world_size x batch_size`` and the learning rate (``optim.lr`` and
``optim.lr_min``) is multiplied by ``world_size``.  With ``--batch split`` the job's batch is
split over the processes (``batch_size / world_size`` each) and the learning rate is kept: the
run then follows the single-process run step for step (same batches, same updates, up to
floating-point order; checked by the tests).

The result (``result.json``, ``history.csv``, ``checkpoint.pt``, ``ddp.json``: world size,
batch, learning rate) goes to ``--out``, not to the job cache: a run with a scaled learning rate
is not the job its key names.  The teacher, when the job has one, comes from the cache (rank 0
trains it first when missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

BATCH_MODES = ("per-process", "split")


def average_gradients(parameters, world: int) -> None:
    """All-reduce (sum) every gradient and divide by ``world``: what DDP does in backward."""
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def scaled(job, world: int, batch: str):
    """(per-process batch size, optim mapping) of ``job`` on ``world`` processes."""
    from cmkd.engine import OptimConfig

    if batch not in BATCH_MODES:
        raise ValueError(f"batch must be one of {BATCH_MODES}, got {batch!r}")
    optim = job.optim if isinstance(job.optim, OptimConfig) else OptimConfig.from_mapping(
        job.optim)
    if batch == "split":
        if job.batch_size % world:
            raise ValueError(f"--batch split needs batch_size ({job.batch_size}) divisible by "
                             f"the {world} processes")
        return job.batch_size // world, optim
    return job.batch_size, dataclasses.replace(optim, lr=optim.lr * world,
                                               lr_min=optim.lr_min * world)


def train(job, out: str | Path | None = None, cache: str | Path | None = None,
          batch: str = "per-process", progress: bool = False) -> dict | list[dict]:
    """Train ``job`` data-parallel in the process group (initialised here from torchrun's
    environment when it is not yet); returns the result row(s) on every rank, written to
    ``out`` by rank 0.  Module docstring: the sharding and the learning rate."""
    from torch.utils.data import BatchSampler, DistributedSampler

    from cmkd import methods
    from cmkd.engine import fit, make_loader
    from cmkd.jobs import cache as jc
    from cmkd.jobs.run import SPLITS, _split, load_model, result_row, run_job
    from cmkd.runtime import seed_everything

    if job.stacked:
        raise ValueError("a stack of runs already trains its runs at once; train it with "
                         "run_job (several stacks: an executor)")
    own_group = not dist.is_initialized()
    if own_group:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if torch.cuda.is_available() and job.device != "cpu":
            local = int(os.environ.get("LOCAL_RANK", rank))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        cache = jc.cache_dir(cache)
        teacher = None
        if job.teacher is not None:
            if rank == 0:
                run_job(job.teacher, cache)
            dist.barrier()
            teacher = load_model(job.teacher, cache)
            t_rows = jc.read_rows(cache, job.teacher.key)
        per_process, optim = scaled(job, world, batch)
        sets = {s: _split(job, s) for s in SPLITS}
        seed_everything(job.seed)
        student = job.build_model()
        method = methods.build(job.method, job.hparams, student=student, teacher=teacher,
                               classes=student.classes, student_inputs=job.inputs,
                               teacher_inputs=None if teacher is None else job.teacher.inputs,
                               **job.method_stack())
        if method.train_batch_sampler(len(sets["train"]), job.batch_size, job.seed) is not None:
            raise ValueError(f"method {job.method} draws its own training batches; cmkd.ddp "
                             "shards the data with a DistributedSampler and does not take it")
        for p in method.parameters():  # the same start everywhere (seeded alike anyway)
            dist.broadcast(p.data, 0)
        own_hook = method.after_backward

        def after_backward(epoch: int) -> None:
            average_gradients(method.parameters(), world)
            own_hook(epoch)

        method.after_backward = after_backward
        sampler = DistributedSampler(sets["train"], num_replicas=world, rank=rank,
                                     shuffle=True, seed=job.seed, drop_last=False)
        batches = BatchSampler(sampler, per_process, drop_last=False)
        train_loader = _EpochLoader(make_loader(sets["train"], per_process,
                                                num_workers=job.workers, batch_sampler=batches),
                                    sampler)
        # every rank validates and tests the whole splits (the same model everywhere: early
        # stopping stops them alike), in step: the engine's torchmetrics scores synchronise
        # over the process group when they are computed
        loaders = {s: None if len(sets[s]) == 0 else
                   make_loader(sets[s], job.batch_size, seed=job.seed,
                               num_workers=job.workers) for s in ("val", "test")}
        start = time.perf_counter()
        result = fit(method, train_loader, loaders["val"], loaders["test"], optim=optim,
                     epochs=job.epochs, device=device, seed=job.seed, progress=progress,
                     metrics=(job.metric,), test_every=job.test_every,
                     patience=job.patience)
        seconds = time.perf_counter() - start
        row = result_row(job, result, None if job.teacher is None else t_rows[0], seconds,
                         str(device))
        row.update({"ddp_world_size": world, "ddp_batch": batch,
                    "ddp_batch_per_process": per_process, "ddp_lr": optim.lr})
        if rank == 0 and out is not None:
            _write(Path(out), job, row, result, world, batch, per_process, optim)
        return row
    finally:
        if own_group:
            dist.destroy_process_group()


class _EpochLoader:
    """A DataLoader whose DistributedSampler gets the epoch at each pass (a new shuffle)."""

    def __init__(self, loader, sampler):
        self.loader, self.sampler, self.epoch = loader, sampler, 0

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _write(out: Path, job, row, result, world, batch, per_process, optim) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "job.json").write_text(job.to_json() + "\n")
    (out / "result.json").write_text(json.dumps(row, indent=1) + "\n")
    (out / "history.csv").write_text(result.history.to_csv(index=False))
    (out / "ddp.json").write_text(json.dumps(
        {"world_size": world, "batch": batch, "batch_per_process": per_process,
         "lr": optim.lr, "lr_min": optim.lr_min, "job_lr": row.get("optim_lr")}, indent=1)
        + "\n")
    buf = io.BytesIO()
    which = "best" if job.kind == "teacher" else "final"
    state = result.state_dicts["best_student" if which == "best" else "student"]
    torch.save({"model": state, "which": which}, buf)
    (out / "checkpoint.pt").write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    from cmkd.jobs import Job

    parser = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m cmkd.ddp",
                                     description="train one job data-parallel (module "
                                                 "docstring of cmkd.ddp)")
    parser.add_argument("job", help="a job's config (job.json)")
    parser.add_argument("--out", required=True, help="folder for the result")
    parser.add_argument("--cache", help="job cache with the teacher (default: $CMKD_CACHE)")
    parser.add_argument("--batch", choices=BATCH_MODES, default="per-process",
                        help="per-process: each process takes batch_size, lr x world size "
                             "(linear rule); split: batch_size over the processes, lr kept")
    args = parser.parse_args(argv)
    path = Path(args.job)
    if not path.is_file():
        raise SystemExit(f"cmkd.ddp: no job file {path}")
    try:
        job = Job.from_config(json.loads(path.read_text()))
        job.check()
    except (ValueError, TypeError) as err:
        raise SystemExit(f"cmkd.ddp: {path}: {err}") from None
    if "RANK" not in os.environ:
        print("cmkd.ddp: not started by torchrun (no RANK): one process", file=sys.stderr)
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29531"))
    row = train(job, args.out, args.cache, args.batch)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"test_at_best_val {row['test_at_best_val']:.4f} on {row['ddp_world_size']} "
              f"processes; result in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
