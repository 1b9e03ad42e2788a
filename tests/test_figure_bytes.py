"""Committed figures must not depend on the last bits of floating-point arithmetic: the figures
that plot rounding-noise-level quantities (MFH Lemma 1's relative error, Theorem 4.1's risks
after the flow) come out byte-identical with different BLAS / torch thread counts."""
import hashlib
import os
import subprocess
import sys

import numpy as np

from cmkd.reporting import plotted

SCRIPT = r"""
import hashlib, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
from cmkd.experiments import theorem41 as t41
from cmkd.params import load_params
from cmkd.reporting import figure_bytes
config = load_params(sys.argv[2], t41.Config)
lemma = t41.lemma1_check(config)
runs = t41.run(config)
for fig in (t41.plot_lemma1(lemma), t41.plot_empirical(runs)):
    for fmt in ("png", "svg"):
        print(hashlib.sha256(figure_bytes(fig, fmt)).hexdigest())
"""


def _digests(root, threads: int) -> list[str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads),
                          str(root / "params/smoke/03_theorem_4_1.yaml")], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert len(out) == 4
    return out


def test_noise_level_figures_do_not_depend_on_thread_counts(root):
    assert _digests(root, 1) == _digests(root, 2)


def test_plotted_rounds_to_significant_digits_and_floors():
    x = np.array([1.234567e-15, 0.0123456, -98765.4, 0.0, np.inf, np.nan])
    out = plotted(x, digits=3)
    np.testing.assert_array_equal(out[:5], [1.23e-15, 0.0123, -98800.0, 0.0, np.inf])
    assert np.isnan(out[5])
    # values a last bit apart land on the same drawn value
    a = 0.1 + 0.2
    assert plotted([a])[0] == plotted([0.3])[0]
    np.testing.assert_array_equal(plotted([3e-16, 2e-3], 2, floor=1e-12), [1e-12, 2e-3])


def test_plotted_keeps_the_hash_of_an_unchanged_value():
    h = hashlib.sha256(plotted(np.linspace(0, 1, 11)).tobytes()).hexdigest()
    assert h == hashlib.sha256(np.round(np.linspace(0, 1, 11), 12).tobytes()).hexdigest()
