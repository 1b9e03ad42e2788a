# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Case study: is a more accurate multimodal teacher a better teacher? (MFH Section 3)
#
# MFH (ICLR 2023) opens with a counterexample on AV-MNIST (Table 1, detailed in Table 5 of
# Appendix B.1): an audio student (3-layer CNN) distilled from an image + audio late-fusion
# teacher (LeNet-5 + 5-layer audio CNN, features concatenated) is no better than one distilled
# from an audio-only teacher (6-layer CNN), although the multimodal teacher is 7 points more
# accurate. The student loss is MFH Eq. (1), ρ·CE + (1 − ρ)·KL, for ρ = 0 and 0.5.
#
# * **Data.** Default: `avmnist_mini`, AV-MNIST rebuilt from real sources only (3000 real MNIST
#   digits with 75% of their PCA energy removed, paired by class with the 3000 real recordings of
#   the Free Spoken Digit Dataset mixed with noise, 64 × 64 log-mel spectrograms; 2400 / 300 /
#   300 pairs; `docs/datasets.md` §8). Paper profile: AV-MNIST itself in the MultiBench layout
#   (`avmnist_root`), 55000 / 5000 / 10000 pairs.
# * **Networks** (registry, `cmkd.models.avmnist_cnn`): audio student `audio_cnn3`, audio teacher
#   `audio_cnn6`, multimodal teacher `fusion_concat` over `lenet5` and `audio_cnn5`; a `lenet5` on
#   the images alone gives the image modality's accuracy. The student's head reads its last
#   feature map flattened, as CentralNet's does (`student_grid` = the map's side; a global
#   average pool there, `student_grid = 1`, keeps 24 numbers and left the student near 25%).
# * **Training.** AdamW (constant learning rate), every job keeps its best-validation weights and
#   is scored on the test split there; early stopping after `patience` epochs without a
#   validation gain. Run r of every job shares its seed, so rows are paired by run. The jobs are
#   built by `cmkd.jobs.builders.Builder` and cached (`.cache/jobs`).
#
# The claim checked: the multimodal teacher is more accurate than the unimodal one, yet its
# student is not better than the unimodal-KD student.

# %% tags=["parameters"]
profile: str = "smoke"  # reports/<profile>/ receives figures and tables
seed: int = 0  # base seed of every run
n_runs: int = 1  # runs (seeds) of every job
dataset: str = "avmnist_mini"  # 'avmnist_mini' (embedded) or 'avmnist' (MultiBench layout, avmnist_root)
avmnist_root: str = ""  # folder of AV-MNIST (dataset 'avmnist' only)
avmnist_n_valid: int = 5000  # AV-MNIST: last training rows kept for validation (MultiBench: 5000)
speakers: str = "shared"  # avmnist_mini: speakers 'shared' across splits or 'disjoint'
per_class: int = 4  # avmnist_mini: the first pairs of each class of each split kept (0: all; quick checks)
student_grid: int = 8  # the audio student's pool before its head: a grid x grid average pool of its last map, flattened; the last map's side (input side / 8) is CentralNet's flatten (avmnist_mini 64 x 64: 8; AV-MNIST 112 x 112: 14), 1 a global average pool
rhos: list = [0.5]  # rho of MFH Eq. (1): weight of the cross entropy, 1 - rho that of the KL
temperature: float = 1.0  # KD softening temperature
teacher_epochs: int = 1  # most epochs of every teacher
epochs: int = 1  # most epochs of every student
patience: int = 0  # early stopping: epochs without validation gain (0: none)
batch_size: int = 256  # mini-batch size of every student
lr: float = 0.002  # AdamW learning rate (constant) of every student
teacher_batch_size: int = 256  # mini-batch size of the teachers and the image network (notebook 05's batch_size: its teacher and image network are then these jobs, trained once)
teacher_lr: float = 0.002  # AdamW learning rate (constant) of the teachers and the image network (notebook 05's lr, for the same sharing)
weight_decay: float = 0.0001  # AdamW weight decay
t7_dataset: str = "mvd"  # Table 7's data: 'mvd' (offline stand-in: MVD Gaussian data with multi-label targets) or 'mmimdb' (MM-IMDB, Arevalo's hdf5, mmimdb_root)
mmimdb_root: str = ""  # folder of MM-IMDB (t7_dataset 'mmimdb' only)
mmimdb_boundaries: list = [15552, 18160]  # MM-IMDB: first validation row and first test row of the file (Arevalo's split: 15552, 18160)
t7_runs: int = 1  # Table 7: runs (seeds) of every job
t7_overlap: int = 5  # Table 7 stand-in: decisive features the two modalities share, of 10 each (gamma: o / (20 - o))
t7_labels: int = 2  # Table 7 stand-in: binary labels (MFH: 2 genres)
t7_n_train: int = 100  # Table 7 stand-in: training items (half to the teachers, half to the student)
t7_n_val: int = 50  # Table 7 stand-in: validation items
t7_n_test: int = 100  # Table 7 stand-in: test items
t7_hidden: list = [16]  # Table 7: hidden widths of every MLP (MultiBench's text network: 512, 512)
t7_epochs: int = 1  # Table 7: most epochs of every job
t7_patience: int = 0  # Table 7: early stopping, epochs without a validation gain (0: none)
t7_batch_size: int = 64  # Table 7: mini-batch size
t7_lr: float = 0.001  # Table 7: AdamW learning rate
t7_pseudo_labels: str = "soft"  # Table 7: what the modality-specific teacher learns from the image network: 'soft' (its sigmoid outputs, binary KD with no label term) or 'hard' (those outputs thresholded at 0.5, a binary cross entropy on them)
processes: int = 1  # jobs trained at once in worker processes (1: one after the other in this process)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda or mps

