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
# # 02 · Modality-general teachers: MFH Table 2 and Algorithm 1
#
# MFH's implication (Sec. 4.3): a teacher that relies on *modality-general* decisive features
# teaches a crossmodal student better, even when it is a worse teacher. Table 2 tests it on MVD
# synthetic data (Sec. 5.2, Appendix B.2) in the setting of the official
# `gauss/main_modify_gamma.py`: x^a and x^b are both 50-d; x^a observes `xs1 + xs2` decisive
# features (all-ones separating hyperplane), x^b the first `xs2` of them, so
# γ = xs2 / (xs1 + xs2) and β = 0. With xs1 = 10 and xs2 = 5 ... 30, γ runs from 0.33 to 0.75.
#
# Per run, four logistic-regression teachers on x^a:
# **regular** (all 50 channels), **ground truth** (only the `xs2` truly shared channels: the
# paper's modality-general teacher), **random** (`xs2` channels drawn without replacement) and
# **Algorithm 1** (the `xs2` channels that MFH's Algorithm 1 ranks most salient, Appendix B.4).
# Each distils into an x^b student with Eq. (1) (CE 1 + KL 1), and a no-KD student is the
# baseline. Teachers and Algorithm 1 use one draw of data, students a second draw (as the
# official script's `use_unlabeled`), and all are tested on a third.
#
# **Algorithm 1** trains an x^a network and an x^b network jointly with Eq. (28)
# (MSE between their logits + both CEs; SGD lr 0.01, momentum 0.9), then permutes each channel of
# x^a across samples M times and measures how far the x^a network's output moves from the x^b
# network's (`cmkd.mfh`, vectorised over channels and permutations).
#
# **Where we depart from the official code**
# ([`docs/official_code_audit.md`](../docs/official_code_audit.md)):
# (1) its regular-KD baseline swaps the modalities (the teacher is fed x^b, the student trains on
# x^a and is tested on x^b); we train it correctly and show the swapped baseline beside it in its
# own section; (2) the KL term is the KL divergence (`kl_reduction = "batchmean"`; the official
# `"mean"` halves it with two classes; a section reruns everything with `"mean"`); (3) random
# channels are drawn without replacement (the official `np.random.randint` can repeat a channel:
# `random_with_replacement = True`); (4) every teacher trains on the teachers' draw (the official
# script trains the modality-general teachers on the students' draw:
# `general_teacher_draw = "students"`); a section reruns everything with (3) and (4) official;
# (5) Algorithm 1's salience is divided by its maximum (the paper's step 9; the official script
# min-max normalises, which ranks the channels identically).
#
# The stored outputs come from the smoke profile; `cmkd reproduce` runs the default and paper
# profiles (both the official settings: 10 runs, 1000 epochs, M = 100).

# %% tags=["parameters"]
profile: str = "smoke"  # reports/<profile>/ receives figures and tables
seed: int = 42  # base seed of every draw (official: 42)
n_runs: int = 3  # independent runs per setting (paper: 10)
epochs: int = 300  # full-batch SGD steps per teacher and student (paper: 1000)
lr: float = 0.1  # SGD step size of teachers and students
n_train: int = 200  # samples per training draw
n_test: int = 500  # test samples per run (paper: 1000)
rho: float = 0.5  # weight of the task loss in Eq. (1)
loss_scale: float = 2.0  # factor on Eq. (1); 2 at rho 0.5 gives the official CE 1 + KL 1
temperature: float = 1.0  # KD temperature
kl_reduction: str = "batchmean"  # 'batchmean' (KL divergence) or 'mean' (official: KL / classes)
xs1: int = 10  # decisive channels only x^a observes
xs2: list = [5, 10, 30]  # settings: decisive channels shared by x^a and x^b (paper: 5 to 30)
alg1_epochs: int = 300  # Algorithm 1 joint-training steps of Eq. (28) (paper: 1000)
alg1_lr: float = 0.01  # Algorithm 1 SGD step size
alg1_momentum: float = 0.9  # Algorithm 1 SGD momentum
permutations: int = 20  # Algorithm 1 permutations M per channel (paper: 100)
general_teacher_draw: str = "teachers"  # training draw of gt, random, alg1 (official: students)
random_with_replacement: bool = False  # random channels with replacement (official: True)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda or mps

