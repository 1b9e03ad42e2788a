"""Classical knowledge distillation (Hinton et al., 2015), the L_kd of MFH Eq. (1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill import _softmax as rows
from cmkd.distill._shapes import (
    REDUCTIONS,
    check_logits,
    check_reduction,
    check_target,
    maybe_detach,
    reduce,
)

KD_REDUCTIONS = (*REDUCTIONS, "elementwise_mean")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None = None,
            *, temperature: float = 1.0, reduction: str = "mean", detach_teacher: bool = True,
            runs: bool = False, class_dim: int = -1) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))`` per sample.

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : None, or (batch,) / (runs, batch) int64 class indices: unused (KD needs no labels),
        accepted so every logit loss is called alike, but checked when given; a number in its
        place is refused (``kd_loss(s, t, 4.0)``: the temperature is keyword-only).
    temperature : float
        Softening temperature T > 0 (Hinton et al.; MFH and C2KD use T = 1).
    reduction : {'mean', 'sum', 'none', 'elementwise_mean'}
        'mean' averages the per-sample KL over the batch (the KL divergence as the equations
        define it); 'sum' sums it; 'none' returns it, shape (batch,) or (runs, batch);
        'elementwise_mean' divides the batch mean by the number of classes too
        (``torch.nn.KLDivLoss()``'s default, the reduction of MFH's official code).  torch's
        'batchmean' is refused with a message pointing to 'mean', its equivalent here.
    detach_teacher : bool
        Detach the teacher logits (default); False lets the gradient reach them.
    runs : bool
        Declare a leading run dimension; the reduced result then has shape (runs,).
    class_dim : {-1, 0}
        0 takes class-major logits, (classes, batch) or (classes, runs, batch) (the layout of
        :func:`cmkd.mfh.logistic.train_linear_batched`).

    Returns
    -------
    () or (runs,) for 'mean', 'sum' and 'elementwise_mean'; (batch,) or (runs, batch) for 'none'.
    """
    check_logits(student, teacher, runs=runs, class_dim=class_dim)
    check_target(target, student, meant="temperature", required=False,
                 flags=("detach_teacher", "runs"), class_dim=class_dim)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_reduction(reduction, KD_REDUCTIONS)
    teacher = maybe_detach(teacher, detach_teacher)
    if class_dim == -1:
        log_p_s = rows.log_softmax(student / temperature)
        log_p_t = rows.log_softmax(teacher / temperature)
    else:
        log_p_s = F.log_softmax(student / temperature, dim=class_dim)
        log_p_t = F.log_softmax(teacher / temperature, dim=class_dim)
    per_sample = (log_p_t.exp() * (log_p_t - log_p_s)).sum(class_dim) * temperature**2
    if reduction == "elementwise_mean":
        return per_sample.mean(-1) / student.shape[class_dim]
    return reduce(per_sample, reduction)


def binary_kd_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0,
                   reduction: str = "mean", detach_teacher: bool = True) -> torch.Tensor:
    """KD for multi-label targets: per label, ``T^2 KL(Bern(sigmoid(t / T)) ||
    Bern(sigmoid(s / T)))``, summed over the labels of a sample.

    Each label of a multi-label task (MM-IMDB's genres, MFH Table 7) is a two-class problem of
    its own, so the softmax over labels of :func:`kd_loss` does not apply: the teacher's soft
    label is its sigmoid per label, and the student matches it with the binary KL (the binary
    cross entropy to the teacher's probabilities minus the teacher's entropy, which has no
    gradient).  MFH gives no formula for its MM-IMDB distillation and its official code has no
    MM-IMDB part; this is the usual per-label form.

    Parameters
    ----------
    student, teacher : (batch, labels) logits.
    temperature : T > 0; both logits are divided by T, the loss multiplied by T^2.
    reduction : 'mean' (the per-sample KL, summed over labels, averaged over the batch), 'sum',
        'none' (per sample, (batch,)) or 'elementwise_mean' ('mean' divided by the labels too).
    detach_teacher : detach the teacher logits (default).
    """
    check_logits(student, teacher)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_reduction(reduction, KD_REDUCTIONS)
    teacher = maybe_detach(teacher, detach_teacher)
    s, t = student / temperature, teacher / temperature
    # log p and log (1 - p) as log-sigmoids of z and -z (stable for large |z|)
    log_ps, log_qs = F.logsigmoid(s), F.logsigmoid(-s)
    log_pt, log_qt = F.logsigmoid(t), F.logsigmoid(-t)
    per_label = log_pt.exp() * (log_pt - log_ps) + log_qt.exp() * (log_qt - log_qs)
    per_sample = per_label.sum(-1) * temperature**2
    if reduction == "elementwise_mean":
        return per_sample.mean(-1) / student.shape[-1]
    return reduce(per_sample, reduction)
