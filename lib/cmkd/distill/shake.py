"""SHAKE: shadow knowledge distillation (Li & Jin, NeurIPS 2022), an online KD baseline of C2KD.

A shadow head on the (fixed) teacher's features is trained online next to the student.  As the
official code (lliai/SHAKE, ``helper/loops.py``, ``--distill shake``) computes it:

* every logit tensor - student, teacher, shadow - is layer-normalised over the classes (no
  affine, eps 1e-7) and multiplied by 3.1415 (the official constant, pi to four places);
* the student: ``ce_weight * CE(S, y) + alpha * KD(S <- T)`` (the official scripts use
  ``-r 1 -a 0``: no direct KD from the teacher) plus ``beta`` (1) times the shadow terms
  ``KD(S <- shadow) + KD(shadow <- S) + CE(shadow, y) + MSE(shadow, T)``, each KD term moving only
  its left side (the other detached), at temperature 4 (the official ``--kd_T``).

The shadow head has the proxy structure of C2KD (:class:`cmkd.models.proxy.ProxyHead`, which
C2KD says adheres to SHAKE's); the official head also reuses the teacher's classifier weights,
which is the method's business, not the loss's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill import _softmax as rows
from cmkd.distill._shapes import check_logits, check_reduction, check_target, maybe_detach, reduce
from cmkd.distill.kd import kd_loss

OFFICIAL_SCALE = 3.1415


def shake_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
               shadow: torch.Tensor, temperature: float = 4.0, ce_weight: float = 1.0,
               alpha: float = 0.0, beta: float = 1.0, layer_norm: bool = True,
               scale: float = OFFICIAL_SCALE, reduction: str = "mean",
               detach_teacher: bool = True, runs: bool = False) -> dict[str, torch.Tensor]:
    """The SHAKE objective of the student and the shadow head, as named terms.

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``temperature=`` (hyperparameters are keyword-only).
    shadow : the shadow head's logits, the student's shape.
    temperature : KD temperature (official 4).
    ce_weight, alpha, beta : weights of the student's CE, of its KD from the teacher and of the
        shadow terms (official 1, 0, 1).
    layer_norm, scale : layer-normalise every logit tensor over the classes and multiply by
        ``scale`` (official: True, 3.1415); ``layer_norm=False`` uses the raw logits.
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample).
    detach_teacher : detach the teacher logits (default).

    Returns
    -------
    dict of () or (runs,) tensors ((batch,) or (runs, batch) for 'none'): 'ce_student',
    'kd_teacher' (student <- teacher), 'student_from_shadow', 'shadow_from_student',
    'ce_shadow', 'mse_shadow' (shadow vs teacher, mean over classes) and 'total'
    ``ce_weight * ce_student + alpha * kd_teacher + beta * (student_from_shadow +
    shadow_from_student + ce_shadow + mse_shadow)``.
    """
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature", flags=("detach_teacher", "runs"))
    check_logits(student, shadow, runs=runs, teacher_name="shadow")
    check_reduction(reduction)
    teacher = maybe_detach(teacher, detach_teacher)
    if layer_norm:
        classes = (student.shape[-1],)
        student, teacher, shadow = (F.layer_norm(z, classes, eps=1e-7) * scale
                                    for z in (student, teacher, shadow))

    def ce(z):
        return reduce(rows.cross_entropy(z.flatten(0, -2), target.flatten()).view(target.shape),
                      reduction)

    kw = dict(temperature=temperature, reduction=reduction, runs=runs)
    out = {"ce_student": ce(student),
           "kd_teacher": kd_loss(student, teacher, detach_teacher=detach_teacher, **kw),
           "student_from_shadow": kd_loss(student, shadow, **kw),
           "shadow_from_student": kd_loss(shadow, student, **kw),
           "ce_shadow": ce(shadow),
           "mse_shadow": reduce((shadow - teacher.detach()).pow(2).mean(-1), reduction)}
    out["total"] = (ce_weight * out["ce_student"] + alpha * out["kd_teacher"]
                    + beta * (out["student_from_shadow"] + out["shadow_from_student"]
                              + out["ce_shadow"] + out["mse_shadow"]))
    return out