# %%
# %matplotlib inline
import pandas as pd

from cmkd import params
from cmkd.experiments import case_studies as cs
from cmkd.reporting import Report

config = params.from_namespace(cs.Config, globals())
report = Report("04_case_studies", profile, "MFH case studies: Table 1 / Table 5 on AV-MNIST, "
                "Table 7 on MM-IMDB")
runs = cs.run(config)
curves = cs.histories(config)
print(f"{config.dataset}: {runs.attrs['jobs']} jobs, {config.n_runs} run(s), "
      f"{runs.attrs['n_test']} test pairs")

# %% [markdown]
# ## Each network on its own
# Test accuracy of the image network, the audio student trained without KD, the audio teacher
# and the multimodal teacher (MFH Table 5 publishes 68.36, 84.57 and 91.61 for the last three on
# AV-MNIST; it gives no image-only number).

# %%
display(report.save_table(cs.unimodal(runs), "case_unimodal", "test accuracy (%) of each "  # noqa: F821
                          "network trained alone, over runs", "MFH Table 5 (teachers, no KD)"))

# %% [markdown]
# ## Table 1 / Table 5
# Teacher and student accuracy (mean and std over runs) per ρ; the figure sets each student
# against its teacher.

# %%
display(report.save_table(cs.table5(runs), "case_table5", "UM-KD and CM-KD on AV-MNIST: "  # noqa: F821
                          "teacher and audio-student test accuracy (%)", "MFH Table 1, Table 5"))
fig = cs.plot_table5(runs)
print(report.save_figure(fig, "case_table5", "student vs teacher accuracy per rho",
                         "MFH Table 1, Table 5"))
fig

# %% [markdown]
# ## Learning curves
# Validation accuracy per epoch (mean over runs, ±1 std): the default profile trains every job
# until its validation accuracy has not improved for `patience` epochs (early stopping). The
# table counts, per job, the runs that the epoch cap ended while validation was still gaining
# (*not converged*): a claim resting on such runs is undecided whatever its interval.

# %%
fig_curves = cs.plot_curves(curves)
print(report.save_figure(fig_curves, "case_curves", "validation accuracy per epoch",
                         "MFH Table 5 (training)"))
display(report.save_table(cs.convergence(runs), "case_convergence", "epochs trained and "  # noqa: F821
                          "runs short of their plateau, per job", "MFH Table 5 (training)"))
fig_curves

# %% [markdown]
# ## Table 7: multi-label genre prediction (MFH Appendix B.3)
# MFH's second case: MM-IMDB, two genres (drama, comedy) as multi-label targets, a text student
# (ρ = 0) distilled from three teachers trained on one half of the training data (the student
# trains on the other half): a unimodal text teacher (UM-KD), a regular text + image teacher
# (Regular-KD) and a text + image teacher of the same architecture trained, as Xue et al.
# (2021) do, on the pseudo-labels of an image network (Modality-specific-KD: it leans towards
# the image, a smaller γ). MFH: the regular teacher's student is the best (65.09 micro F1,
# against 61.77 and 61.04), the three teachers being about as good.
#
# * **KD on multi-label targets.** Each label is a two-class problem of its own: the registry's
#   `kd` distils the teacher's sigmoid per label with the binary KL at temperature T
#   (`cmkd.distill.kd.binary_kd_loss`, summed over labels; the task loss is the binary cross
#   entropy). MFH gives no formula for it and its official code has no MM-IMDB part; this is the
#   usual per-label form. The pseudo-labels of the modality-specific teacher are the image
#   network's soft sigmoid outputs (KD with no label term; `t7_pseudo_labels: soft`). MFH says
#   only "pseudo labels"; `t7_pseudo_labels: hard` trains that teacher on the image network's
#   outputs thresholded at 0.5 instead (registry method `pseudo_label`, a binary cross entropy).
# * **Scores.** Micro and macro F1 from torchmetrics (`MultilabelF1Score`, threshold 0.5) on the
#   test split, at each job's best validation micro F1.
# * **Data.** Paper profile: MM-IMDB (`mmimdb_root`, Arevalo's hdf5: 300-d text and 4096-d VGG
#   features, MultiBench's MLPs). Default: an offline stand-in built from the **MVD generator**
#   (`cmkd.data.mvd`, option `multilabel`), chosen over `avmnist_mini` features because its
#   shared information is known by construction: the text vector x^b and the image vector x^a
#   observe 10 latent decisive features each, `t7_overlap` of them shared (γ = o / (20 − o)),
#   among noise channels, and each label is 1[⟨w_l, x*⟩ > 0]. Features of trained
#   `avmnist_mini` networks would carry an unknown share, and one-label digits are not
#   multi-label. Each run draws its own data.

