# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · MVD synthetic sweeps: MFH Fig. 2 (vary γ) and Fig. 3 (vary α)
#
# The modality focusing hypothesis (MFH, Xue et al., ICLR 2023) says crossmodal KD helps in
# proportion to γ, the share of *modality-general* decisive features among all decisive features.
# This notebook regenerates the paper's two synthetic illustrations (Appendix B.2, Eq. 27):
#
# * **Fig. 2, vary γ**: x^a is 25-d, x^b is 50-d, each observes 10 of d = 20 latent decisive
#   features, and they share 0, 2, ..., 10 of them, so γ = 0, 0.11, 0.25, 0.43, 0.67, 1.
# * **Fig. 3, vary α**: both 50-d; x^b observes 10 decisive features, x^a the same 10 plus 0-40
#   more, so β = 0 and α = 0, 0.5, 0.67, 0.75, 0.8.
#
# Teacher (on x^a), no-KD student and KD student (both on x^b) are logistic regressions trained
# full-batch with SGD (lr 0.1, 1000 epochs in the paper profile) on 200 samples and tested on 1000.
# The KD student minimises Eq. (1), ρ·CE + (1-ρ)·KL, times `loss_scale`: at ρ = 0.5 and
# `loss_scale` = 2 that is the official code's CE weight 1 + KL weight 1.
#
# **Where we depart from the official code**
# ([`docs/official_code_audit.md`](../docs/official_code_audit.md)): the KL term
# is the KL divergence (`kl_reduction = "batchmean"`); the official `nn.KLDivLoss()` default
# (`"mean"`) also divides by the number of classes, i.e. halves the KD weight here. Both are
# available; the last section shows how much the choice moves the numbers. All runs of all
# settings of one phase train together in one batched tensor program (`cmkd.mfh.logistic`).
#
# The stored outputs come from the smoke profile (few runs, few epochs); `cmkd reproduce` runs the
# default and paper profiles and writes `reports/<profile>/`.

# %% tags=["parameters"]
profile: str = "smoke"  # reports/<profile>/ receives figures and tables
seed: int = 0  # base seed of every draw
n_runs: int = 3  # independent runs per setting (paper: 10)
epochs: int = 300  # full-batch SGD steps per model (paper: 1000)
lr: float = 0.1  # SGD step size
n_train: int = 200  # training samples per run
n_test: int = 500  # test samples per run (paper: 1000)
rho: float = 0.5  # weight of the task loss in Eq. (1)
loss_scale: float = 2.0  # factor on Eq. (1); 2 at rho 0.5 gives the official CE 1 + KL 1
temperature: float = 1.0  # KD temperature
kl_reduction: str = "batchmean"  # 'batchmean' (KL divergence) or 'mean' (official: KL / classes)
gammas: list = [0.0, 0.11, 0.25, 0.43, 0.67, 1.0]  # Fig. 2 settings
alphas: list = [0.0, 0.5, 0.67, 0.75, 0.8]  # Fig. 3 settings
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda or mps

# %%
# %matplotlib inline
from dataclasses import replace

from cmkd import params
from cmkd.experiments import mvd_sweeps
from cmkd.reporting import Report

config = params.from_namespace(mvd_sweeps.Config, globals())
report = Report("01_mvd_synthetic_sweeps", profile, "MFH Fig. 2 and Fig. 3 (MVD synthetic sweeps)")
runs = mvd_sweeps.run(config)
print(f"{len(runs)} runs: {runs.sweep.nunique()} sweeps, {runs.groupby('sweep').gamma.nunique().sum()} "
      f"settings, {config.n_runs} runs each, 3 models per run")

# %% [markdown]
# ## Fig. 2: crossmodal KD becomes effective as γ grows
# Left: accuracy with ±1 std bands over runs. Right: the KD student's gain over the no-KD
# student, per run and on average; the star is the paper's +2.1 points at γ = 1.

# %%
fig2 = mvd_sweeps.plot_sweep(runs, "gamma")
print(report.save_figure(fig2, "mfh_fig2_vary_gamma",
                         "teacher, no-KD and KD student accuracy vs gamma", "MFH Fig. 2"))
fig2

# %% [markdown]
# ## Fig. 3: a better teacher (larger α) does not make a better student

# %%
fig3 = mvd_sweeps.plot_sweep(runs, "alpha")
print(report.save_figure(fig3, "mfh_fig3_vary_alpha",
                         "teacher, no-KD and KD student accuracy vs alpha", "MFH Fig. 3"))
fig3

# %% [markdown]
# ## The numbers behind both figures
# Accuracies in percent; mean and standard deviation over runs; gain = KD − no-KD.

# %%
report.save_table(mvd_sweeps.summarize(runs), "mfh_fig2_fig3_summary",
                  "MFH Fig. 2 and Fig. 3: accuracy (%) per setting, mean and std over runs",
                  "MFH Fig. 2, Fig. 3")

# %% [markdown]
# ## The official code's KL reduction
# The same runs with `kl_reduction = "mean"` (the official script's `nn.KLDivLoss()` default),
# everything else equal: with two classes it halves the weight of the KD term.

# %%
official = mvd_sweeps.run(replace(config, kl_reduction="mean"))
report.save_table(mvd_sweeps.compare_gains(runs, official, ("batchmean", "mean")),
                  "mfh_fig2_fig3_kl_reduction",
                  "KD gain (points) with the KL divergence ('batchmean') and the official 'mean'",
                  "MFH Fig. 2, Fig. 3 (official-code option)")

# %% [markdown]
# ## Paper beside ours, and the paper's claims checked
# The paper publishes one number for these figures (the gain at γ = 1); it was produced with the
# official code, so both of our variants stand beside it. Its qualitative claims are scored on
# all runs of the main variant by the rule of `cmkd.verdicts`: a trend "rises" (*held*) when the
# 95% interval of the least-squares slope over runs lies above zero, *NOT held* when it lies
# below, *undecided* when it straddles zero; "does not rise" is held when the slope's interval
# stays under a margin of 2 points per unit α; "varies less" compares the ranges of the means
# with a seeded bootstrap over runs. Each run draws its own test set, so the spread over runs
# already holds the test-sampling error.

# %%
report.compare({f"kl_reduction={config.kl_reduction}": mvd_sweeps.measured(runs),
                "kl_reduction=mean (official code)": mvd_sweeps.measured(official)})

# %%
report.claims(mvd_sweeps.claims(runs))

# %% [markdown]
# **Reading.** In the paper and here, the KD student's gain grows with γ: a teacher whose
# decisive features the student also sees teaches it something, one relying on features the
# student cannot see does not (the gain is negative at γ = 0). Along α the teacher improves
# steadily while the student's gain does not follow. The smoke profile's few runs and epochs make
# its numbers noisy; the default and paper profiles use the paper's settings. On the default
# profile three claims hold on their intervals (gain slope along γ +6.4 [+5.2, +7.7] points per
# unit γ; teacher along α +31.5 [+25.4, +37.5]; gain along α -2.2 [-3.0, -1.4], under the
# 2-point margin), and "the teacher varies less with γ than the KD student" is *undecided*: the
# difference of the ranges of the means, +2.4 [-3.3, +7.9] points, is within the noise of a few
# runs per γ.
