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
# # 08 · γ meets C2KD: crossmodal KD methods on K-class MVD data (beyond both papers)
#
# MFH (ICLR 2023) says crossmodal KD works in proportion to γ, the share of modality-general
# decisive features. C2KD (CVPR 2024) says it fails because the two modalities' soft labels are
# *misaligned*, and filters samples by the Kendall rank correlation (KRC) of teacher and student
# logits (Eq. 3, 4), distils only the non-target classes, and lets teacher and student (through
# proxy heads) adapt to each other (Eq. 6). Neither paper links the two. Here both meet on
# synthetic data where γ is known:
#
# * **Data**: MVD with K classes, the decision rule of MFH Eq. (3), `y = argmax(W x*)`, in the
#   layout of MFH Fig. 2: x^a (25-d) and x^b (50-d) each observe 10 of 20 latent decisive
#   features and share o of them, γ = o / (20 − o). The teacher's and the student's information
#   are fixed; only what they share moves, so the teacher's accuracy stays flat across γ.
# * **Models**: two-hidden-layer MLPs; teacher on x^a, students on x^b, SGD (momentum 0.9, poly
#   decay as in C2KD), no validation split (the scores are the last epoch's).
# * **Methods**: no KD; offline from the fixed teacher: KD (Hinton), DKD (α 1, β 8, T 4, warm-up
#   over the first 10% of epochs), DIST, NKD, FitNet (hint on the last hidden layer); online: DML;
#   C2KD and the ablations of its Table 5 (BD, NT+BD, OFS+BD, OFS+NT+BD without proxies) and its
#   Table 3 variant with only the teacher's top layer updated. C2KD follows the paper: target class
#   removed, KL averaged over the kept samples, ω strict (`cmkd.distill.c2kd`). **Where the
#   official code departs** ([`docs/official_code_audit.md`](../docs/official_code_audit.md)):
#   its non-target KL zeroes the target logit (the softmax still covers all K classes) and
#   averages the masked KL over the whole batch; that variant runs too ("C2KD, official code's
#   NT-KL", dotted), so its effect on the numbers is visible beside the paper's.
# * **Code**: the same engine as notebook 06. Every method is an object of the method registry
#   `cmkd.methods` (the C2KD ablations are its presets), its hyperparameters set by the params
#   file's `method_hparams`; the runs are jobs of `cmkd.jobs` (one teacher job, one student job per
#   method, cached in `.cache/jobs`), each a *stack* of every (γ, run): the 30 MLPs of the default
#   profile train at once as grouped layers through the one training loop `cmkd.engine.fit`,
#   which sums their losses so that each run's gradient is its own.
# * **What moved when this notebook moved onto jobs** (the numbers differ from the previous
#   report's, by design; the data draws are the same): run r of every method now starts from the
#   same student initialisation and sees the same batch order (the job's seeds), where each
#   method used to draw its own. The methods are compared on identical runs, which is what the
#   per-run gain panel below assumes, and two methods with the same objective now give the same
#   numbers: DML and C2KD's "BD only" (both train student and teacher on CE + KL towards each
#   other at T = 1) agree to the last digit, a check of both implementations. On the default
#   profile the means over runs moved by 0.4 points on average and by 1.3 at most (DKD at γ = 0),
#   against a spread over runs of about 3.5 points; every claim below held as before under the
#   earlier held / NOT held scoring. Under the verdict rule (95% intervals), "teacher accuracy
#   shows no trend" is *undecided* on the default profile (slope -1.1 [-6.5, +4.3] points per
#   unit γ: no trend is visible, but the interval is wider than the ±3-point margin); the other
#   five hold.
#
# Questions: does KD's gain rise with γ (MFH, now with K classes and MLPs)? Does the KRC filter keep
# more samples as γ grows (the link between the two papers)? Is C2KD's advantage over KD largest
# where γ is small? There are no published numbers for this notebook: it goes beyond both papers.

