"""KRC against scipy.stats.kendalltau and a direct pair loop; CKA against a numpy HSIC formula;
StackScores (the task metrics of a stack of runs) against torchmetrics run by run."""
import itertools

import numpy as np
import pytest
import torch
from scipy import stats
from torchmetrics.classification import MulticlassAccuracy

from cmkd.metrics import cka, kendall_tau
from cmkd.metrics import krc as krc_module
from cmkd.metrics.task import StackScores, task_metrics


def _tau_a_loop(x, y):
    c = len(x)
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(c) for j in range(i + 1, c))
    return s / (c * (c - 1) / 2)


@pytest.mark.parametrize("method", ["pairs", "merge"])
@pytest.mark.parametrize("classes", [2, 5, 28, 130])
def test_kendall_tau_matches_scipy_on_random_rows(classes, method):
    g = np.random.default_rng(classes)
    x, y = g.standard_normal((40, classes)), g.standard_normal((40, classes))
    y[:10] = x[:10] + 0.3 * g.standard_normal((10, classes))  # some correlated rows
    ref = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    for variant in ("a", "b"):  # without ties tau-a equals tau-b
        ours = kendall_tau(torch.from_numpy(x), torch.from_numpy(y), variant, method).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    ours32 = kendall_tau(torch.from_numpy(x).float(), torch.from_numpy(y).float(), "b",
                         method).numpy()
    np.testing.assert_allclose(ours32, ref, atol=1e-6)


@pytest.mark.parametrize("method", ["pairs", "merge"])
def test_kendall_tau_with_ties_matches_scipy_b_and_the_pair_loop_a(method):
    g = np.random.default_rng(1)
    x = g.integers(0, 4, (50, 12)).astype(float)
    y = g.integers(0, 3, (50, 12)).astype(float)
    x[0] = 1.0  # a constant row: NaN for tau-b, as scipy
    ref_b = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    ours_b = kendall_tau(torch.from_numpy(x), torch.from_numpy(y), "b", method).numpy()
    np.testing.assert_allclose(ours_b, ref_b, atol=1e-6)
    ours_a = kendall_tau(torch.from_numpy(x), torch.from_numpy(y), "a", method).numpy()
    np.testing.assert_allclose(ours_a, [_tau_a_loop(a, b) for a, b in zip(x, y)], atol=1e-12)
    assert np.any(np.abs(ours_a - ours_b) > 1e-3), "ties make tau-a and tau-b differ"


def test_kendall_tau_chunking_and_leading_dims(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 7, 30, generator=g), torch.randn(3, 7, 30, generator=g)
    whole = kendall_tau(x, y, "b")
    monkeypatch.setattr(krc_module, "CHUNK_ELEMENTS", 30 * 30 * 2)
    assert torch.equal(kendall_tau(x, y, "b", "pairs"), whole)
    assert torch.equal(kendall_tau(x, y, "a", "pairs"), kendall_tau(x, y, "a", "merge"))
    assert torch.allclose(kendall_tau(x, y, "b", "merge"), whole, atol=1e-6)
    assert whole.shape == (3, 7)
    ref = stats.kendalltau(x[2, 4].numpy(), y[2, 4].numpy()).statistic
    assert abs(whole[2, 4].item() - ref) < 1e-6


@pytest.mark.parametrize("method", ["pairs", "merge"])
def test_kendall_tau_degenerate_rows_and_identities(method):
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, float("nan"), 3.0]])
    y = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    a, b = kendall_tau(x, y, "a", method), kendall_tau(x, y, "b", method)
    assert a[0] == -1 and b[0] == -1
    assert a[1] == 0 and torch.isnan(b[1])  # constant row
    assert np.isnan(stats.kendalltau([1, 1, 1], [1, 2, 3]).statistic)
    assert torch.isnan(a[2]) and torch.isnan(b[2])
    z = torch.randn(8, 10)
    assert torch.allclose(kendall_tau(z, z, "a", method), torch.ones(8))
    assert torch.allclose(kendall_tau(z, 2 * z.exp() + 1, "b", method), torch.ones(8))
    assert torch.allclose(kendall_tau(z, -z, "a", method), -torch.ones(8))
    assert not kendall_tau(z.requires_grad_(), z).requires_grad


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(variant="c"), "variant must be one of"),
    (dict(method="fast"), "method must be one of"),
    (dict(y=torch.zeros(2, 4)), "same shape"),
])
def test_kendall_tau_errors(kwargs, pattern):
    args = dict(x=torch.zeros(2, 3), y=torch.zeros(2, 3), variant="a", method="auto") | kwargs
    with pytest.raises(ValueError, match=pattern):
        kendall_tau(**args)
    with pytest.raises(ValueError, match="at least 2 classes"):
        kendall_tau(torch.zeros(3, 1), torch.zeros(3, 1))


# ----------------------------------------------------------------------------- CKA
def _numpy_cka(x, y, kernel, bandwidth=1.0):
    def gram(z):
        if kernel == "linear":
            return z @ z.T
        d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
        med = np.median(d2[~np.eye(len(z), dtype=bool)])
        return np.exp(-d2 / (2 * bandwidth**2 * med))

    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda k, m: np.trace(k @ h @ m @ h) / (n - 1) ** 2  # noqa: E731
    k, m = gram(x), gram(y)
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def _unbiased_hsic_quadruples(k, m):
    """Song et al.'s U-statistic written as its definition: an average over distinct (i,j,q,r)."""
    n = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * m[i, j] + k[i, j] * m[q, r] - 2 * k[i, j] * m[i, q]
        count += 1
    return total / count


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_matches_numpy_hsic(kernel):
    g = np.random.default_rng(3)
    x = g.standard_normal((30, 6))
    y = np.tanh(x @ g.standard_normal((6, 9))) + 0.5 * g.standard_normal((30, 9))
    ours = cka(torch.from_numpy(x), torch.from_numpy(y), kernel).item()
    assert ours == pytest.approx(_numpy_cka(x, y, kernel), abs=1e-10)
    assert 0 < ours < 1


