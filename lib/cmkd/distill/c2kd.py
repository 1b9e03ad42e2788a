"""C2KD: customized crossmodal knowledge distillation (Huo et al., CVPR 2024), Section 3.2.

* On-the-fly selection distillation (OFSD): a sample is distilled only when the Kendall rank
  correlation of the two sides' logits exceeds omega (Eq. 4, strict ``>``), and only the
  non-target classes are distilled.  Alternative filters of Fig. 4: cosine, Pearson and gradient
  cosine of the logits, with the same threshold rule.
* Proxy heads (Eq. 5; the module is :class:`cmkd.models.proxy.ProxyHead`): their logits enter
  the loss as ``student_proxy`` and ``teacher_proxy``.
* Bidirectional distillation and the total loss of Eq. (6):
  ``CE(S) + CE(T) + l1 [D(T, T^pro) + D(T^pro, T)] + l2 [D(S, S^pro) + D(S^pro, S)]
  + l3 eta [D(S^pro\\t, T^pro\\t) + D(T^pro\\t, S^pro\\t)]`` where ``D(a, b)`` moves ``a`` towards
  ``b`` (KL(b || a), b detached, as in KD) and ``\\t`` drops the target class.

Where the official code departs from the paper (docs/official_code_audit.md), the
paper is the default and the official behaviour a named option: ``target_mode='zero'`` (the
official 'ntkl' multiplies logits by the non-target mask, i.e. sets the target logit to 0 and
keeps all C classes in the softmax) and ``average='batch'`` (the masked per-sample KL averaged over
the whole batch rather than over the kept samples).  A batch with no sample kept contributes 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill import _softmax as rows
from cmkd.distill._shapes import check_logits, check_reduction, check_target
from cmkd.distill.dist import dist_terms
from cmkd.distill.dkd import non_target_logits
from cmkd.distill.nkd import nkd_parts
from cmkd.distill.selection import (  # noqa: F401 - C2KD's filter, re-exported here
    FILTERS,
    filter_scores,
    masked_mean,
    ofsd_mask,
    random_mask,
)

TARGET_MODES = ("remove", "zero", "keep")
AVERAGES = ("selected", "batch")
BASES = ("kl", "dist", "nkd")
#: how DIST sees the non-target classes inside C2KD (:func:`crossmodal_term`)
DIST_COLUMNS = ("masked", "removed")


# ----------------------------------------------------------------------------- D(a, b)
def _side_logits(logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "remove":
        return non_target_logits(logits, target)
    if mode == "zero":  # the official code: logits * non-target mask
        return logits * (1 - F.one_hot(target, logits.shape[-1]).to(logits.dtype))
    if mode == "mask":  # all columns, the target's probability 0 after the softmax
        return logits.masked_fill(F.one_hot(target, logits.shape[-1]).bool(), float("-inf"))
    return logits


def kl_towards(logits: torch.Tensor, target_logits: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Per-sample ``T^2 KL(softmax(b / T) || softmax(a / T))`` with b = ``target_logits``
    detached: moves ``a`` towards ``b``.  (..., batch, C) -> (..., batch)."""
    log_p = rows.log_softmax(target_logits.detach() / temperature)
    log_q = rows.log_softmax(logits / temperature)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2


def crossmodal_term(moving: torch.Tensor, towards: torch.Tensor, target: torch.Tensor,
                    mask: torch.Tensor, *, target_mode: str = "remove", average: str = "selected",
                    base: str = "kl", temperature: float = 1.0,
                    dist_columns: str = "masked") -> torch.Tensor:
    """One direction of the selected crossmodal term, ``eta D(moving\\t, towards\\t)``.

    base : 'kl' (C2KD), 'dist' or 'nkd' (Fig. 5: C2KD's modules plugged into DIST and NKD; DIST on
        the kept samples, NKD's per-sample terms - only its non-target term when the target is
        removed or zeroed).
    dist_columns : with base 'dist' and the target removed, how DIST sees the non-target
        classes.  'masked' (default): all C columns, the target's probability 0 and the others
        renormalised per sample (the softmax with the target logit at -inf), so column c is
        class c in every sample and DIST's intra-class relation (a Pearson correlation of one
        class's probabilities across the batch) compares like with like.  'removed': the C - 1
        non-target columns side by side, so a column is a different class in samples of
        different targets (the construction this project used first; kept to show what it
        does).  The KL and NKD bases do not depend on column identity: for them both are the
        same.
    Returns (...) averaged as ``average`` says; 0 when no sample is kept.
    """
    if base == "kl":
        per = kl_towards(_side_logits(moving, target, target_mode),
                         _side_logits(towards, target, target_mode), temperature)
        return masked_mean(per, mask, average)
    if base == "nkd":
        target_term, non_target = nkd_parts(moving, towards.detach(), target, temperature)
        per = non_target if target_mode != "keep" else target_term + non_target
        return masked_mean(per, mask, average)
    if base == "dist":
        if dist_columns not in DIST_COLUMNS:
            raise ValueError(f"dist_columns must be one of {DIST_COLUMNS}, got {dist_columns!r}")
        mode = "mask" if target_mode == "remove" and dist_columns == "masked" else target_mode
        return dist_terms(_side_logits(moving, target, mode),
                          _side_logits(towards, target, mode).detach(),
                          temperature=temperature, weights=mask)
    raise ValueError(f"base must be one of {BASES}, got {base!r}")


