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


def _planted(gamma_gain=4.0, alpha_gain=-2.0):
    rows = [{"sweep": "gamma", "gamma": gm, "alpha": (1 - gm) / 2, "beta": (1 - gm) / 2, "run": r,
             "teacher_acc": 70.0 + r, "nokd_acc": 60.0, "kd_acc": 60.0 + gamma_gain * gm + 0.1 * r,
             "gain": gamma_gain * gm + 0.1 * r} for gm in (0, 0.5, 1) for r in range(4)]
    rows += [{"sweep": "alpha", "gamma": 1 - al, "alpha": al, "beta": 0.0, "run": r,
              "teacher_acc": 60.0 + 20 * al + r, "nokd_acc": 60.0,
              "kd_acc": 63.0 + alpha_gain * al + r, "gain": 3.0 + alpha_gain * al + r}
             for al in (0, 0.5, 0.8) for r in range(4)]
    return pd.DataFrame(rows)


def _verdicts(df):
    out = mvd_sweeps.claims(df)
    assert list(out.columns) == ["artefact", "claim", "evidence", "interval", "verdict"]
    return out.set_index("claim").verdict


RISES = "KD's gain over no-KD rises with gamma"
VARIES = "teacher accuracy varies less with gamma than the KD student's"
TEACHER = "teacher accuracy rises with alpha"
NO_RISE = "KD's gain over no-KD does not rise with alpha"


def test_claims_detect_a_planted_trend():
    out = mvd_sweeps.claims(_planted())
    assert out.verdict.tolist() == ["held"] * 4
    assert list(out.claim) == [RISES, VARIES, TEACHER, NO_RISE]
    ev = out.set_index("claim").evidence
    assert ev[RISES].startswith("slope +4.00 [") and ev[RISES].endswith(
        "points per unit gamma over 12 runs")
    assert ev[VARIES].startswith("range of means: teacher 0.00, KD student 4.00; KD student "
                                 "minus teacher +4.00 [")
    assert out.set_index("claim").interval[TEACHER].endswith(" points per unit alpha")
    # the mirror: a falling gain does not rise with gamma, a rising one does with alpha
    flipped = _verdicts(_planted(gamma_gain=-4.0, alpha_gain=6.0))
    assert flipped[RISES] == "NOT held" and flipped[NO_RISE] == "NOT held"
    # no trend in gamma: neither shown nor refuted; in alpha a +1 slope with a spread of about
    # 1 point between runs: its interval holds both 0 and the 2-point margin
    null = _verdicts(_planted(gamma_gain=0.0, alpha_gain=1.0))
    assert null[RISES] == "undecided"
    assert null[NO_RISE] == "undecided"
