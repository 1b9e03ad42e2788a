"""Distillation losses against identities and direct computations (one section per method),
and the calling convention every loss keeps (the last section): shapes, targets, reductions.

The modules the methods train beside the student are tested with the models
(test_models_proxy.py, test_models_auxiliary.py); DLB's batch order with the method
(test_methods_dlb.py)."""
import inspect
import itertools
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from cmkd.distill import (
    c2kd_loss,
    dist_loss,
    dkd_loss,
    dkd_warmup,
    dlb_loss,
    dml_loss,
    filter_scores,
    fitnet_loss,
    hcl_loss,
    kd_loss,
    nkd_loss,
    non_target_logits,
    ofsd_mask,
    review_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    shake_loss,
    tckd_nckd,
    uskd_loss,
    zipf_loss,
    zipf_soft_labels,
)
from cmkd.distill.c2kd import crossmodal_term


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(12, 6, generator=g, dtype=torch.float64)
    t = torch.randn(12, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (12,), generator=g)
    return s, t, y


# ----------------------------------------------------------------------------- KD
@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g, dtype=torch.float64), \
        torch.randn(16, 5, generator=g, dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:reduction. .mean.")
@pytest.mark.parametrize("ours, torchs", [("mean", "batchmean"), ("elementwise_mean", "mean"),
                                          ("sum", "sum")])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_matches_torch_kl_div(logits, ours, torchs, T):
    s, t = logits
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction=torchs) * T * T
    assert kd_loss(s, t, temperature=T, reduction=ours).item() == pytest.approx(ref.item(),
                                                                                 rel=1e-12)


def test_kd_elementwise_mean_is_mean_over_classes(logits):
    s, t = logits
    assert kd_loss(s, t, reduction="elementwise_mean") == pytest.approx(kd_loss(s, t).item() / 5)


def test_kd_zero_when_student_equals_teacher(logits):
    s, _ = logits
    assert kd_loss(s, s.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(s, s + 7.0).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_kd_gradient_identity(logits, T):
    s, t = logits
    s = s.clone().requires_grad_(True)
    kd_loss(s, t, temperature=T).backward()
    expected = (F.softmax(s / T, 1) - F.softmax(t / T, 1)) / T * T**2 / s.shape[0]
    torch.testing.assert_close(s.grad, expected.detach())


def test_kd_runs_are_declared(logits):
    s, t = logits
    stacked = kd_loss(torch.stack([s, t]), torch.stack([t, s]), runs=True)
    assert stacked.shape == (2,)
    assert stacked[0].item() == pytest.approx(kd_loss(s, t).item())
    assert kd_loss(s, t, reduction="none").shape == (16,)
    assert kd_loss(torch.stack([s, t]), torch.stack([t, s]), runs=True,
                   reduction="none").shape == (2, 16)


def test_kd_errors(logits):
    s, t = logits
    with pytest.raises(ValueError, match=r"teacher logits must have the student's shape "
                                         r"\(16, 5\) \(batch, classes\), got \(16, 4\)"):
        kd_loss(s, t[:, :4])
    with pytest.raises(ValueError, match=r"student logits must have shape \(batch, classes\), "
                                         r"got \(2, 16, 5\); pass runs=True"):
        kd_loss(torch.stack([s, t]), torch.stack([t, s]))
    with pytest.raises(ValueError, match=r"student logits must have shape "
                                         r"\(runs, batch, classes\), got \(16, 5\)"):
        kd_loss(s, t, runs=True)
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none', "
                                         r"'elementwise_mean'\), got 'batchmeans'"):
        kd_loss(s, t, reduction="batchmeans")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(s, t, temperature=0)
    with pytest.raises(ValueError, match="class_dim must be -1 or 0"):
        kd_loss(s, t, class_dim=1)


def test_kd_class_dimension_can_lead(logits):
    s, t = logits
    runs_s, runs_t = torch.stack([s, t]), torch.stack([t, s])  # (runs, batch, classes)
    lead_s, lead_t = runs_s.permute(2, 0, 1), runs_t.permute(2, 0, 1)  # (classes, runs, batch)
    for red in ("mean", "elementwise_mean", "none", "sum"):
        torch.testing.assert_close(
            kd_loss(lead_s, lead_t, temperature=2.0, reduction=red, runs=True, class_dim=0),
            kd_loss(runs_s, runs_t, temperature=2.0, reduction=red, runs=True))
    # the target of class-major logits is (runs, batch) too, checked against the classes
    y = torch.randint(0, 5, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(kd_loss(lead_s, lead_t, y, runs=True, class_dim=0),
                               kd_loss(runs_s, runs_t, runs=True))
    with pytest.raises(ValueError, match=r"target must have shape \(2, 16\) .*got \(16, 2\)"):
        kd_loss(lead_s, lead_t, y.T, runs=True, class_dim=0)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 5\)"):
        kd_loss(lead_s, lead_t, y + 5, runs=True, class_dim=0)


# ----------------------------------------------------------------------------- DKD
def test_non_target_logits_drop_the_target():
    z = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])
    assert non_target_logits(z, torch.tensor([0, 2])).tolist() == [[1, 2, 3], [4, 5, 7]]


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_dkd_parts_recombine_into_kd(batch, T):
    """DKD Eq. (5): KD = TCKD + (1 - p_T^t) NCKD, probabilities at temperature T."""
    s, t, y = batch
    tckd, nckd = tckd_nckd(s, t, y, T)
    pt = F.softmax(t / T, -1).gather(1, y[:, None]).squeeze(1)
    kd = kd_loss(s, t, temperature=T, reduction="none")
    torch.testing.assert_close(tckd + (1 - pt) * nckd, kd)
    assert dkd_loss(s, t, y, alpha=1, beta=1, temperature=T).item() > kd.mean().item()


