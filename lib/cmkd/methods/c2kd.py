"""C2KD: customized crossmodal knowledge distillation (Huo et al., CVPR 2024), Eq. (6).

``CE(S) + CE(T) + l1 [D(T, T^pro) + D(T^pro, T)] + l2 [D(S, S^pro) + D(S^pro, S)]
+ l3 eta [D(S^pro\\t, T^pro\\t) + D(T^pro\\t, S^pro\\t)]`` (:func:`cmkd.distill.c2kd_loss`), every
module a switch (Table 5):

* ``bd`` bidirectional distillation: the teacher trains (CE(T), the teacher-directed terms) in
  full (``teacher_update='all'``, Table 3's Ours-double-dagger) or in its top
  ``teacher_top_k`` blocks (``'top_k'``, 2: Table 3's Ours-dagger).  ``bd=False`` is one-way KD
  from a frozen teacher (Table 5 row a) and requires ``teacher_update='frozen'``.
* ``ofs`` on-the-fly selection (Eq. 4): a sample is distilled only when ``filter`` (KRC, or
  Fig. 4's cosine / Pearson / gradient cosine; 'none' keeps all) exceeds ``omega``.
* ``nt`` non-target distillation: the target class removed from both sides (the official code's
  ``target_mode='zero'`` sets its logit to 0 instead).
* ``proxy`` the dual proxies (Eq. 5): :class:`cmkd.models.proxy.ProxyHead` on each side's
  ``proxy_feature`` (default 'layer3', the ResNet-18 map the official code reads; models without
  a 'layer3' use 'pooled'), built from the models' ``feature_shapes``; with ``runs``
  its stacked form (``cmkd.models.stacked``) seeded from ``run_seeds()`` (the teacher's + 11).
* ``base`` the divergence of the crossmodal term: 'kl' (C2KD), 'dist' or 'nkd' (Fig. 5).

The official code's variant is ``target_mode='zero', average='batch'`` (the masked KL averaged
over the whole batch); the paper's reading is the default.  Named presets of the ablations are in
:data:`C2KD_PRESETS` (``cmkd.methods.build('c2kd_bd', ...)`` resolves them).

Diagnostics per step: ``keep`` (the fraction of samples the filter kept) and
``n_krc_below_omega`` (the samples whose KRC between the two sides the filter reads - the
proxies, or the models' logits without proxies - is not above omega: C2KD Fig. 3; the KRC
whatever the filter).

Segmentation (dense student and teacher, :mod:`cmkd.models.deeplab`): each proxy is per pixel
(:class:`cmkd.models.proxy.DenseProxyHead` on the 'decoder' map when ``proxy_feature`` is left at
'layer3'), upsampled to the labels; every pixel with a label is a sample of Eq. (6): the KRC
filter scores each pixel's class ranking, the non-target KL is per pixel, and every term is
averaged over the labelled (for the crossmodal term: kept) pixels of the whole batch
(:mod:`cmkd.distill.dense`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cmkd import models
from cmkd.distill import c2kd_loss
from cmkd.distill.c2kd import BASES, DIST_COLUMNS, FILTERS
from cmkd.methods.base import (
    TEACHER_UPDATES,
    Method,
    model_feature_shapes,
    pool_features,
    register,
    resolve_feature,
)
from cmkd.methods.layers import dense_head_logits, is_dense_model
from cmkd.metrics.krc import kendall_tau
from cmkd.params import ParamError, spec

#: Named ablations (hyperparameters over the defaults): Table 5's rows, Table 3's teacher
#: updates, the official code's variant, Fig. 4's filters and Fig. 5's stages.  Notebooks name
#: their rows by these (notebook 06's tables, notebook 08's ``C2KD_VARIANTS``).
C2KD_PRESETS: dict[str, dict] = {
    # Table 5 row (d) / Table 3 Ours-double-dagger: proxy + OFS + NT + BD, teacher fully updated
    "c2kd": {},
    # Table 3 Ours-dagger: the teacher's top 2 blocks fine-tuned
    "c2kd_partial": {"teacher_update": "top_k", "teacher_top_k": 2},
    # notebook 08: the teacher's top layer only
    "c2kd_top1": {"teacher_update": "top_k", "teacher_top_k": 1},
    # the official code's non-target KL: target logit zeroed, masked mean over the batch
    "c2kd_official": {"target_mode": "zero", "average": "batch"},
    # the documented choices one at a time (docs/official_code_audit.md): the masked KL
    # averaged over the whole batch; the target logit zeroed instead of removed
    "c2kd_batchmean": {"average": "batch"},
    "c2kd_bd_ofs_batchmean": {"proxy": False, "nt": False, "average": "batch"},
    "c2kd_bd_nt_zeroed": {"proxy": False, "ofs": False, "target_mode": "zero"},
    # the control: proxies and bidirectional updates without the crossmodal term (lambda3 0):
    # what remains is self-distillation through each model's own proxy
    "c2kd_nocross": {"lambda3": 0.0},
    # Table 5 row (c): OFS + NT + BD
    "c2kd_noproxy": {"proxy": False},
    # Table 5: NT + BD, OFS + BD
    "c2kd_bd_nt": {"proxy": False, "ofs": False},
    "c2kd_bd_ofs": {"proxy": False, "nt": False},
    # Table 5 row (b): BD only (bidirectional KD)
    "c2kd_bd": {"proxy": False, "ofs": False, "nt": False},
    # (Table 5 row (a), one-way KD from a frozen teacher, is the registry's 'kd': CE + KL at
    # T = 1, the same objective as C2KD with every module off)
    # Fig. 4: the other filters, and no selection
    "c2kd_cosine": {"filter": "cosine"},
    "c2kd_pearson": {"filter": "pearson"},
    "c2kd_gradcos": {"filter": "gradcos"},
    "c2kd_noselect": {"ofs": False},
    # Fig. 5: the modules plugged into DIST and NKD: + BD, + BD + OFSD, + BD + OFSD + proxies
    "c2kd_dist_bd": {"base": "dist", "proxy": False, "ofs": False, "nt": False},
    "c2kd_dist_noproxy": {"base": "dist", "proxy": False},
    "c2kd_dist": {"base": "dist"},
    # Fig. 5's DIST with the C - 1 non-target columns side by side (class identity lost)
    "c2kd_dist_removed": {"base": "dist", "dist_columns": "removed"},
    "c2kd_nkd_bd": {"base": "nkd", "proxy": False, "ofs": False, "nt": False},
    "c2kd_nkd_noproxy": {"base": "nkd", "proxy": False},
    "c2kd_nkd": {"base": "nkd"},
}


@register
class C2KD(Method):
    """C2KD with each module switchable (Tables 3, 5; Fig. 3, 4, 5)."""

    name = "c2kd"

    @dataclass(frozen=True)
    class Hparams:
        bd: bool = field(default=True, metadata=spec(
            "bidirectional distillation: the teacher trains too (Table 5 'BD')"))
        ofs: bool = field(default=True, metadata=spec(
            "on-the-fly selection of the distilled samples (Table 5 'OFS', Eq. 4)"))
        nt: bool = field(default=True, metadata=spec(
            "distil the non-target classes only (Table 5 'NT')"))
        proxy: bool = field(default=True, metadata=spec(
            "the dual proxies (Table 5 'Proxy', Eq. 5)"))
        proxy_feature: str = field(default="layer3", metadata=spec(
            "the feature both proxies read ('layer3', the official code's, falls back to "
            "'pooled' on models without it)"))
        filter: str = field(default="krc", metadata=spec(
            "the OFS filter (Fig. 4)", choices=FILTERS))
        omega: float = field(default=0.0, metadata=spec(
            "the filter threshold: kept when score > omega", low=-1, high=1))
        lambda1: float = field(default=1.0, metadata=spec(
            "weight of the teacher <-> teacher-proxy terms", low=0))
        lambda2: float = field(default=1.0, metadata=spec(
            "weight of the student <-> student-proxy terms", low=0))
        lambda3: float = field(default=1.0, metadata=spec(
            "weight of the crossmodal terms", low=0))
        base: str = field(default="kl", metadata=spec(
            "the divergence of the crossmodal term: 'kl' (C2KD), 'dist', 'nkd' (Fig. 5)",
            choices=BASES))
        dist_columns: str = field(default="masked", metadata=spec(
            "base 'dist' with nt: DIST on all C columns with the target masked out and the "
            "rest renormalised ('masked': a column is one class in every sample) or on the "
            "C - 1 non-target columns side by side ('removed')", choices=DIST_COLUMNS))
        temperature: float = field(default=1.0, metadata=spec(
            "temperature of the crossmodal term (the official code: none, i.e. 1)", low=0,
            high=100, low_open=True))
        target_mode: str = field(default="remove", metadata=spec(
            "with nt: 'remove' the target class (paper) or 'zero' its logit (official code)",
            choices=("remove", "zero")))
        average: str = field(default="selected", metadata=spec(
            "the crossmodal term averaged over the 'selected' samples (paper) or the whole "
            "'batch' (official code)", choices=("selected", "batch")))
        teacher_update: str = field(default="all", metadata=spec(
            "which teacher parameters train: 'all' (Table 3 fully updated), 'top_k' (its top "
            "teacher_top_k blocks: partially updated), 'frozen' (only with bd=False)",
            choices=TEACHER_UPDATES))
        teacher_top_k: int = field(default=2, metadata=spec(
            "with teacher_update 'top_k': the top blocks that train (Table 3: 2)", low=1))

        def check(self) -> None:
            if self.bd and self.teacher_update == "frozen":
                raise ParamError("teacher_update", "'frozen' leaves nothing for bidirectional "
                                 "distillation to train; use 'all' or 'top_k', or bd: false")
            if not self.bd and self.teacher_update != "frozen":
                raise ParamError("teacher_update", f"bd: false is one-way KD from a fixed "
                                 f"teacher (Table 5 row a): set teacher_update: frozen, got "
                                 f"{self.teacher_update!r}")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.proxy_features: tuple[str, str] | None = None
        self.dense = is_dense_model(self.student)
        if self.dense != is_dense_model(self.teacher):
            raise ValueError(f"method {self.name!r}: student and teacher must both be "
                             f"segmentation networks or neither")
        if self.hp.proxy and self.dense:
            feature = "decoder" if self.hp.proxy_feature == "layer3" else self.hp.proxy_feature
            names = tuple(resolve_feature(model, feature, role, self.name)
                          for model, role in ((self.student, "student"),
                                              (self.teacher, "teacher")))
            self.proxy_features = names
            for key, model, name in (("student_proxy", self.student, names[0]),
                                     ("teacher_proxy", self.teacher, names[1])):
                dim = model_feature_shapes(model)[name][0]
                self.extra[key] = models.build("dense_proxy_head", in_channels=dim,
                                               classes=self.classes)
        elif self.hp.proxy:
            fallback = "pooled" if self.hp.proxy_feature == "layer3" else None
            names = tuple(resolve_feature(model, self.hp.proxy_feature, role, self.name,
                                          fallback)
                          for model, role in ((self.student, "student"),
                                              (self.teacher, "teacher")))
            self.proxy_features = names
            for key, model, name, offset in (("student_proxy", self.student, names[0], 0),
                                             ("teacher_proxy", self.teacher, names[1], 11)):
                dim = model_feature_shapes(model)[name][0]
                self.extra[key] = (models.stacked("proxy_head", self.run_seeds(offset),
                                                  in_channels=dim, classes=self.classes)
                                   if self.runs else
                                   models.build("proxy_head", in_channels=dim,
                                                classes=self.classes))

    def step(self, batch, epoch):
        y = batch["label"]
        hp = self.hp
        proxies = {}
        if self.proxy_features is None:
            student = self.student_forward(batch)
            teacher = self.teacher_forward(batch)
        else:
            student, s_feats = self.student_forward(batch, features=True)
            teacher, t_feats = self.teacher_forward(batch, features=True)
            s_name, t_name = self.proxy_features
            if self.dense:
                size = y.shape[-2:]
                proxies = {"student_proxy": dense_head_logits(self.extra["student_proxy"],
                                                              s_feats[s_name], size),
                           "teacher_proxy": dense_head_logits(self.extra["teacher_proxy"],
                                                              t_feats[t_name], size)}
        if self.dense:
            names = list(proxies)
            student, teacher, *rows, y = self.samples(y, student, teacher,
                                                      *(proxies[k] for k in names))
            proxies = dict(zip(names, rows))
        elif self.proxy_features is not None:
            proxies = {"student_proxy": self.extra["student_proxy"](
                           pool_features(s_feats[s_name], self.runs)),
                       "teacher_proxy": self.extra["teacher_proxy"](
                           pool_features(t_feats[t_name], self.runs))}
        out = c2kd_loss(student, teacher, y, **proxies,
                        lambdas=(hp.lambda1, hp.lambda2, hp.lambda3), omega=hp.omega,
                        filter=hp.filter, ofs=hp.ofs, nt=hp.nt, bidirectional=hp.bd,
                        target_mode=hp.target_mode, average=hp.average, base=hp.base,
                        temperature=hp.temperature, dist_columns=hp.dist_columns,
                        runs=self.runs)
        terms = {k: v if k == "total" else v.detach() for k, v in out.items()}
        terms["n_krc_below_omega"] = self._krc_below(out["keep"], student, teacher, proxies)
        return terms

    def _krc_below(self, keep: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor,
                   proxies: dict) -> torch.Tensor:
        """Samples of the batch whose KRC between the filtered sides is not above omega."""
        batch = student.shape[-2]
        if self.hp.ofs and self.hp.filter == "krc":  # the filter's own count: batch - kept
            return torch.round(batch * (1 - keep.detach()))
        s_side = proxies.get("student_proxy", student).detach()
        t_side = proxies.get("teacher_proxy", teacher).detach()
        return (~(kendall_tau(t_side, s_side) > self.hp.omega)).sum(-1).to(keep.dtype)