# %%
# %matplotlib inline
from dataclasses import replace

from cmkd import params
from cmkd.experiments import modality_general as mg
from cmkd.reporting import Report

config = params.from_namespace(mg.Config, globals())
report = Report("02_modality_general_teacher", profile,
                "MFH Table 2 (modality-general teachers) and Algorithm 1 on MVD synthetic data")
runs = mg.run(config)
print(f"{runs.xs2.nunique()} settings x {config.n_runs} runs; per run: Algorithm 1, "
      f"{len(mg.TEACHERS)} teachers, 1 no-KD and {len(mg.STUDENTS)} KD students")

# %% [markdown]
# ## Algorithm 1 finds the shared channels
# Recovery rate: the fraction of the `xs2` channels of x^a that Algorithm 1 ranks most salient
# which are truly shared with x^b (chance: xs2 / 50).

# %%
report.save_table(mg.recovery(runs), "mfh_alg1_recovery",
                  "Algorithm 1 recovery rate of the shared channels per setting (mean, std, min "
                  "over runs) and chance", "MFH Algorithm 1")

# %%
fig = mg.plot_salience(runs)
print(report.save_figure(fig, "mfh_alg1_salience",
                         "Algorithm 1 salience of each channel of x^a, mean over runs",
                         "MFH Algorithm 1"))
fig

# %% [markdown]
# The shared channels stand out; x^a's own decisive channels (blue) get less salience because
# permuting them moves the x^a network away from the x^b network less than permuting a shared
# one, and noise channels get almost none.

# %% [markdown]
# ## Table 2, ours
# Accuracy in percent, mean and std over runs. `teacher_delta` and `student_delta` are paired per
# run against the regular teacher and its (correct) KD student.

# %%
report.save_table(mg.summarize(runs), "mfh_table2",
                  "MFH Table 2: teacher and KD-student accuracy (%) per teacher kind, with "
                  "deltas against the regular teacher (mean and std over runs)", "MFH Table 2")

# %%
fig = mg.plot_table2(runs)
print(report.save_figure(fig, "mfh_table2", "teacher and student accuracy vs gamma per teacher "
                         "kind, with the paper's Table 2", "MFH Table 2"))
fig

# %% [markdown]
# ## The official code's KL reduction
# The same runs with `kl_reduction = "mean"` (the official `nn.KLDivLoss()` default, which halves
# the KD term with two classes), everything else equal.

# %%
official = mg.run(replace(config, kl_reduction="mean"))
report.save_table(mg.compare_variants(runs, official, ("batchmean", "mean")),
                  "mfh_table2_kl_reduction",
                  "Regular-KD gain over no-KD and modality-general students' advantage over "
                  "regular KD (points) with the KL divergence ('batchmean') and the official "
                  "'mean'", "MFH Table 2 (official-code option)")

# %% [markdown]
# ## The official code's teacher draw and random channels
# One rerun with the official script's two other behaviours, everything else equal: the
# ground-truth, random and Algorithm 1 teachers train on the students' draw
# (`general_teacher_draw = "students"`: the very samples their students then distil on), and the
# random teacher's channels are drawn with replacement (`random_with_replacement = True`: it keeps
# `xs2` inputs, some of them the same channel). The regular teacher, the no-KD and the regular-KD
# students do not change, so the ground-truth and Algorithm 1 columns move by the draw alone and
# the random column by both.

# %%
official_draws = mg.run(replace(config, general_teacher_draw="students",
                                random_with_replacement=True))
report.save_table(mg.compare_variants(runs, official_draws, ("ours", "official"),
                                      kinds=("gt", "random", "alg1")),
                  "mfh_table2_teacher_draw",
                  "Regular-KD gain over no-KD and the students' advantage over regular KD "
                  "(points) of the ground-truth, random and Algorithm 1 teachers: ours (teachers' "
                  "draw, random channels without replacement) and the official script's "
                  "(students' draw, with replacement)", "MFH Table 2 (official-code options)")

# %%
drawn = official_draws[official_draws.teacher == "random"].groupby("xs2")
print("random teacher with replacement, distinct channels of xs2 (mean over runs): "
      + ", ".join(f"{xs2}: {d:.1f}" for xs2, d in drawn.distinct.mean().items()))