def test_dkd_zero_when_equal_and_direct_values(batch):
    s, t, y = batch
    assert dkd_loss(s, s.clone(), y).abs().item() < 1e-12
    # NCKD against a direct softmax over the other classes of sample 0
    _, nckd = tckd_nckd(s, t, y)
    keep = [c for c in range(6) if c != y[0]]
    p, q = F.softmax(t[0, keep], 0), F.softmax(s[0, keep], 0)
    assert nckd[0].item() == pytest.approx((p * (p / q).log()).sum().item())
    assert dkd_warmup(5, 20) == 0.25 and dkd_warmup(40, 20) == 1.0 and dkd_warmup(3, 0) == 1.0
    assert dkd_loss(s, t, y, warmup=0.5).item() == pytest.approx(0.5 * dkd_loss(s, t, y).item())


# ----------------------------------------------------------------------------- DIST
def test_dist_matches_scipy_pearson(batch):
    s, t, _ = batch
    ps, pt = F.softmax(s, -1).numpy(), F.softmax(t, -1).numpy()
    inter = np.mean([1 - stats.pearsonr(a, b).statistic for a, b in zip(ps, pt)])
    intra = np.mean([1 - stats.pearsonr(a, b).statistic for a, b in zip(ps.T, pt.T)])
    assert dist_loss(s, t, beta=1, gamma=2).item() == pytest.approx(inter + 2 * intra, rel=1e-6)
    assert dist_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # weights: the loss on a subset equals the loss on the kept rows
    w = torch.tensor([1, 0] * 6, dtype=torch.float64)
    assert dist_loss(s, t, weights=w).item() == pytest.approx(dist_loss(s[::2], t[::2]).item())
    assert dist_loss(s, t, weights=torch.zeros(12)).item() == 0.0


# ----------------------------------------------------------------------------- NKD, USKD, Zipf
def test_nkd_against_its_definition(batch):
    s, t, y = batch
    T, gamma = 2.0, 1.5
    total = 0.0
    for i in range(12):
        keep = [c for c in range(6) if c != y[i]]
        target = -F.softmax(t[i], 0)[y[i]] * F.log_softmax(s[i], 0)[y[i]]
        q_t, log_q_s = F.softmax(t[i, keep] / T, 0), F.log_softmax(s[i, keep] / T, 0)
        total += target - gamma * T**2 * (q_t * log_q_s).sum()
    assert nkd_loss(s, t, y, gamma=gamma, temperature=T).item() == pytest.approx(total.item() / 12)


def test_nkd_non_target_gradient_vanishes_when_student_matches_teacher(batch):
    s, t, y = batch
    s = t.clone().requires_grad_(True)
    nkd_loss(s, t, y, gamma=1.0).backward()
    g = s.grad.clone()
    # only the target term pushes: d/dz of -p_t log p_s(target) at equality is p_t (p_s - onehot)
    pt = F.softmax(t, -1).gather(1, y[:, None])
    expected = pt * (F.softmax(t, -1) - F.one_hot(y, 6)) / 12
    torch.testing.assert_close(g, expected)


def test_zipf_soft_labels_follow_ranks(batch):
    s, _, y = batch
    q = zipf_soft_labels(s, y, power=1.0)
    for i in range(12):
        z = non_target_logits(s, y)[i].numpy()
        ranks = stats.rankdata(-z, method="ordinal")
        np.testing.assert_allclose(q[i].numpy(), (1 / ranks) / (1 / ranks).sum())
    # the loss is zero when the student's non-target distribution is the Zipf label itself
    logits = torch.zeros(1, 5, dtype=torch.float64)
    logits[0, 1:] = torch.log(torch.tensor([1.0, 1 / 2, 1 / 3, 1 / 4], dtype=torch.float64))
    assert zipf_loss(logits, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-12)
    assert zipf_loss(s, y).item() > 0