# %%
t7 = cs.run7(config)
t7_curves = cs.t7_histories(config)
print(f"Table 7 on {config.t7_dataset}: {t7.attrs['jobs']} jobs, {config.t7_runs} run(s), "
      f"{t7.attrs['n_test']} test items")
display(report.save_table(cs.table7(t7), "case_table7", "teachers and text students: test "  # noqa: F821
                          "micro / macro F1 (%)", "MFH Table 7"))
fig_t7 = cs.plot_t7_curves(t7_curves)
print(report.save_figure(fig_t7, "case_table7_curves", "Table 7: validation micro F1 per epoch",
                         "MFH Table 7 (training)"))
display(report.save_table(cs.t7_convergence(t7), "case_table7_convergence", "Table 7: epochs "  # noqa: F821
                          "trained and runs short of their plateau", "MFH Table 7 (training)"))
fig_t7

# %% [markdown]
# ## Paper beside ours, and the claims
# MFH's numbers are AV-MNIST's and MM-IMDB's; on `avmnist_mini` and the MVD stand-in (default)
# they stand beside ours for orientation only (other data). Table 1 / 5 differences are paired
# by run, with the shared test set's sampling error from the per-item correctness; Table 7's
# are paired by run on micro and macro F1, both of which must agree (`cmkd.verdicts`). A part
# whose runs had not converged is undecided, and its evidence names them.

# %%
display(report.compare({config.dataset: cs.measured(runs),  # noqa: F821
                        config.t7_dataset: cs.measured7(t7)}))
report.claims(pd.concat([cs.claims(runs), cs.claims7(t7)], ignore_index=True))

# %% [markdown]
# **Reading.** The smoke profile (one run, one epoch, four pairs per class, ρ = 0.5 only) only
# checks that everything runs: no job can converge in one epoch, so every comparison is
# undecided. Read the
# default profile's report (`reports/default/REPORT.md`) and, for AV-MNIST itself, the paper
# profile's. An earlier default pooled the student's last map globally and stopped jobs after 3
# epochs without gain (at most 15): the students stayed at 17-37% (MFH: 68-70%), short of their
# plateau, and one UM-KD student stopped on a noisy validation curve, so its "NOT held" said more
# about training than about MFH. The student now reads its map flattened, as CentralNet's does
# (81% validation after 9 epochs for the no-KD student, measured), and every job trains until 3
# epochs bring no validation gain (students at most 30 epochs, teachers 15). The teachers and
# the image network train at batch 128 and lr 2e-3, notebook 05's settings, so 05 reads them
# from the cache; the KD students read their frozen teacher's features stored once per training
# item (`kd_nullified` keeping every channel: KD's loss) instead of a teacher forward on every
# batch. Measured on one thread, a KD epoch costs about 8 CPU s with the per-batch forward and
# about 6 with the stored features (plus about 13 s once per teacher and worker process);
# patience 3 instead of 4 and the teachers at batch 128 brought the eight Table 1 / 5 jobs from
# 116 to 99 epochs, about 810 -> 630 CPU s by estimate, and notebook 05 no longer trains its own
# teacher and image network (about 90 CPU s). README's notebook 04 paragraph has the run's time.
#
# Table 7 on the stand-in asks MFH's question where the answer is known by construction: the
# modality-specific teacher imitates an image network, so its soft labels rest on the image's
# decisive features, half of which (the image-specific ones, t7_overlap 5) the text student
# cannot see;
# the regular teacher uses both modalities' features; the unimodal teacher uses exactly the
# student's. MFH's ordering (regular best) is therefore expected against the modality-specific
# teacher, while against the unimodal text teacher, which already attends only to what the
# student sees, the stand-in gives it no built-in advantage. The verdicts say what the runs show.
