"""The vectorised logistic regressions of MFH's synthetic experiments (notebooks 01 and 02).

MFH's linear teachers and students (Appendix B.2; the official gauss/ scripts: full-batch SGD
without momentum, CE + KL of Eq. 1) are small enough that ``R`` independent runs - every seed of
every setting of one phase - train as one tensor program: :func:`train_linear_batched` writes
the linear layer's backward out by hand and lays the weights out class-major, so each step is a
few large elementwise operations (tests check it against ``nn.Linear`` trained with
``torch.optim.SGD``).  Models and their initialisation are the stacked linear layers of
:mod:`cmkd.models.batched` (:func:`~cmkd.models.batched.init_linear_batched`,
:func:`~cmkd.models.batched.linear_logits`).  This is the one place outside
:func:`cmkd.engine.fit` that trains a model: a closed-form full-batch logistic regression, not a
mini-batch loop over a method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmkd.distill.kd import kd_loss


def accuracy_batched(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of each run: logits (R, n, C), y (R, n) -> (R,)."""
    return (logits.argmax(-1) == y).float().mean(-1)


# the params files' names for the KD reduction -> cmkd.distill.kd_loss's reduction
KL_REDUCTIONS = {"batchmean": "mean", "mean": "elementwise_mean"}


def train_linear_batched(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor, *, epochs: int, lr: float,
                         teacher_logits: torch.Tensor | None = None, rho: float = 0.5,
                         loss_scale: float = 1.0, temperature: float = 1.0,
                         kl_reduction: str = "batchmean") -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch SGD (no momentum) on ``R`` independent linear softmax classifiers at once.

    Without a teacher each run minimises its mean cross entropy.  With ``teacher_logits`` each run
    minimises MFH Eq. (1) times ``loss_scale``:
    ``loss_scale * (rho * CE(student, y) + (1 - rho) * kd_loss(student, teacher))`` with
    :func:`cmkd.distill.kd_loss` (temperature; ``kl_reduction`` 'batchmean' is its reduction
    'mean', the KL divergence, and 'mean' its 'elementwise_mean', the official KL / classes).
    Autograd differentiates the losses
    with respect to the logits; the linear layer's own backward (``dW = X^T dlogits``) is written
    out.  Tensors are laid out class-major, so each step is a few large elementwise operations
    rather than many tiny matrix products (tests check the result against ``nn.Linear`` trained
    with ``torch.optim.SGD``).

    Parameters
    ----------
    x : (R, n, D) inputs; y : (R, n) labels; weight : (R, D, C); bias : (R, C) (initial values)
    epochs, lr : number of full-batch steps and the step size
    teacher_logits : (R, n, C), optional; fixed soft targets
    rho, loss_scale, temperature, kl_reduction : see above

    Returns
    -------
    The trained weight (R, D, C) and bias (R, C).
    """
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"expected x (R, n, D) and y (R, n), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    runs, n, dim = x.shape
    classes = weight.shape[-1]
    if weight.shape != (runs, dim, classes) or bias.shape != (runs, classes):
        raise ValueError(f"expected weight (R, D, C) = ({runs}, {dim}, C) and bias (R, C), got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    if teacher_logits is not None and teacher_logits.shape != (runs, n, classes):
        raise ValueError(f"teacher_logits must have shape (R, n, C) = ({runs}, {n}, {classes}), "
                         f"got {tuple(teacher_logits.shape)}")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho}")
    if kl_reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction must be 'batchmean' or 'mean', got {kl_reduction!r}")

    w = weight.detach().permute(2, 0, 1).contiguous()  # (C, R, D)
    b = bias.detach().T.contiguous()  # (C, R)
    target = y.unsqueeze(0)  # (1, R, n)
    teacher = None
    if teacher_logits is not None:
        teacher = teacher_logits.detach().permute(2, 0, 1).contiguous()  # (C, R, n)
    for _ in range(epochs):
        with torch.no_grad():
            logits = torch.stack([(x * w[c].unsqueeze(1)).sum(-1) for c in range(classes)])
            logits += b.unsqueeze(-1)  # (C, R, n)
        logits.requires_grad_(True)
        ce = -F.log_softmax(logits, dim=0).gather(0, target).squeeze(0).mean(-1)  # (R,)
        if teacher is None:
            loss = ce
        else:
            kd = kd_loss(logits, teacher, temperature=temperature,
                         reduction=KL_REDUCTIONS[kl_reduction], runs=True, class_dim=0)
            loss = loss_scale * (rho * ce + (1.0 - rho) * kd)
        (grad,) = torch.autograd.grad(loss.sum(), logits)  # (C, R, n)
        with torch.no_grad():
            w -= lr * torch.stack([(x * grad[c].unsqueeze(-1)).sum(1) for c in range(classes)])
            b -= lr * grad.sum(-1)
    return w.permute(1, 2, 0).contiguous(), b.T.contiguous()