def _log_softmax_np(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def _uskd_numpy(z, y, weak=None, alpha=1.0, beta=0.1, mu=0.005):
    """USKD written out per sample in numpy, from the official code's formulas."""
    n, c = z.shape
    log_p = np.stack([_log_softmax_np(r) for r in z])
    pt = np.exp(log_p[np.arange(n), y])
    soft = pt**2 + 1 - np.mean(pt**2)
    total = 0.0
    for i in range(n):
        if weak is None:
            score = z[i]
        else:
            w = np.exp(_log_softmax_np(weak[i]))
            score = w / (1 - w[y[i]] + 1e-6) + log_p[i] / (1 - log_p[i, y[i]] + 1e-6)
        ranks = stats.rankdata(-score, method="ordinal")  # over all C classes
        keep = [k for k in range(c) if k != y[i]]
        zipf = 1.0 / ranks[keep]
        zipf /= zipf.sum()
        term = -alpha * soft[i] * log_p[i, y[i]] - beta * (zipf * _log_softmax_np(z[i, keep])).sum()
        if weak is not None:
            smooth = np.full(c, 0.1 / c)
            smooth[y[i]] += 0.9
            term += -mu * (smooth * _log_softmax_np(weak[i])).sum()
        total += term
    return total / n


def test_uskd_by_hand():
    """One sample, C = 3: the target soft label is p^2 + 1 - mean(p^2) = 1, and the Zipf ranks
    cover all classes - target on top: non-target ranks 2, 3 -> (1/2, 1/3) / (5/6) = (.6, .4);
    target ranked last: non-target ranks 1, 2 -> (2/3, 1/3)."""
    y = torch.tensor([0])
    z = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    log_pt = math.log(math.exp(2) / (math.exp(2) + math.e + 1))
    log_q = [math.log(math.e / (math.e + 1)), math.log(1 / (math.e + 1))]
    ref = -log_pt - 0.1 * (0.6 * log_q[0] + 0.4 * log_q[1])
    assert uskd_loss(z, y).item() == pytest.approx(ref, rel=1e-12)
    z = torch.tensor([[0.0, 2.0, 1.0]], dtype=torch.float64)
    log_pt = math.log(1 / (math.exp(2) + math.e + 1))
    log_q = [math.log(math.exp(2) / (math.exp(2) + math.e)),
             math.log(math.e / (math.exp(2) + math.e))]
    ref = -log_pt - 0.1 * (2 / 3 * log_q[0] + 1 / 3 * log_q[1])
    assert uskd_loss(z, y).item() == pytest.approx(ref, rel=1e-12)


def test_uskd_against_numpy(batch):
    s, t, y = batch
    assert uskd_loss(s, y).item() == pytest.approx(_uskd_numpy(s.numpy(), y.numpy()), rel=1e-10)
    assert uskd_loss(s, y, alpha=0.5, beta=0.3).item() == pytest.approx(
        _uskd_numpy(s.numpy(), y.numpy(), alpha=0.5, beta=0.3), rel=1e-10)
    # with the weak head's logits: its term and its share of the ranking
    assert uskd_loss(s, y, weak=t).item() == pytest.approx(
        _uskd_numpy(s.numpy(), y.numpy(), weak=t.numpy()), rel=1e-10)
    # the batch mean of p_t^2 enters each sample's target label: 'none' keeps it
    assert uskd_loss(s, y, reduction="none").mean().item() == pytest.approx(
        uskd_loss(s, y).item())
    w = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(uskd_loss(s, y, weak=w), w)  # only the weak term reaches it
    smooth = 0.9 * F.one_hot(y, 6) + 0.1 / 6
    torch.testing.assert_close(g, 0.005 * (F.softmax(t, -1) - smooth) / 12)


# ----------------------------------------------------------------------------- DLB
def test_dlb_loss_is_kd_towards_detached_last_logits(batch):
    s, t, _ = batch
    last = t.clone().requires_grad_(True)
    loss = dlb_loss(s, last, temperature=3.0)
    assert loss.item() == pytest.approx(kd_loss(s, t, temperature=3.0).item())
    assert not loss.requires_grad


# ----------------------------------------------------------------------------- DML, SHAKE
def test_dml_loss_is_ce_plus_kd_and_routes_gradients(batch):
    s, t, y = batch
    a, b = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    out = dml_loss(a, b, y, temperature=2.0)
    la, lb = out["student"], out["teacher"]
    kd2 = lambda a, b: kd_loss(a, b, temperature=2.0)  # noqa: E731
    assert la.item() == pytest.approx((F.cross_entropy(s, y) + kd2(s, t)).item())
    assert lb.item() == pytest.approx((F.cross_entropy(t, y) + kd2(t, s)).item())
    assert out["total"].item() == pytest.approx(la.item() + lb.item())
    (ga,) = torch.autograd.grad(la, [a], retain_graph=True)
    assert torch.autograd.grad(la, [b], allow_unused=True)[0] is None
    torch.testing.assert_close(ga, (F.softmax(s, -1) - F.one_hot(y, 6)) / 12
                               + (F.softmax(s / 2, -1) - F.softmax(t / 2, -1)) * 2 / 12)
    per = dml_loss(s, t, y, reduction="none")
    assert per["total"].shape == (12,)
    assert per["total"].mean().item() == pytest.approx(dml_loss(s, t, y)["total"].item())


def _ln_pi(z):
    """SHAKE's logit normalisation written out: (z - mean) / sqrt(biased var + 1e-7) * 3.1415."""
    m = z.mean(-1, keepdim=True)
    v = ((z - m) ** 2).mean(-1, keepdim=True)
    return (z - m) / torch.sqrt(v + 1e-7) * 3.1415


def _kl(moving, towards, T):
    p = F.softmax(towards / T, -1)
    return (p * (p.log() - F.log_softmax(moving / T, -1))).sum(-1).mean() * T * T


def test_shake_loss_matches_the_official_formulas(batch):
    s, t, y = batch
    sh = (s + t) / 2 + 0.3
    out = shake_loss(s, t, y, shadow=sh)
    ns, nt, nsh = _ln_pi(s), _ln_pi(t), _ln_pi(sh)

    def ce(z):
        return -F.log_softmax(z, -1).gather(1, y[:, None]).mean()

    assert out["ce_student"].item() == pytest.approx(ce(ns).item())
    assert out["student_from_shadow"].item() == pytest.approx(_kl(ns, nsh, 4.0).item())
    assert out["shadow_from_student"].item() == pytest.approx(_kl(nsh, ns, 4.0).item())
    assert out["ce_shadow"].item() == pytest.approx(ce(nsh).item())
    assert out["mse_shadow"].item() == pytest.approx(((nsh - nt) ** 2).mean().item())
    ref = ce(ns) + _kl(ns, nsh, 4) + _kl(nsh, ns, 4) + ce(nsh) + ((nsh - nt) ** 2).mean()
    assert out["total"].item() == pytest.approx(ref.item())  # official: r 1, a 0, b 1
    with_kd = shake_loss(s, t, y, shadow=sh, alpha=0.5)["total"]
    assert with_kd.item() == pytest.approx((ref + 0.5 * _kl(ns, nt, 4)).item())
    raw = shake_loss(s, t, y, shadow=sh, layer_norm=False, temperature=1.0)
    assert raw["mse_shadow"].item() == pytest.approx(((sh - t) ** 2).mean().item())
    # gradients: the student's terms do not reach the shadow through the KD target, and back
    a, b = s.clone().requires_grad_(True), sh.clone().requires_grad_(True)
    o = shake_loss(a, t, y, shadow=b)
    ga = torch.autograd.grad(o["shadow_from_student"] + o["ce_shadow"] + o["mse_shadow"], a,
                             allow_unused=True)[0]
    assert ga is None


# ----------------------------------------------------------------------------- FitNet, RKD
def test_fitnet_loss():
    g = torch.Generator().manual_seed(1)
    fs, ft = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    reg = nn.Linear(5, 3)
    assert fitnet_loss(fs, ft, regressor=reg).item() == pytest.approx(
        ((reg(fs) - ft) ** 2).mean().item(), rel=1e-6)
    with torch.no_grad():  # a regressor that maps exactly gives zero
        reg.weight.zero_()
        reg.weight[:, :3] = torch.eye(3)
        reg.bias.zero_()
    assert fitnet_loss(fs, fs[:, :3], regressor=reg).item() == 0.0
    with pytest.raises(ValueError, match="teacher features' shape"):
        fitnet_loss(fs, ft)


def test_fitnet_layouts_and_reductions():
    g = torch.Generator().manual_seed(4)
    maps_s, maps_t = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    err = (maps_s - maps_t) ** 2
    assert fitnet_loss(maps_s, maps_t).item() == pytest.approx(err.mean().item(), rel=1e-6)
    torch.testing.assert_close(fitnet_loss(maps_s, maps_t, reduction="none"), err.mean((1, 2, 3)))
    assert fitnet_loss(maps_s, maps_t, reduction="sum").item() == pytest.approx(
        err.mean((1, 2, 3)).sum().item(), rel=1e-6)
    runs_s, runs_t = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    torch.testing.assert_close(fitnet_loss(runs_s, runs_t, runs=True),
                               ((runs_s - runs_t) ** 2).mean((1, 2)))
    # runs of maps: one value per run, the mean over batch and map
    rm_s, rm_t = torch.stack([maps_s, maps_t]), torch.stack([maps_t, maps_s])
    torch.testing.assert_close(fitnet_loss(rm_s, rm_t, runs=True),
                               ((rm_s - rm_t) ** 2).flatten(1).mean(1))


def test_fitnet_refuses_ambiguous_layouts():
    seq = torch.randn(4, 8, 10)  # (batch, C, T): not silently read as (runs, batch, dim)
    with pytest.raises(ValueError, match=r"student features must have shape \(batch, dim\) "
                                         r"or \(batch, C, H, W\), got \(4, 8, 10\); "
                                         r"a \(batch, C, T\)"):
        fitnet_loss(seq, seq.clone())
    with pytest.raises(ValueError, match=r"teacher features must have shape"):
        fitnet_loss(torch.randn(4, 80), seq)
    assert fitnet_loss(seq.flatten(1), seq.flatten(1)).item() == 0.0  # flattened: accepted
    with pytest.raises(ValueError, match=r"\(runs, batch, dim\) or \(runs, batch, C, H, W\), "
                                         r"got \(4, 8\)"):
        fitnet_loss(torch.randn(4, 8), torch.randn(4, 8), runs=True)


def test_rkd_against_loops_and_invariances():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(6, 4, generator=g, dtype=torch.float64)
    s = torch.randn(6, 3, generator=g, dtype=torch.float64)
    n = 6

    def dist(e):
        d = torch.cdist(e, e)
        return d / (d.sum() / (n * (n - 1)))

    def huber(a, b):
        x = (a - b).abs()
        return torch.where(x < 1, 0.5 * x**2, x - 0.5)

    assert rkd_distance_loss(s, t).item() == pytest.approx(huber(dist(s), dist(t)).mean().item())

    def angle(e, i, j, k):
        u, v = e[i] - e[j], e[k] - e[j]
        if u.norm() == 0 or v.norm() == 0:
            return 0.0
        return (u @ v / (u.norm() * v.norm())).item()

    ref = np.mean([huber(torch.tensor(angle(s, i, j, k)), torch.tensor(angle(t, i, j, k))).item()
                   for j, i, k in itertools.product(range(n), repeat=3)])
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref, rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    moved = 3.0 * t @ q + 1.5  # rotated, scaled, shifted: same relations
    assert rkd_loss(moved, t).item() == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- Review
def test_hcl_and_review_loss():
    g = torch.Generator().manual_seed(3)
    ft = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g)]
    assert hcl_loss(ft, [f.clone() for f in ft]).item() == 0.0
    fs = [f + 1.0 for f in ft]  # a constant offset: every pooled level errs by exactly 1
    assert hcl_loss(fs, ft).item() == pytest.approx(2.0)
    # one stage against the direct formula (8x8: full, 4x4, 2x2, 1x1 weights 1, .5, .25, .125)
    a, b = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    parts = [F.mse_loss(a, b)] + [F.mse_loss(F.adaptive_avg_pool2d(a, k),
                                             F.adaptive_avg_pool2d(b, k)) for k in (4, 2, 1)]
    ref = sum(w * p for w, p in zip((1, 0.5, 0.25, 0.125), parts)) / 1.875
    assert hcl_loss([a], [b]).item() == pytest.approx(ref.item(), rel=1e-6)
    # review_loss is HCL on what the fusion module gives (any callable on the list of maps)
    seen = []

    def fusion(maps):
        seen.append(maps)
        return [m + 1.0 for m in maps]

    student = [f.clone() for f in ft]
    assert review_loss(student, ft, fusion=fusion).item() == pytest.approx(2.0)
    assert seen == [student]


