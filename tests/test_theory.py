"""cmkd.theory: Lemma 1 against a numerical maximisation, Lemma 2 and the flow on planted data."""

import numpy as np
import pytest
import torch

from cmkd import theory


@pytest.mark.parametrize("eps", [0.01, 0.3, 1.0, 2.5, 6.0, 12.0])
def test_lemma1_closed_form_equals_numerical_maximum(eps):
    value, a, t = theory.lemma1_numeric(eps)
    assert value == pytest.approx(float(theory.lemma1_max(eps)), rel=1e-9, abs=1e-15)
    assert abs(t) == pytest.approx(eps)  # the maximum sits on the edge |a - b| = eps


def test_lemma1_closed_form_limits_and_the_papers_argmax():
    eps = np.array([0.0, 1e-4, 1e-2])
    got = theory.lemma1_max(eps)
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], eps[1:] ** 2 / 8, rtol=1e-3)  # KL ~ sigma'(0) t^2 / 2
    assert np.all(np.diff(theory.lemma1_max(np.linspace(0, 20, 50))) > 0)
    # the paper's maximiser of l(a + eps, a): a = -ln((e^eps (1 - eps) - 1) / (1 + eps - e^eps))
    e = 1.0
    a = -np.log((np.exp(e) * (1 - e) - 1) / (1 + e - np.exp(e)))
    assert float(theory.bernoulli_kl_logits(a + e, a)) == pytest.approx(
        float(theory.lemma1_max(e)), rel=1e-12)


def test_bernoulli_kl_is_the_kl_and_its_derivative_is_eq9():
    a = torch.tensor([-3.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    b = torch.tensor([1.0, -0.5, 0.7, -40.0], dtype=torch.float64, requires_grad=True)
    kl = theory.bernoulli_kl_logits(b, a)
    p, q = torch.sigmoid(a), torch.sigmoid(b.detach())
    direct = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    torch.testing.assert_close(kl.detach(), direct)
    assert kl[1].item() == 0.0 and (kl >= 0).all()
    (grad,) = torch.autograd.grad(kl.sum(), b)
    torch.testing.assert_close(grad, torch.sigmoid(b.detach()) - p)
    np.testing.assert_allclose(theory.bernoulli_kl_logits(b.detach().numpy(), a.numpy()),
                               kl.detach().numpy())


def test_bound_is_zero_at_gamma_one_and_falls_with_gamma():
    gammas = np.linspace(0, 1, 11)
    bound = theory.theorem41_bound(100, 1.5, 0.5, gammas)
    assert bound[-1] == 0.0 and np.all(np.diff(bound) < 0)
    assert theory.lemma1_max(theory.vacuous_eps_star()) == pytest.approx(np.log(2))


def _draw(seed, d=6, shared=3, n=80):
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((shared, n))
    za = np.vstack([common, rng.standard_normal((d - shared, n))])
    zb = np.vstack([common, rng.standard_normal((d - shared, n))])
    c = theory.best_scale(za, zb)
    return c * za, c * zb


def test_best_scale_gives_the_smallest_lambda():
    za, zb = _draw(0)
    lam = max(theory.measure_lambda(za), theory.measure_lambda(zb))
    for factor in (0.9, 1.1):
        assert max(theory.measure_lambda(factor * za), theory.measure_lambda(factor * zb)) > lam
    assert lam >= 1.0


@pytest.mark.parametrize("seed", range(4))
def test_lemma2_and_the_theorem_hold_on_random_data(seed):
    za, zb = _draw(seed)
    rng = np.random.default_rng(100 + seed)
    theta_t = rng.standard_normal(za.shape[0])
    theta_t /= np.linalg.norm(theta_t)
    a = theta_t @ za
    lam = max(theory.measure_lambda(za), theory.measure_lambda(zb))
    gap = theory.gram_gap(za, zb)
    star = np.linalg.solve(zb @ zb.T, zb @ za.T @ theta_t)
    eps_star = lam**1.5 * (lam**2 + 1) * gap
    assert np.linalg.norm(star @ zb - a) <= eps_star
    theta, trace = theory.gradient_flow(zb, a, step=0.2, steps=3000)
    assert np.all(np.diff(trace) <= 1e-12), "gradient descent with a small step never climbs"
    final = theory.distillation_risk(theta, zb, a)
    assert final <= theory.distillation_risk(star, zb, a) + 1e-9
    assert final <= len(a) * theory.lemma1_max(eps_star)


def test_flow_matches_the_teacher_when_modalities_coincide():
    za, _ = _draw(1)
    theta_t = np.ones(za.shape[0]) / np.sqrt(za.shape[0])
    a = theta_t @ za
    theta, trace = theory.gradient_flow(np.stack([za, za]), np.stack([a, a]), step=0.5,
                                        steps=4000)
    assert trace.shape == (50, 2)
    np.testing.assert_allclose(theta, np.stack([theta_t, theta_t]), atol=1e-6)
    assert trace[-1].max() < 1e-12


def test_measure_lambda_rejects_singular_data():
    with pytest.raises(ValueError, match="singular"):
        theory.measure_lambda(np.ones((3, 10)))
    with pytest.raises(ValueError, match="eps"):
        theory.lemma1_max(-1.0)


def _draws(risk_slope=-1e-3, held=True, vacuous_below_one=1.0):
    """Rows as theorem41.run returns them (the columns its claims read), three draws per gamma,
    the final risk per sample falling by ``risk_slope`` per unit gamma."""
    import pandas as pd

    rows = []
    for gamma in (0.0, 0.5, 1.0):
        for r, e in enumerate((-1e-5, 0.0, 1e-5)):
            rows.append({"gamma": gamma, "run": r, "lam": 2.0, "gap": 0.1, "eps_min": 0.1,
                         "eps_star": 1.0, "bound_per_sample": 1.0,
                         "comparator_per_sample": 1e-3, "initial_risk_per_sample": 0.7,
                         "final_risk_per_sample": 2e-3 + risk_slope * gamma + e,
                         "held": held or r > 0, "lemma2_held": True,
                         "vacuous": gamma == 1.0 or vacuous_below_one > r / 3})
    return pd.DataFrame(rows)


def test_theorem41_claims_exact_checks_and_the_trend():
    from cmkd.experiments import theorem41 as t41

    out = t41.claims(_draws())
    assert list(out.columns) == ["artefact", "claim", "evidence", "interval", "verdict"]
    assert out.verdict.tolist() == ["held", "held", "held", "NOT held"]
    assert out.interval.tolist()[:2] == ["exact", "exact"] and out.interval[3] == "exact"
    assert out.interval[2].startswith("-0.001 [") and out.interval[2].endswith(
        "risk / n per unit gamma")
    assert out.evidence[0] == "held in 9 of 9 draws (an inequality checked on each draw)"
    out = t41.claims(_draws(risk_slope=0.0, held=False, vacuous_below_one=0.5))
    assert out.verdict.tolist() == ["NOT held", "held", "undecided", "held"]
    assert out.evidence[0].startswith("held in 6 of 9 draws")
    assert t41.claims(_draws(risk_slope=1e-3)).verdict[2] == "NOT held"