# %% [markdown]
# ## The paper's Table 2, and ours beside it
# The paper prints three rows (γ = 0.25, 0.5, 0.75); the official script's sweep (xs1 = 10)
# reaches γ = 0.5 (xs2 = 10) and γ = 0.75 (xs2 = 30) but not 0.25 (that needs xs2 = 3.3), so the
# γ = 0.25 row has nothing of ours beside it. The paper's modality-general teacher is the
# ground-truth one. Our regular-KD student is shown twice: trained correctly, and as the
# official script's swapped baseline; and all of it again with the official KL reduction, and
# with the official teacher draw and random channels.

# %%
mg.paper_table()

# %%
report.compare({f"kl_reduction={config.kl_reduction}, correct modalities": mg.measured(runs),
                f"kl_reduction={config.kl_reduction}, official swapped regular-KD baseline":
                    mg.measured(runs, swapped=True),
                "kl_reduction=mean (official code), correct modalities": mg.measured(official),
                "kl_reduction=mean (official code), swapped regular-KD baseline":
                    mg.measured(official, swapped=True),
                "general teachers on the students' draw, random channels with replacement "
                "(official code)": mg.measured(official_draws)})

# %% [markdown]
# ## The paper's claims, checked
# Over all runs, paired against the regular teacher: the teacher's accuracy change must be
# negative and its student's change positive, each scored on its paired 95% interval
# (`cmkd.verdicts`: *held* when the interval lies on the claim's side of zero, *NOT held* when on
# the other, *undecided* when it straddles); both parts must hold, and "loses more than 10
# points" must hold at every γ.

# %%
report.claims(mg.claims(runs))

# %% [markdown]
# ## The official script's swapped-modality regular-KD baseline
# The official `run()` calls `train_kd(x2_train, x1_train, ...)` for regular KD: the teacher,
# trained on x^a, is fed x^b, and the student trains on x^a while being tested on x^b. With both
# modalities 50-d this runs silently. Below, the correct regular-KD student beside the swapped
# one (same runs, same teacher), and how much the swap moves the modality-general students'
# advantage over regular KD (`*_advantage` against the correct baseline, `*_vs_swapped` against
# the swapped one).

# %%
report.save_table(mg.swapped_effect(runs), "mfh_table2_swapped_baseline",
                  "Regular-KD student accuracy (%): correct vs the official swapped-modality "
                  "baseline, and the modality-general students' advantage against each",
                  "MFH Table 2 (official-code defect)")

# %% [markdown]
# **Reading.** The modality-general teachers (ground truth and Algorithm 1 channels) lose ~10-20
# points of teacher accuracy against the regular teacher, yet their students beat the regular-KD
# student by a few points at every γ (on the default profile both parts hold on their paired
# intervals; "loses more than 10 points at every γ" is *undecided*: at γ = 0.71 the loss is
# -10.5 [-11.7, -9.3] points, its interval straddling the 10-point threshold); the random-channel teacher, as weak or weaker, does not
# help its student. This is the paper's Table 2 claim, and Algorithm 1 recovers the shared channels
# almost perfectly on these data, so its teacher matches the ground-truth one. The swapped
# baseline of the official script moves the regular-KD student by up to about two points, in
# either direction depending on the setting. In the default and paper profiles (10 runs), the
# official KL reduction (`"mean"`) shrinks the modality-general students' advantage from about 3
# to about 2 points, the size the paper reports ("~ +2%"). The official teacher draw shrinks it
# too, more as γ grows (default profile: ground-truth advantage 3.3, 3.1, 2.4, 3.0, 3.1, 2.5
# points ours against 2.7, 2.6, 2.1, 1.8, 1.3, 0.6 official, γ = 0.33 ... 0.75; Algorithm 1
# alike), plausibly because a teacher fitted to the very samples its student distils on passes
# on little beyond their labels. With it the ground-truth KD student lands within 1.5 points of
# the paper's (71.7 and 78.3 against 70.25 and 77.70 at γ = 0.5 and 0.75; ours 72.2 and 80.2).
# Drawn with replacement, the random teacher keeps fewer distinct channels (22.4 of 30 on
# average at xs2 = 30) and still does not help its student. The smoke profile's few runs and epochs make all of its numbers noisy.