def _checkerboard(h, w):
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((-1.0) ** (i + j)).expand(2, 3, h, w)


@pytest.mark.parametrize("h, w, expected", [(2, 8, 2 / 3), (8, 2, 1 / 1.875), (8, 8, 1 / 1.875)])
def test_hcl_levels_follow_the_height(h, w, expected):
    """A +-1 checkerboard against zeros: the full-size error is 1 and every pooled level's is 0
    (each pooling window holds as many +1 as -1), so HCL = 1 / (total weight of the levels
    used).  Levels 4, 2, 1 are used when smaller than the HEIGHT (official ``l >= h``): height 2
    keeps only the 1x1 level, 1 / (1 + 1/2); height 8 keeps all, 1 / (1 + 1/2 + 1/4 + 1/8)."""
    fs = _checkerboard(h, w)
    assert hcl_loss([fs], [torch.zeros_like(fs)]).item() == pytest.approx(expected, rel=1e-6)


def test_hcl_errors_and_detach():
    a = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="one teacher feature map per student feature map"):
        hcl_loss([a], [a, a])
    with pytest.raises(ValueError, match=r"teacher map 0 must have the student map's shape"):
        hcl_loss([a], [a[:, :2]])
    with pytest.raises(ValueError, match=r"student map 0 must have shape \(batch, C, H, W\)"):
        hcl_loss([a.flatten(2)], [a.flatten(2)])
    t = a.clone().requires_grad_(True)
    assert not hcl_loss([a], [t]).requires_grad
    assert hcl_loss([a + 1], [t], detach_teacher=False).requires_grad