# ----------------------------------------------------------------------------- Eq. (6)
def c2kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
              student_proxy: torch.Tensor | None = None,
              teacher_proxy: torch.Tensor | None = None,
              lambdas: tuple[float, float, float] = (1.0, 1.0, 1.0), omega: float = 0.0,
              filter: str = "krc", ofs: bool = True, nt: bool = True,
              bidirectional: bool = True, target_mode: str = "remove",
              average: str = "selected", base: str = "kl", temperature: float = 1.0,
              dist_columns: str = "masked", reduction: str = "mean", runs: bool = False
              ) -> dict[str, torch.Tensor]:
    """The C2KD objective (Eq. 6) with each module switchable (Table 5, Fig. 4, Fig. 5).

    Parameters
    ----------
    student, teacher : (batch, classes) logits; (runs, batch, classes) with ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``temperature=`` (hyperparameters are keyword-only).
    student_proxy, teacher_proxy : proxy logits of the same shape, optional (both or neither)
        With proxies (Table 5 row d) the crossmodal term runs between the proxies and each model
        is tied to its own proxy both ways (lambda1, lambda2); without them the crossmodal term
        runs between the two models' logits (rows b, c).
    lambdas : (lambda1, lambda2, lambda3) of Eq. (6); the paper uses 1, 1, 1.
    omega, filter : the OFSD threshold and filter (``FILTERS``); ``ofs=False`` keeps all samples.
    nt : distil the non-target classes only (the target removed, or zeroed with
        ``target_mode='zero'``, the official code); ``nt=False`` distils all classes.
    bidirectional : True: the teacher side is trained too (CE(T) and the teacher-directed
        crossmodal term); False: only the student side moves (classic KD direction) and no
        gradient reaches the teacher's logits (there is no ``detach_teacher``: this is it).
    average : 'selected' (paper: mean over the kept samples) or 'batch' (official code).
    base : the divergence of the crossmodal term: 'kl', 'dist' or 'nkd' (Fig. 5).
    dist_columns : with base 'dist': 'masked' or 'removed' (:func:`crossmodal_term`).
    reduction : 'mean' only (the crossmodal term is averaged over the kept samples).

    Returns
    -------
    dict of () or (runs,) tensors: 'total', 'ce_student', 'ce_teacher', 'proxy_teacher',
    'proxy_student', 'cross', and 'keep' (fraction of samples kept, detached).
    """
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    if target_mode not in TARGET_MODES:
        raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {target_mode!r}")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    if (student_proxy is None) != (teacher_proxy is None):
        raise ValueError("give both proxy logits or neither")
    check_reduction(reduction, ("mean",))
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature", flags=("bidirectional", "runs"))
    if student_proxy is not None:
        check_logits(student, student_proxy, runs=runs, teacher_name="student_proxy")
        check_logits(student, teacher_proxy, runs=runs, teacher_name="teacher_proxy")
    student_logits, teacher_logits = student, teacher
    student_proxy_logits, teacher_proxy_logits = student_proxy, teacher_proxy
    l1, l2, l3 = lambdas

    def ce(z):
        return rows.cross_entropy(z.flatten(0, -2), target.flatten()).view(target.shape).mean(-1)

    zero = student_logits.new_zeros(student_logits.shape[:-2])
    out = {"ce_student": ce(student_logits),
           "ce_teacher": ce(teacher_logits) if bidirectional else zero,
           "proxy_teacher": zero, "proxy_student": zero}
    use_proxy = student_proxy_logits is not None
    if use_proxy:
        s_side, t_side = student_proxy_logits, teacher_proxy_logits
        out["proxy_student"] = (kl_towards(student_proxy_logits, student_logits)
                                + kl_towards(student_logits, student_proxy_logits)).mean(-1)
        if bidirectional:
            out["proxy_teacher"] = (kl_towards(teacher_proxy_logits, teacher_logits)
                                    + kl_towards(teacher_logits, teacher_proxy_logits)).mean(-1)
        else:  # a fixed teacher: only its proxy learns from it
            out["proxy_teacher"] = kl_towards(teacher_proxy_logits, teacher_logits).mean(-1)
    else:
        s_side, t_side = student_logits, teacher_logits
    mask = ofsd_mask(t_side, s_side, omega, filter if ofs else "none", target)
    mode = target_mode if nt else "keep"
    kw = dict(target_mode=mode, average=average, base=base, temperature=temperature,
              dist_columns=dist_columns)
    cross = crossmodal_term(s_side, t_side, target, mask, **kw)
    if bidirectional:
        cross = cross + crossmodal_term(t_side, s_side, target, mask, **kw)
    out["cross"] = cross
    out["total"] = (out["ce_student"] + out["ce_teacher"] + l1 * out["proxy_teacher"]
                    + l2 * out["proxy_student"] + l3 * cross)
    out["keep"] = mask.float().mean(-1)
    return out
