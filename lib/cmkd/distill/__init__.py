"""Distillation losses as pure functions on tensors, one file per method (mdistiller style).

Only losses live here: the modules some methods train beside the student (C2KD's proxies,
SHAKE's shadow head, FitNet's regressor, Review's fusion) are in :mod:`cmkd.models`
(:mod:`~cmkd.models.proxy`, :mod:`~cmkd.models.auxiliary`), and a loss that needs one takes it
as an argument.

The calling convention
----------------------
``loss(student, teacher, target=None, *, <hyperparameters, the papers' defaults>,
reduction="mean", detach_teacher=True, runs=False)``

* Student first, teacher second; ``target`` (batch,) int64 class indices, third.  Every logit
  loss takes it: required where the method reads labels, optional (None) where it does not
  (KD, DIST, DLB), and checked whenever given - a tensor in an unused target's place is
  validated, not ignored.  Self-distillation losses (Zipf, USKD) have no teacher - the student
  is its own - and are ``loss(student, target, *, ...)``; DLB's teacher is the student's own
  logits from the previous iteration.  Feature losses (FitNet, RKD, Review, HCL) take no
  target: everything after the teacher is keyword-only, so a third positional argument is a
  TypeError.
* Hyperparameters (and flags) are keyword-only.  A positional one lands in the target's place
  and is refused, never read as a target nor ignored: ``kd_loss(s, t, 4.0)`` raises a TypeError
  saying ``target`` got the float 4.0 and asking "did you mean temperature=4.0?" (the loss's
  temperature, or its first float hyperparameter where it has none: Zipf's ``power``, USKD's
  ``alpha``); a bool names the loss's flags, a 0-d tensor is read as a misplaced number, and a
  float tensor is not class indices (for DIST: per-sample weights go in ``weights=``).
* Shapes: logits (batch, classes).  A leading run dimension (R independent models trained at
  once, the batched-MLP fast path) only when declared with ``runs=True``: (runs, batch,
  classes), targets (runs, batch), and a reduced result of shape (runs,).  Feature losses take
  (batch, dim) vectors and, where the method allows, (batch, C, H, W) maps (a (batch, C, T) map
  is refused: flatten it first).  Mismatched shapes, a 3-d tensor without ``runs=True``,
  non-integer or out-of-range targets are refused with a ValueError naming the argument and the
  expected shape.
* ``reduction``: 'mean' (over the batch: for a KL, the KL divergence averaged over samples),
  'sum', 'none' (per sample, (batch,)).  Losses that are relations over the batch (DIST's
  intra-class term, RKD, Review's HCL, C2KD's selected average) have no per-sample value and
  take 'mean' only.  KD keeps the official MFH reduction as the named option
  'elementwise_mean' (the KL divided by the number of classes too: torch's 'mean', the default
  of ``torch.nn.KLDivLoss()`` in MFH's official code).  torch's 'batchmean' is this package's
  'mean' and is refused with a message saying so, not silently renamed.
* The teacher is detached inside unless ``detach_teacher=False``.  Mutual and online losses
  train both sides by design and have no such flag: each direction's target is detached, so
  each term reaches only the side it moves (DML; SHAKE's student / shadow terms; C2KD, where
  ``bidirectional=False`` is the frozen-teacher case).

Segmentation: per-pixel logits (batch, classes, H, W) are taken as one sample per labelled pixel
(:mod:`cmkd.distill.dense`, void pixels dropped); CIRKD's cross-image relations are in
:mod:`cmkd.distill.cirkd`.

What a loss returns
-------------------
* A loss that trains one network (with its auxiliary modules: regressors, Review's fusion,
  USKD's weak head) returns a tensor.
* A loss whose objective trains several networks at once - ``dml_loss`` (two peers),
  ``shake_loss`` (student and shadow head), ``c2kd_loss`` (student, teacher, proxies) - returns
  a dict of named, reduced terms; ``'total'`` is the sum to back-propagate.

Building blocks (``tckd_nckd``, ``nkd_parts``, ``non_target_logits``, ``kl_towards``,
``filter_scores``, ``ofsd_mask``, ``random_mask``, ``masked_mean``,
``zipf_soft_labels``) take (..., batch, classes) tensors and
use the teacher as given.

Where the public implementations were followed over an earlier reading: USKD's target soft label
and all-class Zipf ranks (yzd-v/cls_KD), SHAKE's layer-normalised logits and shadow-teacher MSE
(lliai/SHAKE) and Review's HCL levels chosen by the map's height (dvlab-research/ReviewKD); each
file says what it follows.
"""
from cmkd.distill.c2kd import c2kd_loss, kl_towards
from cmkd.distill.cirkd import anchor_relation_loss, minibatch_pixel_loss, region_embeddings
from cmkd.distill.dense import dense, is_dense, pixels
from cmkd.distill.dist import dist_loss
from cmkd.distill.dkd import dkd_loss, dkd_warmup, non_target_logits, tckd_nckd
from cmkd.distill.dlb import dlb_loss
from cmkd.distill.dml import dml_loss
from cmkd.distill.fitnet import fitnet_loss
from cmkd.distill.kd import kd_loss
from cmkd.distill.nkd import nkd_loss
from cmkd.distill.review import hcl_loss, review_loss
from cmkd.distill.rkd import rkd_angle_loss, rkd_distance_loss, rkd_loss
from cmkd.distill.selection import FILTERS, filter_scores, masked_mean, ofsd_mask, random_mask
from cmkd.distill.shake import shake_loss
from cmkd.distill.uskd import uskd_loss
from cmkd.distill.zipf import zipf_loss, zipf_soft_labels

__all__ = [
    "FILTERS", "anchor_relation_loss", "c2kd_loss", "dense", "dist_loss", "is_dense",
    "minibatch_pixel_loss", "pixels", "region_embeddings", "dkd_loss", "dkd_warmup", "dlb_loss",
    "dml_loss", "filter_scores", "fitnet_loss", "hcl_loss", "kd_loss", "kl_towards",
    "masked_mean", "nkd_loss", "non_target_logits", "ofsd_mask", "random_mask", "review_loss",
    "rkd_angle_loss", "rkd_distance_loss", "rkd_loss", "shake_loss", "tckd_nckd", "uskd_loss",
    "zipf_loss", "zipf_soft_labels",
]