# ----------------------------------------------------------------------------- C2KD
def test_krc_filter_keeps_and_drops_the_right_samples():
    t = torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 4)
    s = torch.tensor([[4.0, 3.0, 2.0, 1.0],   # same ranking: tau 1 -> kept
                      [1.0, 2.0, 3.0, 4.0],   # reversed: tau -1 -> dropped
                      [3.0, 4.0, 1.0, 2.0],   # 4 of 6 pairs concordant: tau 1/3 -> kept
                      [3.0, 1.0, 4.0, 2.0]])  # 3 concordant, 3 discordant: tau 0, dropped
    assert filter_scores(t, s).tolist() == pytest.approx([1.0, -1.0, 1 / 3, 0.0], abs=1e-6)
    assert ofsd_mask(t, s, 0.0).tolist() == [True, False, True, False]
    assert ofsd_mask(t, s, -0.5).tolist() == [True, False, True, True]
    assert ofsd_mask(t, s, 0.0, "none").all()
    s_nan = s.clone()
    s_nan[0, 0] = float("nan")
    assert not ofsd_mask(t, s_nan)[0]


def test_other_filters_against_direct_formulas(batch):
    s, t, y = batch
    cos = (s * t).sum(1) / (s.norm(dim=1) * t.norm(dim=1))
    torch.testing.assert_close(filter_scores(t, s, "cosine"), cos)
    pear = [stats.pearsonr(a, b).statistic for a, b in zip(t.numpy(), s.numpy())]
    np.testing.assert_allclose(filter_scores(t, s, "pearson").numpy(), pear, rtol=1e-9)
    # gradcos: cosine of autograd's per-sample gradients of the two losses w.r.t. the logits
    z = s.clone().requires_grad_(True)
    (g_kd,) = torch.autograd.grad(kd_loss(z, t, reduction="none").sum(), z)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), z)
    torch.testing.assert_close(filter_scores(t, s, "gradcos", y),
                               F.cosine_similarity(g_kd, g_ce, dim=1))
    with pytest.raises(ValueError, match="needs the target"):
        filter_scores(t, s, "gradcos")
    with pytest.raises(ValueError, match="filter must be one of"):
        filter_scores(t, s, "l2")


