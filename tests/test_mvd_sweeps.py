"""Notebook 01's experiment (cmkd.experiments.mvd_sweeps): determinism, per-run keying, claims."""

import numpy as np
import pandas as pd

from cmkd.experiments import mvd_sweeps
from cmkd.params import from_mapping

SMALL = dict(seed=3, n_runs=2, epochs=30, lr=0.1, n_train=50, n_test=80, rho=0.5,
             loss_scale=2.0, temperature=1.0, kl_reduction="batchmean", gammas=[0.0, 1.0],
             alphas=[0.0, 0.8], device="cpu")


def test_two_runs_give_identical_numbers():
    cfg = from_mapping(mvd_sweeps.Config, SMALL)
    a, b = mvd_sweeps.run(cfg), mvd_sweeps.run(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 8 and set(a.sweep) == {"gamma", "alpha"}
    np.testing.assert_allclose(a.gain, a.kd_acc - a.nokd_acc)


def test_seed_changes_the_numbers():
    a = mvd_sweeps.run(from_mapping(mvd_sweeps.Config, SMALL))
    b = mvd_sweeps.run(from_mapping(mvd_sweeps.Config, dict(SMALL, seed=4)))
    assert not a.kd_acc.equals(b.kd_acc)


def test_a_run_does_not_depend_on_what_it_is_batched_with():
    """Data, initialisation and training of a run are keyed by (seed, setting, run) alone."""
    alone = mvd_sweeps.run(from_mapping(mvd_sweeps.Config,
                                        dict(SMALL, gammas=[0.43], alphas=[0.5], n_runs=1)))
    many = mvd_sweeps.run(from_mapping(mvd_sweeps.Config,
                                       dict(SMALL, gammas=[0.0, 0.43], alphas=[0.5, 0.8])))
    keys = ["sweep", "gamma", "alpha", "run"]
    merged = alone.merge(many, on=keys, suffixes=("", "_many"))
    assert len(merged) == 2
    for m in mvd_sweeps.METRICS:
        np.testing.assert_allclose(merged[m], merged[f"{m}_many"])


def test_claims_detect_a_planted_trend():
    rows = [{"sweep": "gamma", "gamma": gm, "alpha": (1 - gm) / 2, "beta": (1 - gm) / 2, "run": r,
             "teacher_acc": 70.0 + r, "nokd_acc": 60.0, "kd_acc": 60.0 + 4 * gm + 0.1 * r,
             "gain": 4 * gm + 0.1 * r} for gm in (0, 0.5, 1) for r in range(4)]
    rows += [{"sweep": "alpha", "gamma": 1 - al, "alpha": al, "beta": 0.0, "run": r,
              "teacher_acc": 60.0 + 20 * al + r, "nokd_acc": 60.0, "kd_acc": 63.0 - 2 * al + r,
              "gain": 3.0 - 2 * al + r} for al in (0, 0.5, 0.8) for r in range(4)]
    c = mvd_sweeps.claims(pd.DataFrame(rows)).set_index("claim").held
    assert c["KD's gain over no-KD rises with gamma"]
    assert c["teacher accuracy rises with alpha"]
    assert c["KD's gain over no-KD does not rise with alpha"]
    flat = pd.DataFrame(rows).assign(gain=lambda d: np.where(d.sweep == "gamma", -d.gamma, d.gain))
    held = mvd_sweeps.claims(flat).set_index("claim").held
    assert not held["KD's gain over no-KD rises with gamma"]
