"""Centred kernel alignment (Kornblith et al., ICML 2019), as used by C2KD Fig. 6.

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K``, ``L`` the Gram matrices of
two representations of the same ``n`` examples.  The biased estimator is
``HSIC = tr(K H L H) / (n - 1)^2`` with the centring matrix ``H = I - 11^T / n``; the unbiased
one is Song et al.'s (JMLR 2012) U-statistic.
"""

from __future__ import annotations

import torch

KERNELS = ("linear", "rbf")


def _distinct_pairs(sq: torch.Tensor) -> torch.Tensor:
    """The squared distances between distinct examples, each pair once (the upper triangle; the
    median of the full off-diagonal, which holds each value twice, is the same)."""
    i, j = torch.triu_indices(sq.shape[0], sq.shape[0], offset=1, device=sq.device)
    return sq[i, j]


def _numpy_median(values: torch.Tensor) -> torch.Tensor:
    """``numpy.median``: the mean of the two middle values for an even count (torch.median
    takes the lower one).  0 for no values."""
    if values.numel() == 0:
        return values.new_tensor(0.0)
    v = values.sort().values
    m = v.numel()
    return (v[(m - 1) // 2] + v[m // 2]) / 2


def _gram(x: torch.Tensor, kernel: str, bandwidth: float) -> torch.Tensor:
    if kernel == "linear":
        return x @ x.T
    sq = torch.cdist(x, x).pow(2)
    med = _numpy_median(_distinct_pairs(sq))
    if med <= 0:
        raise ValueError("the RBF bandwidth is undefined: the median pairwise distance is 0")
    sigma2 = bandwidth**2 * med
    return torch.exp(-sq / (2 * sigma2))


def _hsic_biased(k: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    lc = lm - lm.mean(0, keepdim=True) - lm.mean(1, keepdim=True) + lm.mean()
    n = k.shape[0]
    return (kc * lc).sum() / (n - 1) ** 2


def _hsic_unbiased(k: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    kt, lt = k.masked_fill(eye, 0), lm.masked_fill(eye, 0)
    term1 = (kt * lt).sum()
    term2 = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (kt.sum(0) * lt.sum(0)).sum()
    return (term1 + term2 - term3) / (n * (n - 3))


@torch.no_grad()
def cka(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", unbiased: bool = False,
        bandwidth: float = 1.0) -> torch.Tensor:
    """Centred kernel alignment between two representations of the same examples.

    Parameters
    ----------
    x : (n, d1) tensor; y : (n, d2) tensor
        Features of the same ``n`` examples (rows); higher-dimensional features should be
        flattened per example first.  Computed in float64.
    kernel : {'linear', 'rbf'}
        'rbf': ``exp(-||a - b||^2 / (2 sigma^2))`` with ``sigma = bandwidth * sqrt(median of the
        squared pairwise distances between distinct examples)``, Kornblith et al.'s choice of a
        bandwidth proportional to the median distance; the median is numpy's (the mean of the
        two middle values for an even count), as in their numpy code.  (Their ``gram_rbf``
        takes the median over the whole matrix, zero diagonal included; here the diagonal is
        left out.)
    unbiased : bool
        Use the unbiased HSIC estimator (needs n >= 4) instead of the biased one.
    bandwidth : float
        The RBF bandwidth as a fraction of the median distance (ignored for 'linear').

    Returns
    -------
    0-d float64 tensor; 1 for representations equal up to an orthogonal transform and an
    isotropic scaling (linear kernel; the RBF kernel is invariant to both too, its bandwidth
    following the median distance).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be (n, d1) and (n, d2) with the same n, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    n = x.shape[0]
    if n < (4 if unbiased else 2):
        raise ValueError(f"need at least {4 if unbiased else 2} examples, got {n}")
    x, y = x.detach().double(), y.detach().double()
    k, lm = _gram(x, kernel, bandwidth), _gram(y, kernel, bandwidth)
    hsic = _hsic_unbiased if unbiased else _hsic_biased
    return hsic(k, lm) / torch.sqrt(hsic(k, k) * hsic(lm, lm))