def test_rbf_bandwidth_is_numpys_median():
    """Points 0, 1, 3, 7 on a line: squared distances 1, 4, 9, 16, 36, 49 (an even count), whose
    median is (9 + 16) / 2 = 12.5 for numpy; torch.median would take the lower value, 9."""
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    d2 = (x - x.T) ** 2
    assert np.median(d2[~np.eye(4, dtype=bool)]) == 12.5
    y = np.array([[0.0, 1.0], [2.0, 0.5], [1.0, 3.0], [4.0, 4.0]])
    ours = cka(torch.from_numpy(x), torch.from_numpy(y), "rbf").item()
    assert ours == pytest.approx(_numpy_cka(x, y, "rbf"), abs=1e-12)

    def with_sigma2(s2x):  # the same CKA with x's median replaced by the lower one
        kx = np.exp(-d2 / (2 * s2x))
        dy = ((y[:, None] - y[None]) ** 2).sum(-1)
        ky = np.exp(-dy / (2 * np.median(dy[~np.eye(4, dtype=bool)])))
        h = np.eye(4) - 1 / 4
        hs = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
        return hs(kx, ky) / np.sqrt(hs(kx, kx) * hs(ky, ky))

    assert ours == pytest.approx(with_sigma2(12.5), abs=1e-12)
    assert abs(ours - with_sigma2(9.0)) > 1e-4  # the lower median gives another value


def test_unbiased_cka_matches_the_u_statistic():
    g = np.random.default_rng(4)
    x, y = g.standard_normal((7, 3)), g.standard_normal((7, 4))
    k, m = x @ x.T, y @ y.T
    ref = _unbiased_hsic_quadruples(k, m) / np.sqrt(
        _unbiased_hsic_quadruples(k, k) * _unbiased_hsic_quadruples(m, m))
    ours = cka(torch.from_numpy(x), torch.from_numpy(y), unbiased=True).item()
    assert ours == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariant_to_orthogonal_transform_and_scaling(kernel, unbiased):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 8, generator=g, dtype=torch.float64)
    y = x @ torch.randn(8, 5, generator=g, dtype=torch.float64) + torch.randn(
        40, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    base = cka(x, y, kernel, unbiased)
    assert cka(x @ q * 3.7, y, kernel, unbiased) == pytest.approx(base.item(), abs=1e-10)
    assert cka(x, x @ q * 0.2, kernel, unbiased).item() == pytest.approx(1.0, abs=1e-10)
    assert cka(x, y, kernel, unbiased).item() == pytest.approx(cka(y, x, kernel, unbiased).item())


def test_cka_errors():
    with pytest.raises(ValueError, match="kernel must be one of"):
        cka(torch.zeros(4, 2), torch.zeros(4, 2), kernel="poly")
    with pytest.raises(ValueError, match="same n"):
        cka(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 4 examples"):
        cka(torch.randn(3, 2), torch.randn(3, 2), unbiased=True)
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        cka(torch.ones(5, 2), torch.randn(5, 2), kernel="rbf")


# ----------------------------------------------------------------------------- StackScores
def _stack_batches(runs=3, classes=4, sizes=(7, 16, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(runs, n, classes, generator=g),
             torch.randint(0, classes, (runs, n), generator=g)) for n in sizes]


def test_stack_accuracy_is_torchmetrics_micro_accuracy_run_by_run():
    batches = _stack_batches()
    scores = StackScores(["accuracy"], 4, 3)
    for logits, target in batches:
        scores.update(logits, target)
    out = scores.compute()
    assert scores.per_run is None  # the counted path, not one collection per run
    for r in range(3):
        ref = MulticlassAccuracy(num_classes=4, average="micro")
        for logits, target in batches:
            ref.update(logits[r], target[r])
        # counted in float64; torchmetrics gives float32
        assert out[r] == {"accuracy": pytest.approx(float(ref.compute()), abs=1e-7)}
    hits = sum((lg.argmax(-1) == t).sum(-1) for lg, t in batches)
    assert [o["accuracy"] for o in out] == (hits.double() / 28).tolist()


def test_stack_scores_of_other_metrics_are_separate_collections_per_run():
    batches = _stack_batches(seed=1)
    names = ["accuracy", "f1_macro", "map"]
    scores = StackScores(names, 4, 3)
    for logits, target in batches:
        scores.update(logits, target)
    out = scores.compute()
    assert len(out) == 3 and scores.per_run is not None
    for r in range(3):
        ref = task_metrics(names, 4, "multiclass")
        for logits, target in batches:
            ref.update(logits[r], target[r])
        assert out[r] == {k: float(v) for k, v in ref.compute().items()}
    assert out[0] != out[1]


def test_stack_scores_multilabel_and_errors():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(2, 9, 3, generator=g), (torch.rand(2, 9, 3, generator=g) > 0.5)
    scores = StackScores(["map"], 3, 2)
    assert scores.compute() == [{"map": pytest.approx(float("nan"), nan_ok=True)}] * 2
    scores.update(logits, target.float())
    for r in range(2):
        ref = task_metrics(["map"], 3, "multilabel")
        ref.update(logits[r], target[r].int())
        assert scores.compute()[r]["map"] == float(ref.compute()["map"])
    with pytest.raises(ValueError, match=r"expected logits \(runs=2, batch, \.\.\.\) and "
                                         r"target \(runs, batch, \.\.\.\), got \(3, 9, 3\)"):
        scores.update(torch.randn(3, 9, 3), target.float())
