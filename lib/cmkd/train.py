"""Training loops, device selection and seeding.

Small models (the logistic regressions of MFH's synthetic experiments) are trained *batched*:
``R`` independent runs, each with its own data, initialisation and loss, are stacked into one
tensor program, so a whole sweep of seeds and settings costs one loop over epochs.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
import torch.nn.functional as F

from cmkd.distill.kd import kd_loss

DEVICES = ("auto", "cpu", "cuda", "mps")


def select_device(preference: str = "auto") -> torch.device:
    """The device to compute on: cuda, then mps, then cpu for 'auto'; otherwise as asked.

    Raises a clear error when the requested device is not available here.
    """
    if preference not in DEVICES and not preference.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} or 'cuda:N', got {preference!r}")
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was requested but CUDA is not available; "
                           "use device: auto or cpu")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was requested but MPS is not available; "
                           "use device: auto or cpu")
    return torch.device(preference)


def device_available(preference: str) -> None:
    """Raise ValueError when ``preference`` names a device this machine does not have (for
    params validation: a run asking for CUDA on a machine without it stops before compute)."""
    try:
        select_device(preference)
    except RuntimeError as err:
        raise ValueError(str(err)) from None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (for code that uses them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_for(*key: int) -> np.random.Generator:
    """A NumPy generator determined by a tuple of non-negative integers (seed, setting, run...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def seed_for(*key: int) -> int:
    """A 63-bit integer seed determined by a tuple of non-negative integers."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0] >> 1)


def init_linear_batched(n_features: list[int], width: int, classes: int,
                        seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's default ``nn.Linear`` initialisation for ``R`` runs, zero-padded to ``width``.

    Run ``r`` has ``n_features[r]`` real input channels; weights and bias are uniform in
    ``+-1/sqrt(n_features[r])`` drawn from a generator seeded with ``seeds[r]``; the padded
    channels get zero weight.

    Returns
    -------
    weight : (R, width, classes) float32, bias : (R, classes) float32
    """
    if len(n_features) != len(seeds):
        raise ValueError("n_features and seeds must have one entry per run")
    weight = torch.zeros(len(seeds), width, classes)
    bias = torch.zeros(len(seeds), classes)
    for r, (d, s) in enumerate(zip(n_features, seeds)):
        if not 0 < d <= width:
            raise ValueError(f"run {r}: n_features must lie in [1, {width}], got {d}")
        g = torch.Generator().manual_seed(s)
        bound = 1.0 / d**0.5
        # drawn in nn.Linear's (out, in) layout, then transposed to (in, out)
        weight[r, :d] = (torch.rand(classes, d, generator=g) * 2 - 1).mul_(bound).T
        bias[r] = (torch.rand(classes, generator=g) * 2 - 1).mul_(bound)
    return weight, bias


def linear_logits(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``R`` linear models: x (R, n, D), weight (R, D, C), bias (R, C) -> (R, n, C)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class BatchedLinear(torch.nn.Module):
    """``R`` independent linear models as one module: x (R, n, D) -> logits (R, n, C).

    Parameters are copies of ``weight`` (R, D, C) and ``bias`` (R, C) (for example from
    :func:`init_linear_batched`), so autograd and ``torch.optim`` train all runs at once.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.bias = torch.nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_logits(self.weight, self.bias, x)


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


SCHEDULES = ("constant", "poly")


def train_minibatch(loss_fn, parameters, data: dict[str, torch.Tensor], *, epochs: int,
                    batch_size: int, lr: float, seed: int, momentum: float = 0.9,
                    weight_decay: float = 0.0, schedule: str = "constant",
                    modules: tuple[torch.nn.Module, ...] = (), sample_dim: int = 1
                    ) -> list[float]:
    """Mini-batch SGD on any loss: the one training loop for small torch models.

    A student with a fixed teacher, online and bidirectional variants (DML, C2KD) differ only
    in ``loss_fn`` and in which ``parameters`` the optimiser moves: the teacher's (all or its top
    layers), proxies, regressors, or none.  Batched runs (tensors with a leading run dimension)
    train together when ``loss_fn`` returns the sum of the runs' losses.

    Parameters
    ----------
    loss_fn : callable(batch: dict[str, Tensor], epoch: int) -> Tensor
        The loss of one mini-batch (a scalar, or per-run losses that are summed).
    parameters : iterable of Parameters to optimise (duplicates are dropped).
    data : name -> tensor holding the samples along ``sample_dim`` (all the same length);
        each mini-batch is ``{name: tensor.index_select(sample_dim, idx)}``.
    epochs, batch_size, lr, momentum, weight_decay : SGD settings (torch.optim.SGD).
    seed : seeds the shuffling (a torch.Generator), so a run is deterministic.
    schedule : 'constant' or 'poly' (C2KD's: ``lr (1 - epoch / epochs)^0.9``).
    modules : modules switched to train mode during training and to eval mode after it.

    Returns
    -------
    The mean mini-batch loss of each epoch.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not data:
        raise ValueError("data must hold at least one tensor")
    sizes = {name: t.shape[sample_dim] for name, t in data.items()}
    n = next(iter(sizes.values()))
    if any(v != n for v in sizes.values()):
        raise ValueError(f"every data tensor needs the same number of samples, got {sizes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    unique, seen = [], set()
    for p in parameters:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    opt = torch.optim.SGD(unique, lr=lr, momentum=momentum, weight_decay=weight_decay) \
        if unique else None
    gen = torch.Generator().manual_seed(seed)
    device = next(iter(data.values())).device
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    history = []
    for m in modules:
        m.train()
    for epoch in range(epochs):
        if opt is not None and schedule == "poly":
            for group in opt.param_groups:
                group["lr"] = lr * (1 - epoch / epochs) ** 0.9
        perm = torch.randperm(n, generator=gen).to(device)
        # summed on the device (a float() per step would wait for it); float64 where it exists
        total, steps = torch.zeros((), dtype=acc_dtype, device=device), 0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            batch = {k: v.index_select(sample_dim, idx) for k, v in data.items()}
            loss = loss_fn(batch, epoch).sum()
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += loss.detach()
            steps += 1
        history.append(total / max(steps, 1))
    history = [float(h) for h in history]
    for m in modules:
        m.eval()
    return history


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads (unchanged for None), restoring the number after.

    Small batched models make many tiny operations; on a CPU one thread runs them faster than
    several (each parallel region costs more than it saves) and is not slowed down when other
    processes share the cores.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
