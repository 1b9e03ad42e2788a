"""Kendall rank correlation (KRC) of logit rows, batched: C2KD (CVPR 2024) Eq. (3).

``KRC = 2 / (C (C - 1)) * sum_{i<j} sign(f_T^i - f_T^j) sign(f_S^i - f_S^j)`` is Kendall's tau-a.
The official C2KD code calls ``scipy.stats.kendalltau`` (tau-b) once per sample in a Python loop;
here every row of a (batch, classes) pair is done at once as a tensor program, on any device.

Two exact methods: 'pairs' compares every class pair i < j at once (O(C^2) memory and work per
row, few tensor operations: fastest for small C and on GPUs); 'merge' sorts and counts discordant
pairs with a vectorised merge sort (Knight's O(C log C) algorithm, as scipy does it, over all
rows at once: the faster one for many classes on a CPU).
"""

from __future__ import annotations

import torch

VARIANTS = ("a", "b")
METHODS = ("auto", "pairs", "merge")
#: 'auto' uses 'pairs' up to this many classes on a CPU (always on other devices), else 'merge'.
PAIRWISE_MAX_CLASSES = 96
#: Largest number of (row, class, class) entries the 'pairs' method holds at once, on a CPU and
#: on other devices (a GPU has the memory, and each extra chunk costs kernel launches).
CHUNK_ELEMENTS = 1 << 22
CHUNK_ELEMENTS_DEVICE = 1 << 26


def _pairs(x: torch.Tensor, y: torch.Tensor, ties: bool = True) -> tuple[torch.Tensor, ...]:
    """(S, n1, n2) per row: S = concordant - discordant pairs, n1 / n2 pairs tied in x / y.

    Without ``ties`` n1 and n2 are None (tau-a does not need them).  NaN entries are not
    handled here (torch.sign(nan) is 0): the caller masks such rows.
    """
    rows, classes = x.shape
    first, second = torch.triu_indices(classes, classes, 1, device=x.device)  # the pairs i < j
    chunk = CHUNK_ELEMENTS if x.device.type == "cpu" else CHUNK_ELEMENTS_DEVICE
    step = max(1, chunk // max(1, first.numel()))
    out = []
    for i in range(0, rows, step):
        xs, ys = x[i:i + step], y[i:i + step]
        sx = torch.sign(xs[:, first] - xs[:, second])  # (r, C (C - 1) / 2)
        sy = torch.sign(ys[:, first] - ys[:, second])
        s = (sx * sy).sum(-1)
        if ties:
            n1 = (sx == 0).sum(-1)
            n2 = (sy == 0).sum(-1)
            out.append((s, n1.to(s.dtype), n2.to(s.dtype)))
        else:
            out.append((s,))
    if len(out) == 1:
        return out[0] if ties else (out[0][0], None, None)
    if not ties:
        return torch.cat([o[0] for o in out]), None, None
    s, n1, n2 = (torch.cat(p) for p in zip(*out))
    return s, n1, n2


def _tied_pairs(sorted_vals: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """Pairs of equal entries per row of row-sorted values (equal in all given tensors)."""
    rows, classes = sorted_vals.shape
    idx = torch.arange(classes, device=sorted_vals.device).expand(rows, classes)
    new = torch.ones_like(sorted_vals, dtype=torch.bool)
    same = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    for m in more:
        same &= m[:, 1:] == m[:, :-1]
    new[:, 1:] = ~same
    run_start = torch.where(new, idx, torch.zeros_like(idx)).cummax(-1).values
    return (idx - run_start).sum(-1)


def _discordant(v: torch.Tensor) -> torch.Tensor:
    """Pairs j < i with v_j > v_i strictly, per row: a merge sort over all rows at once."""
    rows, classes = v.shape
    m = 1 << (classes - 1).bit_length()
    if m > classes:  # +inf padding at the end adds no such pair
        v = torch.cat([v, v.new_full((rows, m - classes), float("inf"))], 1)
    count = torch.zeros(rows, dtype=torch.int64, device=v.device)
    b = 1
    while b < m:
        blocks = v.view(rows, m // (2 * b), 2, b)
        left, right = blocks[:, :, 0].contiguous(), blocks[:, :, 1].contiguous()
        count += (b - torch.searchsorted(left, right, right=True)).sum((1, 2))
        v = torch.sort(v.view(rows, m // (2 * b), 2 * b), dim=-1).values.view(rows, m)
        b *= 2
    return count


def _merge(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    rows, classes = x.shape
    y1, order = torch.sort(y, dim=-1, stable=True)
    x1 = torch.gather(x, 1, order)
    x2, order2 = torch.sort(x1, dim=-1, stable=True)  # lexicographic by (x, y)
    y2 = torch.gather(y1, 1, order2)
    n0 = classes * (classes - 1) // 2
    n1, n2 = _tied_pairs(x2), _tied_pairs(y1)
    n3 = _tied_pairs(x2, y2)
    disc = _discordant(y2)
    s = n0 - n1 - n2 + n3 - 2 * disc
    return s.to(x.dtype), n1.to(x.dtype), n2.to(x.dtype)


@torch.no_grad()
def kendall_tau(x: torch.Tensor, y: torch.Tensor, variant: str = "a",
                method: str = "auto") -> torch.Tensor:
    """Kendall's tau between corresponding rows of ``x`` and ``y``.

    Parameters
    ----------
    x, y : (..., classes) tensors of the same shape
        For example teacher and student logits (batch, classes).  Any leading dimensions are
        kept.  Computed in float64 for float64 input, float32 otherwise; no gradient flows.
    variant : {'a', 'b'}
        'a': tau-a, ``(concordant - discordant) / (C (C - 1) / 2)``, C2KD's Eq. (3); ties count
        as neither concordant nor discordant.  'b': tau-b, the same numerator over
        ``sqrt((n0 - n1)(n0 - n2))`` with ``n1``, ``n2`` the pairs tied in x, in y; this is what
        ``scipy.stats.kendalltau`` computes (its default).  Without ties they agree.
    method : {'auto', 'pairs', 'merge'}
        How to count (both exact, see the module docstring); 'auto' picks by device and size.

    Returns
    -------
    (...) tensor of tau values in [-1, 1].

    Notes
    -----
    Degenerate rows: a NaN in a row of x or y gives NaN for that row (as scipy); for tau-b a
    row that is constant in x or in y gives NaN (the denominator is 0), as in scipy; tau-a of a
    constant row is 0.  A NaN never passes a ``> omega`` test, so such samples are dropped by
    :func:`cmkd.distill.c2kd.ofsd_mask`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(f"need at least 2 classes in the last dimension, got shape "
                         f"{tuple(x.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    lead, classes = x.shape[:-1], x.shape[-1]
    xs = x.detach().reshape(-1, classes).to(dtype)
    ys = y.detach().reshape(-1, classes).to(dtype)
    if xs.shape[0] == 0:
        return xs.new_zeros(lead)
    if method == "auto":
        small = classes <= PAIRWISE_MAX_CLASSES or xs.device.type != "cpu"
        method = "pairs" if small else "merge"
    if method == "pairs":
        s, n1, n2 = _pairs(xs, ys, ties=variant == "b")
    else:
        s, n1, n2 = _merge(xs, ys)
    n0 = classes * (classes - 1) / 2
    tau = s / n0 if variant == "a" else s / torch.sqrt((n0 - n1) * (n0 - n2))
    # no `if bad.any()`: that would wait for the device at every training step
    tau = tau.masked_fill((xs.isnan() | ys.isnan()).any(-1), float("nan"))
    return tau.reshape(lead)
