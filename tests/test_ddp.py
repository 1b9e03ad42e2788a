"""cmkd.ddp: a 2-process CPU (gloo) data-parallel run launched by torchrun follows the
1-process run of the same job step for step (--batch split), and the linear learning-rate rule
of --batch per-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cmkd.ddp import scaled
from cmkd.jobs import Job

ROOT = Path(__file__).resolve().parents[1]


def job(**kw) -> Job:
    # 64 training items: 4 global batches of 16, each split in two halves of 8 (one per process)
    base = dict(dataset="mvd", model="mlp", inputs=("xb",), method="nokd",
                model_options={"in_features": 50, "classes": 2, "hidden": [16],
                               "modality": "xb"},
                dataset_options={"n_train": 64, "n_val": 32, "n_test": 48, "overlap": 8},
                optim={"lr": 0.1}, epochs=4, batch_size=16, seed=3, device="cpu")
    return Job(**{**base, **kw})


def torchrun(n: int, job_file: Path, out: Path, batch: str) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={n}", "-m", "cmkd.ddp", str(job_file),
                           "--out", str(out), "--batch", batch, "--cache", str(out / "cache")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_gloo_processes_follow_the_single_process_run(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(job().to_json())
    one = torchrun(1, path, tmp_path / "one", "split")
    two = torchrun(2, path, tmp_path / "two", "split")
    assert (one["ddp_world_size"], two["ddp_world_size"]) == (1, 2)
    assert two["ddp_batch_per_process"] == 8 and two["ddp_lr"] == one["ddp_lr"] == 0.1
    h1 = pd.read_csv(tmp_path / "one" / "history.csv")
    h2 = pd.read_csv(tmp_path / "two" / "history.csv")
    # the same global batches and averaged gradients: the same curves up to float order
    # (the loss terms in the history are rank 0's shard's; the scores are synchronised)
    for column in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert h2[column].to_numpy() == pytest.approx(h1[column].to_numpy(), abs=1e-6)
    assert (h2["steps"] == h1["steps"]).all()
    assert two["test_at_best_val"] == pytest.approx(one["test_at_best_val"], abs=1e-6)
    assert two["best_epoch"] == one["best_epoch"]
    import torch

    w1 = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    w2 = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
    # and the run learnt something: training is not a no-op that trivially agrees
    w0 = job().build_model().state_dict()
    assert any(not torch.allclose(w1[n], w0[n]) for n in w0)


def test_linear_learning_rate_rule():
    per, optim = scaled(job(), 4, "per-process")
    assert per == 16 and optim.lr == pytest.approx(0.4)
    per, optim = scaled(job(), 4, "split")
    assert per == 4 and optim.lr == pytest.approx(0.1)
    with pytest.raises(ValueError, match="divisible"):
        scaled(job(), 3, "split")