def test_c2kd_zero_distillation_when_sides_agree(batch):
    s, t, y = batch
    out = c2kd_loss(s, s.clone(), y, student_proxy=s.clone(), teacher_proxy=s.clone())
    assert out["cross"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["proxy_student"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["keep"].item() == 1.0
    assert out["total"].item() == pytest.approx(2 * F.cross_entropy(s, y).item())


def test_c2kd_empty_mask_gives_zero_not_nan(batch):
    s, _, y = batch
    sr = s.clone().requires_grad_(True)
    out = c2kd_loss(sr, -s, y, ofs=True, omega=0.0)  # reversed rankings: nothing kept
    assert out["keep"].item() == 0.0 and out["cross"].item() == 0.0
    out["total"].backward()
    assert torch.isfinite(sr.grad).all()
    for base in ("kl", "dist", "nkd"):
        v = crossmodal_term(s, -s, y, torch.zeros(12, dtype=torch.bool), base=base)
        assert v.item() == 0.0


def test_c2kd_non_target_kl_remove_and_zero_modes(batch):
    s, t, y = batch
    mask = torch.ones(12, dtype=torch.bool)
    mask[::3] = False
    keep = mask.nonzero().squeeze(1)
    # paper: target removed, mean over kept samples
    got = crossmodal_term(s, t, y, mask)
    ref = torch.stack([F.kl_div(F.log_softmax(non_target_logits(s, y)[i], 0),
                                F.softmax(non_target_logits(t, y)[i], 0), reduction="sum")
                       for i in keep]).mean()
    assert got.item() == pytest.approx(ref.item())
    # official: target logit multiplied by 0, all classes kept, averaged over the whole batch
    nt = 1 - F.one_hot(y, 6).double()
    got = crossmodal_term(s, t, y, mask, target_mode="zero", average="batch")
    per = F.kl_div(F.log_softmax(s * nt, 1), F.softmax(t * nt, 1), reduction="none").sum(1)
    assert got.item() == pytest.approx((per * mask).sum().item() / 12)


def test_c2kd_dist_base_keeps_class_identity_when_masked(batch):
    """DIST inside C2KD against scipy on hand-built non-target distributions: 'masked' keeps C
    columns (the target's probability 0, the others renormalised per sample); 'removed' puts
    the C - 1 non-target columns side by side."""
    s, t, y = batch
    mask = torch.ones(12, dtype=torch.bool)

    def dist_ref(ps, pt):
        inter = np.mean([1 - stats.pearsonr(a, b).statistic for a, b in zip(ps, pt)])
        intra = np.mean([1 - stats.pearsonr(a, b).statistic for a, b in zip(ps.T, pt.T)])
        return inter + intra

    def renorm(z):
        p = F.softmax(z, -1).numpy().copy()
        p[np.arange(12), y.numpy()] = 0
        return p / p.sum(1, keepdims=True)

    masked = crossmodal_term(s, t, y, mask, base="dist")
    assert masked.item() == pytest.approx(dist_ref(renorm(s), renorm(t)), rel=1e-6)
    removed = crossmodal_term(s, t, y, mask, base="dist", dist_columns="removed")
    ps = F.softmax(non_target_logits(s, y), -1).numpy()
    pt = F.softmax(non_target_logits(t, y), -1).numpy()
    assert removed.item() == pytest.approx(dist_ref(ps, pt), rel=1e-6)
    assert abs(masked.item() - removed.item()) > 1e-3
    # the KL base does not depend on column identity; the gradient through -inf is finite
    assert crossmodal_term(s, t, y, mask, dist_columns="removed").item() == pytest.approx(
        crossmodal_term(s, t, y, mask).item())
    sr = s.clone().requires_grad_(True)
    c2kd_loss(sr, t, y, base="dist")["total"].backward()
    assert torch.isfinite(sr.grad).all()
    with pytest.raises(ValueError, match="dist_columns must be one of"):
        crossmodal_term(s, t, y, mask, base="dist", dist_columns="shifted")


def test_c2kd_total_is_eq6(batch):
    s, t, y = batch
    g = torch.Generator().manual_seed(9)
    sp, tp = torch.randn(12, 6, generator=g).double(), torch.randn(12, 6, generator=g).double()
    out = c2kd_loss(s, t, y, student_proxy=sp, teacher_proxy=tp, lambdas=(0.5, 2.0, 3.0))
    kl = lambda a, b: kd_loss(a, b, reduction="none")  # noqa: E731  KL(b || a)
    m = ofsd_mask(tp, sp)
    nts, ntt = non_target_logits(sp, y), non_target_logits(tp, y)
    cross = ((kl(nts, ntt) + kl(ntt, nts)) * m).sum() / m.sum()
    ref = (F.cross_entropy(s, y) + F.cross_entropy(t, y)
           + 0.5 * (kl(tp, t) + kl(t, tp)).mean() + 2.0 * (kl(sp, s) + kl(s, sp)).mean()
           + 3.0 * cross)
    assert out["total"].item() == pytest.approx(ref.item())
    assert out["keep"].item() == pytest.approx(m.double().mean().item())
    # ablation switches: no BD -> no teacher CE; no NT -> full-distribution KL; no OFS -> all kept
    plain = c2kd_loss(s, t, y, bidirectional=False, ofs=False, nt=False)
    assert plain["total"].item() == pytest.approx(
        (F.cross_entropy(s, y) + kd_loss(s, t)).item())
    with pytest.raises(ValueError, match="both proxy logits or neither"):
        c2kd_loss(s, t, y, student_proxy=sp)
    with pytest.raises(ValueError, match="target_mode must be one of"):
        c2kd_loss(s, t, y, target_mode="drop")


def test_c2kd_leading_run_dims_match_single_runs(batch):
    s, t, y = batch
    stacked = c2kd_loss(torch.stack([s, t]), torch.stack([t, s]), torch.stack([y, y]), runs=True)
    single = c2kd_loss(t, s, y)
    assert stacked["total"].shape == (2,)
    assert stacked["total"][1].item() == pytest.approx(single["total"].item())


def test_c2kd_modules_plug_into_dist_and_nkd(batch):
    """Fig. 5: the crossmodal term with DIST or NKD in place of the KL."""
    from cmkd.distill.nkd import nkd_parts

    s, t, y = batch
    everyone = torch.ones(12, dtype=torch.bool)
    half = torch.tensor([True, False] * 6)
    _, non_target = nkd_parts(s, t, y)
    assert crossmodal_term(s, t, y, everyone, base="nkd").item() == pytest.approx(
        non_target.mean().item())
    assert crossmodal_term(s, t, y, half, base="nkd").item() == pytest.approx(
        non_target[half].mean().item())
    nts, ntt = non_target_logits(s, y), non_target_logits(t, y)
    assert crossmodal_term(s, t, y, half, base="dist", dist_columns="removed").item() == \
        pytest.approx(dist_loss(nts[half], ntt[half]).item())
    target = F.one_hot(y, 6).bool()
    ms, mt = s.masked_fill(target, float("-inf")), t.masked_fill(target, float("-inf"))
    assert crossmodal_term(s, t, y, half, base="dist").item() == pytest.approx(
        dist_loss(ms[half], mt[half]).item())
    out = c2kd_loss(s, t, y, base="dist", bidirectional=False)
    m = ofsd_mask(t, s)
    assert out["cross"].item() == pytest.approx(dist_loss(ms[m], mt[m]).item())


# ----------------------------------------------------------------------------- the convention
def _logit_losses():
    """Every logit loss called the same way: (student, teacher, target) -> a tensor or the dict's
    'total'.  Self-distillation losses take no teacher."""
    return {
        "kd": lambda s, t, y, **k: kd_loss(s, t, y, **k),
        "dkd": lambda s, t, y, **k: dkd_loss(s, t, y, **k),
        "nkd": lambda s, t, y, **k: nkd_loss(s, t, y, **k),
        "dist": lambda s, t, y, **k: dist_loss(s, t, y, **k),
        "dlb": lambda s, t, y, **k: dlb_loss(s, t, y, **k),
        "dml": lambda s, t, y, **k: dml_loss(s, t, y, **k)["total"],
        "shake": lambda s, t, y, **k: shake_loss(s, t, y, shadow=0.5 * s + 0.1, **k)["total"],
        "c2kd": lambda s, t, y, **k: c2kd_loss(s, t, y, **k)["total"],
        "zipf": lambda s, t, y, **k: zipf_loss(s, y, **k),
        "uskd": lambda s, t, y, **k: uskd_loss(s, y, **k),
    }


@pytest.mark.parametrize("name", list(_logit_losses()))
def test_every_logit_loss_runs_dimension_matches_single_runs(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    stacked = fn(torch.stack([s, t]), torch.stack([t, s]), torch.stack([y, y]), runs=True)
    assert stacked.shape == (2,)
    assert stacked[1].item() == pytest.approx(fn(t, s, y).item(), rel=1e-10)


@pytest.mark.parametrize("name", list(_logit_losses()))
def test_every_logit_loss_refuses_ambiguous_inputs(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    with pytest.raises(ValueError, match=r"student logits must have shape \(batch, classes\), "
                                         r"got \(2, 12, 6\); pass runs=True"):
        fn(torch.stack([s, t]), torch.stack([t, s]), torch.stack([y, y]))
    with pytest.raises(ValueError, match=r"\(runs, batch, classes\), got \(12, 6\)"):
        fn(s, t, y, runs=True)
    # checked by every loss, the ones that read no labels (KD, DIST, DLB) included
    with pytest.raises(ValueError, match=r"target must have shape \(12,\) \(the logits without "
                                         r"the class dimension\), got \(5,\)"):
        fn(s, t, y[:5])
    with pytest.raises(ValueError, match=r"target must have shape \(12,\) .*got \(12, 6\)"):
        fn(s, t, F.softmax(t, -1))  # soft labels are not class indices
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 6\)"):
        fn(s, t, torch.full((12,), 6))
    with pytest.raises(ValueError, match=r"target must hold int64 class indices, got dtype "
                                         r"torch.float64"):
        fn(s, t, y.double())
    with pytest.raises(ValueError, match=r"target must hold int64 class indices, got dtype "
                                         r"torch.bool"):
        fn(s, t, y > 2)
    if name not in ("zipf", "uskd"):
        with pytest.raises(ValueError, match=r"teacher logits must have the student's shape"):
            fn(s, t[:, :5], y)


@pytest.mark.parametrize("name", ["kd", "dkd", "nkd", "dlb", "dml", "shake", "zipf", "uskd"])
def test_per_sample_reductions(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    per = fn(s, t, y, reduction="none")
    assert per.shape == (12,)
    assert per.mean().item() == pytest.approx(fn(s, t, y).item(), rel=1e-12)
    assert per.sum().item() == pytest.approx(fn(s, t, y, reduction="sum").item(), rel=1e-12)


@pytest.mark.parametrize("name", ["dist", "c2kd"])
def test_batch_level_losses_take_mean_only(batch, name):
    s, t, y = batch
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean',\)"):
        _logit_losses()[name](s, t, y, reduction="none")
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean',\)"):
        rkd_loss(s, t, reduction="sum")


@pytest.mark.parametrize("name", ["kd", "dkd", "nkd", "dist", "dlb"])
def test_teacher_detached_unless_asked(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    tt = t.clone().requires_grad_(True)
    assert not fn(s, tt, y).requires_grad
    (g,) = torch.autograd.grad(fn(s, tt, y, detach_teacher=False), tt)
    assert g.abs().sum() > 0


def test_feature_losses_detach_the_teacher():
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g).requires_grad_(True)
    assert not rkd_loss(s, t).requires_grad
    assert rkd_loss(s, t, detach_teacher=False).requires_grad
    assert not fitnet_loss(s[:, :3], t).requires_grad
    with pytest.raises(ValueError, match=r"student embeddings must have shape \(batch, dim\)"):
        rkd_loss(torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2))
    with pytest.raises(ValueError, match=r"same leading \(batch >= 3\)"):
        rkd_loss(s[:2], t[:2])


# ----------------------------------------------------------------------------- positional mistakes
LOSSES_WITH_TARGET = {"kd": kd_loss, "dkd": dkd_loss, "nkd": nkd_loss, "dist": dist_loss,
                      "dlb": dlb_loss, "dml": dml_loss, "shake": shake_loss, "c2kd": c2kd_loss,
                      "zipf": zipf_loss, "uskd": uskd_loss}
TARGET_OPTIONAL = ("kd", "dist", "dlb")  # the losses that read no labels
FLAGS = {"kd": ("detach_teacher", "runs"), "dkd": ("detach_teacher", "runs"),
         "nkd": ("detach_teacher", "runs"), "dist": ("detach_teacher", "runs"),
         "dlb": ("detach_teacher", "runs"), "dml": ("runs",),
         "shake": ("detach_teacher", "runs"), "c2kd": ("bidirectional", "runs"),
         "zipf": ("runs",), "uskd": ("runs",)}


def _meant(fn):
    """The keyword a number in the target's place was meant for, read from the signature: the
    temperature, else the first keyword-only float hyperparameter."""
    params = inspect.signature(fn).parameters
    if "temperature" in params:
        return "temperature"
    return next(n for n, p in params.items()
                if p.kind is p.KEYWORD_ONLY and type(p.default) is float)


def test_the_table_covers_every_loss_with_a_target():
    import cmkd.distill as distill

    with_target = {n[:-5] for n in distill.__all__ if n.endswith("_loss")
                   and "target" in inspect.signature(getattr(distill, n)).parameters}
    assert with_target == set(LOSSES_WITH_TARGET) == set(_logit_losses())
    for name, fn in LOSSES_WITH_TARGET.items():
        params = inspect.signature(fn).parameters
        after = list(params)[list(params).index("target") + 1:]
        assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in after), name
        assert (params["target"].default is None) == (name in TARGET_OPTIONAL), name
        assert set(FLAGS[name]) <= {p for p in after if type(params[p].default) is bool}, name
    assert [_meant(f) for f in (zipf_loss, uskd_loss)] == ["power", "alpha"]


@pytest.mark.parametrize("value", [4.0, 3, np.float64(0.5)])
@pytest.mark.parametrize("name", list(LOSSES_WITH_TARGET))
def test_a_number_in_the_target_place_is_refused_naming_the_keyword_meant(batch, name, value):
    """``kd_loss(s, t, 4.0)`` once ran silently at temperature 1."""
    s, t, _ = batch
    meant = _meant(LOSSES_WITH_TARGET[name])
    expected = (f"target must be a tensor of int64 class indices of shape (12,), got the "
                f"{type(value).__name__} {value}; hyperparameters are keyword-only: did you mean "
                f"{meant}={value}?")
    with pytest.raises(TypeError) as err:
        _logit_losses()[name](s, t, value)
    assert str(err.value) == expected
    fn = _logit_losses()[name]
    fn(s, t, torch.zeros(12, dtype=torch.long), **{meant: 4.0})  # the keyword exists


@pytest.mark.parametrize("name", list(LOSSES_WITH_TARGET))
def test_other_misplaced_values_in_the_target_place(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    meant = _meant(LOSSES_WITH_TARGET[name])
    for flag in (True, False):
        hint = " or ".join(f"{f}={flag}" for f in FLAGS[name])
        with pytest.raises(TypeError) as err:
            fn(s, t, flag)
        assert str(err.value) == (f"target must be a tensor of int64 class indices of shape "
                                  f"(12,), got the bool {flag}; flags are keyword-only: did you "
                                  f"mean {hint}?")
    with pytest.raises(ValueError, match=re.escape(
            f"target must have shape (12,) (the logits without the class dimension), got a 0-d "
            f"tensor; hyperparameters are keyword-only: did you mean {meant}=4.0?")):
        fn(s, t, torch.tensor(4.0))
    with pytest.raises(TypeError, match=re.escape(
            "target must be a tensor of int64 class indices of shape (12,), got list")):
        fn(s, t, y.tolist())
    stacked = torch.stack([s, t]), torch.stack([t, s])  # with runs, the target is (runs, batch)
    with pytest.raises(TypeError, match=re.escape(
            f"of shape (2, 12), got the float 4.0; hyperparameters are keyword-only: did you "
            f"mean {meant}=4.0?")):
        fn(*stacked, 4.0, runs=True)
    with pytest.raises(ValueError, match=re.escape("target must have shape (2, 12)")):
        fn(*stacked, y, runs=True)


@pytest.mark.parametrize("name", list(LOSSES_WITH_TARGET))
def test_a_missing_target_is_refused_where_the_loss_reads_labels(batch, name):
    s, t, y = batch
    fn = _logit_losses()[name]
    if name in TARGET_OPTIONAL:  # None or a valid target: the same value as without one
        torch.testing.assert_close(fn(s, t, None), LOSSES_WITH_TARGET[name](s, t))
        torch.testing.assert_close(fn(s, t, y), LOSSES_WITH_TARGET[name](s, t))
    else:
        with pytest.raises(TypeError, match=re.escape(
                "target is required: a tensor of int64 class indices of shape (12,), got None")):
            fn(s, t, None)


def test_dist_points_a_float_target_to_weights(batch):
    s, t, y = batch
    with pytest.raises(ValueError, match=re.escape(
            "target must hold int64 class indices, got dtype torch.float64; per-sample weights "
            "go in weights=")):
        dist_loss(s, t, torch.ones(12, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got dtype torch.float64$"):  # no such hint elsewhere
        kd_loss(s, t, y.double())


def _every_loss():
    """Every loss with a reduction, called on valid inputs of its kind."""
    g = torch.Generator().manual_seed(9)
    emb_s, emb_t = torch.randn(6, 4, generator=g), torch.randn(6, 3, generator=g)
    maps = [torch.randn(2, 3, 4, 4, generator=g)]
    losses = dict(_logit_losses())
    losses.update({
        "fitnet": lambda s, t, y, **k: fitnet_loss(emb_s, emb_s.clone(), **k),
        "rkd": lambda s, t, y, **k: rkd_loss(emb_s, emb_t, **k),
        "rkd_distance": lambda s, t, y, **k: rkd_distance_loss(emb_s, emb_t, **k),
        "rkd_angle": lambda s, t, y, **k: rkd_angle_loss(emb_s, emb_t, **k),
        "hcl": lambda s, t, y, **k: hcl_loss(maps, maps, **k),
        "review": lambda s, t, y, **k: review_loss(maps, maps, fusion=list, **k),
    })
    return losses


@pytest.mark.parametrize("name", list(_every_loss()))
def test_batchmean_is_refused_with_a_pointer_to_mean(batch, name):
    s, t, y = batch
    fn = _every_loss()[name]
    # DLB is KD towards the last logits and takes KD's reductions, 'elementwise_mean' included
    where = "the option" if name in ("kd", "dlb") else "kd_loss's option"
    with pytest.raises(ValueError) as err:
        fn(s, t, y, reduction="batchmean")
    assert str(err.value) == (
        "reduction='batchmean' is torch's name for what is 'mean' here (for a KL, the KL "
        "divergence averaged over samples): use reduction='mean'.  torch's 'mean', the default "
        "of torch.nn.KLDivLoss() in MFH's official code (the KL divided by the number of "
        f"classes too), is {where} 'elementwise_mean'")
    fn(s, t, y, reduction="mean")  # what the message says to use is accepted


@pytest.mark.filterwarnings("ignore:reduction. .mean.")
def test_batchmean_hint_is_what_torch_computes(batch):
    """The equivalences the message states: torch's 'batchmean' is 'mean' here, torch's 'mean'
    (KLDivLoss's default) is KD's 'elementwise_mean'."""
    s, t, _ = batch
    log_s, p_t = F.log_softmax(s, -1), F.softmax(t, -1)
    assert kd_loss(s, t, reduction="mean").item() == pytest.approx(
        F.kl_div(log_s, p_t, reduction="batchmean").item(), rel=1e-12)
    assert kd_loss(s, t, reduction="elementwise_mean").item() == pytest.approx(
        torch.nn.KLDivLoss()(log_s, p_t).item(), rel=1e-12)


@pytest.mark.parametrize("call", [
    lambda a, b: fitnet_loss(a, b, 4.0),
    lambda a, b: rkd_loss(a, b, 25.0),
    lambda a, b: rkd_distance_loss(a, b, "mean"),
    lambda a, b: rkd_angle_loss(a, b, True),
    lambda a, b: hcl_loss([a], [b], "mean"),
    lambda a, b: review_loss([a], [b], list),
], ids=["fitnet", "rkd", "rkd_distance", "rkd_angle", "hcl", "review"])
def test_losses_without_a_target_take_nothing_positional_after_the_teacher(call):
    a = torch.randn(6, 4)
    with pytest.raises(TypeError, match=r"takes 2 positional arguments but 3 were given"):
        call(a, a.clone())