# %% tags=["parameters"]
profile: str = "smoke"  # reports/<profile>/ receives figures and tables
seed: int = 0  # base seed of every draw
n_runs: int = 2  # independent runs per gamma
gammas: list = [0.0, 0.43, 1.0]  # gamma values (MFH Fig. 2 layout)
classes: int = 5  # number of classes K of the MVD data
n_train: int = 600  # training samples per run
n_test: int = 1000  # test samples per run
hidden: int = 32  # width of the two hidden layers of every MLP
teacher_epochs: int = 15  # epochs of the teacher's training
epochs: int = 15  # epochs of each student's training
batch_size: int = 128  # mini-batch size
lr: float = 0.05  # SGD learning rate (momentum 0.9, poly decay)
method_hparams: dict = {"kd": {"temperature": 1.0}, "dml": {"temperature": 1.0}, "dkd": {"warmup_epochs": 1}, "fitnet": {"feat_weight": 1.0}, "c2kd": {"omega": 0.0}}  # hyperparameters per method or preset over the registry's defaults
methods: list = ["nokd", "kd", "dkd", "dist", "nkd", "fitnet", "dml", "c2kd", "c2kd_top1", "c2kd_official", "c2kd_noproxy", "c2kd_bd_nt", "c2kd_bd_ofs", "c2kd_bd"]  # methods to train
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda or mps

# %%
# %matplotlib inline
from cmkd import params
from cmkd.experiments import gamma_c2kd
from cmkd.reporting import Report

config = params.from_namespace(gamma_c2kd.Config, globals())
report = Report("08_gamma_meets_c2kd", profile, "gamma meets C2KD: KD methods on K-class MVD data")
runs = gamma_c2kd.run(config)
print(f"{runs.method.nunique()} methods x {runs.gamma.nunique()} gammas x {config.n_runs} runs, "
      f"{config.classes} classes")

# %% [markdown]
# ## Student accuracy vs γ, per method
# Mean over runs with ±1 std bands. Left: the baselines (and C2KD); right: C2KD's ablations,
# with no-KD and KD dashed for reference.

# %%
fig_acc = gamma_c2kd.plot_accuracy(runs)
print(report.save_figure(fig_acc, "gamma_c2kd_accuracy", "student accuracy vs gamma per method",
                         "beyond both papers (MFH Fig. 2 x C2KD Table 3, 5)"))
fig_acc

# %%
report.save_table(gamma_c2kd.summarize(runs), "gamma_c2kd_accuracy",
                  "student test accuracy (%) per method and gamma, mean and std over runs",
                  "beyond both papers")
report.save_table(gamma_c2kd.per_run(runs), "gamma_c2kd_accuracy_per_run",
                  "student test accuracy (%) of every run, per method and gamma",
                  "beyond both papers")

# %% [markdown]
# ## The KRC filter and γ
# Left: the fraction of test samples whose teacher and no-KD student logits have KRC > ω (how
# much C2KD's filter would keep before any distillation), and the fraction C2KD's filter kept
# between its proxies in the last epoch. Right: C2KD's accuracy minus KD's, per run.

# %%
fig_align = gamma_c2kd.plot_alignment(runs)
print(report.save_figure(fig_align, "gamma_c2kd_krc_keep", "KRC keep fraction and C2KD minus KD "
                         "vs gamma", "beyond both papers (C2KD Eq. 4 x MFH gamma)"))
fig_align

# %%
report.save_table(gamma_c2kd.alignment(runs), "gamma_c2kd_alignment",
                  "per gamma: teacher accuracy, KRC and keep fraction before KD, C2KD keep "
                  "fraction at the end, C2KD minus KD, KD minus no-KD", "beyond both papers")

# %% [markdown]
# ## The questions, checked
# A trend "rises" ("falls") is *held* when the 95% interval of the least-squares slope over all
# runs lies above (below) zero, *NOT held* when it lies on the other side, *undecided* when it
# straddles zero (`cmkd.verdicts`); "no trend" is held when the interval stays within ±3 points
# per unit γ. No paper publishes numbers for this setting, so there is no paper-beside-ours
# table here.

# %%
report.claims(gamma_c2kd.claims(runs))

# %% [markdown]
# **Reading.** The smoke profile's two runs per γ only check that everything runs; read the
# default profile's report (5 runs per γ). There, KD's gain over no KD rises with γ as MFH predicts
# (it is negative where the teacher's decisive features are invisible to the student), and the
# share of samples whose soft labels pass the KRC filter rises with γ: KRC acts as a per-sample
# proxy of the modality-general information that MFH's γ measures. C2KD's advantage over KD is
# largest at small γ, but mostly because it avoids KD's loss there (its filter drops the
# misaligned samples, and teacher and student adapt to each other): its gain over no KD is small
# at every γ. At γ = 1, where plain KD already helps, full C2KD is no better than KD. Among the
# ablations, non-target distillation with both sides updated (NT+BD) carries most of the effect;
# the KRC filter without it (OFS+BD) adds little over bidirectional KD (BD only), and the official
# code's non-target KL gives about the same numbers as the paper's. DKD, whose β = 8 amplifies the
# non-target term towards a misaligned teacher, suffers most at small γ.
