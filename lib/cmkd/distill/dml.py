"""Deep mutual learning (Zhang et al., CVPR 2018): two peers trained together, each with its
cross entropy plus a KL term towards the other's (detached) predictions.  In C2KD's comparisons
(Table 1, 3) the peers are the student-modality network (``student``) and the teacher-modality
network (``teacher``), and both train."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill._shapes import check_logits, check_reduction, check_target, reduce
from cmkd.distill.kd import kd_loss


def dml_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *,
             temperature: float = 1.0, kd_weight: float = 1.0, reduction: str = "mean",
             runs: bool = False) -> dict[str, torch.Tensor]:
    """Both peers' losses, ``CE(x, y) + kd_weight * T^2 KL(p_other || p_x)``.

    Each peer's KL target is the other peer's detached logits, so each term reaches only its own
    peer and ``'total'`` can be back-propagated at once (both peers train: there is no
    ``detach_teacher``).

    Parameters
    ----------
    student, teacher : (batch, classes) logits of the two peers; (runs, batch, classes) with
        ``runs=True``.
    target : (batch,) or (runs, batch) int64 class indices, required; a number in its place
        is refused naming ``temperature=`` (hyperparameters are keyword-only).
    reduction : 'mean' / 'sum' over the batch, or 'none' (per sample).

    Returns
    -------
    dict of () or (runs,) tensors ((batch,) or (runs, batch) for 'none'): 'student' and
    'teacher' (each peer's loss) and 'total' (their sum).
    """
    check_logits(student, teacher, runs=runs)
    check_target(target, student, meant="temperature")
    check_reduction(reduction)

    def ce(z):
        return reduce(F.cross_entropy(z.flatten(0, -2), target.flatten(), reduction="none"
                                      ).view(target.shape), reduction)

    kw = dict(temperature=temperature, reduction=reduction, runs=runs)
    loss_s = ce(student) + kd_weight * kd_loss(student, teacher, **kw)
    loss_t = ce(teacher) + kd_weight * kd_loss(teacher, student, **kw)
    return {"student": loss_s, "teacher": loss_t, "total": loss_s + loss_t}
