"""cmkd.mfh: Algorithm 1 against a loop reference and planted truths; channel selection."""

import numpy as np
import pytest
import torch
from torch import nn

from cmkd.bench.mfh import salience_loop
from cmkd.data import mvd
from cmkd.mfh import (
    LayerHead,
    channel_mask,
    nullify_channels,
    nullify_layer,
    permutation_salience,
    random_permutations,
    recovery_rate,
    select_channels,
    split_sequential,
    train_aligned_pair,
)
from cmkd.models.batched import BatchedLinear, init_linear_batched
from cmkd.runtime import rng_for


def _table2_run(xs2: int, seed: int, epochs: int = 300, perm_channels: np.ndarray | None = None):
    """Algorithm 1 on one draw of the Table 2 setting; channels of x^a optionally reordered."""
    spec = mvd.table2_spec(10, xs2)
    d = mvd.generate(spec, 200, rng_for(seed), delta=np.ones(spec.d_star))
    xa, xb, y = (torch.from_numpy(a) for a in (d.xa, d.xb, d.y))
    w, b = init_linear_batched([50, 50], 50, 2, [seed, seed + 1])
    wa = w[0] if perm_channels is None else w[0][perm_channels]
    xa = xa if perm_channels is None else xa[:, perm_channels]
    net_a, net_b = nn.Linear(50, 2), nn.Linear(50, 2)
    with torch.no_grad():
        net_a.weight.copy_(wa.T), net_a.bias.copy_(b[0])
        net_b.weight.copy_(w[1].T), net_b.bias.copy_(b[1])
    train_aligned_pair(net_a, net_b, xa, xb, y, epochs=epochs)
    with torch.no_grad():
        target = net_b(xb)
    return spec, net_a, xa, target


@pytest.mark.parametrize("xs2", [5, 10, 30])
def test_algorithm1_recovers_planted_shared_channels(xs2):
    rates = []
    for seed in range(3):
        spec, net_a, xa, target = _table2_run(xs2, seed)
        p = permutation_salience(net_a, xa, target, permutations=30,
                                 generator=torch.Generator().manual_seed(seed))
        rates.append(recovery_rate(p, spec.channels("a", "general")))
    chance = xs2 / 50
    print(f"xs2 = {xs2}: recovery {np.mean(rates):.2f} (chance {chance:.2f})")
    # far better than chance: at least 90% of the top-|general| channels are truly shared
    assert np.mean(rates) >= 0.9 > chance + 0.25


def test_salience_does_not_depend_on_channel_order():
    order = np.random.default_rng(3).permutation(50)
    _, net_a, xa, target = _table2_run(10, 0)
    _, net_p, xa_p, target_p = _table2_run(10, 0, perm_channels=order)
    perms = random_permutations(200, 20, generator=torch.Generator().manual_seed(1))
    p = permutation_salience(net_a, xa, target, permutations=perms)
    p_perm = permutation_salience(net_p, xa_p, target_p, permutations=perms)
    # channel j of the reordered data is channel order[j] of the original
    torch.testing.assert_close(p_perm, p[order], atol=2e-4, rtol=1e-3)


def _heads():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    conv = nn.Sequential(nn.Conv1d(6, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5, 3))
    return {"linear (closed form)": (nn.Linear(6, 3), (40, 6)),
            "linear then MLP (first-layer shortcut)": (mlp, (40, 6)),
            "plain function (generic batched copies)": (lambda h: mlp(h), (40, 6)),
            "conv head on (n, C, L) features": (conv, (40, 6, 7))}


@pytest.mark.parametrize("name", list(_heads()))
@pytest.mark.parametrize("shared", [True, False])
def test_vectorised_salience_equals_the_loop(name, shared):
    head, shape = _heads()[name]
    g = torch.Generator().manual_seed(5)
    features = torch.randn(shape, generator=g)
    with torch.no_grad():
        target = head(features) + 0.3 * torch.randn(shape[0], 3, generator=g)
    perms = random_permutations(shape[0], 7, None if shared else shape[1], generator=g)
    expected = salience_loop(head, features, target, perms)
    for max_elements in (50, 2**18):  # chunked in pieces and in one go
        got = permutation_salience(head, features, target, permutations=perms,
                                   max_elements=max_elements)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_intermediate_layer_salience_by_split_and_by_hook_agree():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(30, 8)
    target = torch.randn(30, 2)
    body, head = split_sequential(model, 2)
    with torch.no_grad():
        features = body(x)
    perms = random_permutations(30, 5, generator=torch.Generator().manual_seed(2))
    by_split = permutation_salience(head, features, target, permutations=perms)
    hooked = LayerHead(model, model[1], x)
    torch.testing.assert_close(hooked.features(), features)
    by_hook = permutation_salience(hooked, features, target, permutations=perms, max_elements=64)
    torch.testing.assert_close(by_hook, by_split)
    torch.testing.assert_close(by_split, salience_loop(head, features, target, perms))


def test_normalisations():
    head = nn.Linear(5, 2)
    x, t = torch.randn(20, 5), torch.randn(20, 2)
    perms = random_permutations(20, 4, generator=torch.Generator().manual_seed(0))
    raw = permutation_salience(head, x, t, permutations=perms, normalize="none")
    p = permutation_salience(head, x, t, permutations=perms)
    torch.testing.assert_close(p, raw / raw.max())
    mm = permutation_salience(head, x, t, permutations=perms, normalize="minmax")
    assert float(mm.min()) == 0.0 and float(mm.max()) == pytest.approx(1.0)


def test_batched_joint_training_equals_separate_runs():
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(3, 25, 4, generator=g), torch.randn(3, 25, 6, generator=g)
    y = torch.randint(0, 2, (3, 25), generator=g)
    wa, ba = init_linear_batched([4] * 3, 4, 2, [1, 2, 3])
    wb, bb = init_linear_batched([6] * 3, 6, 2, [4, 5, 6])
    net_a, net_b = BatchedLinear.from_weights(wa, ba), BatchedLinear.from_weights(wb, bb)
    train_aligned_pair(net_a, net_b, xa, xb, y, epochs=30)
    for r in range(3):
        la, lb = nn.Linear(4, 2), nn.Linear(6, 2)
        with torch.no_grad():
            la.weight.copy_(wa[r].T), la.bias.copy_(ba[r])
            lb.weight.copy_(wb[r].T), lb.bias.copy_(bb[r])
        train_aligned_pair(la, lb, xa[r], xb[r], y[r], epochs=30)
        torch.testing.assert_close(net_a.weight[r].detach(), la.weight.detach().T)
        torch.testing.assert_close(net_b.bias[r].detach(), lb.bias.detach())


def test_joint_training_aligns_outputs_and_minibatches_run():
    spec = mvd.table2_spec(10, 10)
    d = mvd.generate(spec, 200, rng_for(0), delta=np.ones(spec.d_star))
    xa, xb, y = (torch.from_numpy(a) for a in (d.xa, d.xb, d.y))
    torch.manual_seed(0)
    history = train_aligned_pair(nn.Linear(50, 2), nn.Linear(50, 2), xa, xb, y, epochs=200)
    assert history.shape == (200, 3)
    assert (history[-1] < history[0]).all()
    history = train_aligned_pair(nn.Linear(50, 2), nn.Linear(50, 2), xa, xb, y, epochs=3,
                                 batch_size=64, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(history).all()


def test_select_channels_kinds():
    p = np.array([0.1, 0.9, 0.5, 0.3, 1.0, 0.0])
    assert select_channels(p, "general", n_keep=2).tolist() == [1, 4]
    assert select_channels(p, "specific", n_keep=2).tolist() == [0, 5]
    assert select_channels(torch.tensor(p), "general", drop_ratio=0.5).tolist() == [1, 2, 4]
    assert select_channels(p, "specific", drop_ratio=0.5).tolist() == [0, 3, 5]
    a = select_channels(p, "random", n_keep=6, rng=np.random.default_rng(0))
    assert a.tolist() == list(range(6)), "random keeps distinct channels (no replacement)"
    r1 = select_channels(p, "random", n_keep=3, rng=np.random.default_rng(7))
    r2 = select_channels(p, "random", n_keep=3, rng=np.random.default_rng(7))
    assert r1.tolist() == r2.tolist() and len(set(r1.tolist())) == 3


def test_random_channels_with_replacement_repeat_as_independent_uniform_draws():
    """The official script's np.random.randint: n_keep independent uniform channels, so the
    expected number of distinct ones is C (1 - (1 - 1/C)^n_keep), against n_keep without."""
    p, c, k = np.zeros(50), 50, 30
    rng = np.random.default_rng(0)
    draws = [select_channels(p, "random", n_keep=k, rng=rng, replace=True) for _ in range(2000)]
    assert all(len(d) == k and d.min() >= 0 and d.max() < c for d in draws)
    assert all((np.diff(d) >= 0).all() for d in draws), "sorted ascending"
    distinct = np.array([len(np.unique(d)) for d in draws])
    expected = c * (1 - (1 - 1 / c) ** k)  # 22.7
    assert abs(distinct.mean() - expected) < 0.15
    counts = np.bincount(np.concatenate(draws), minlength=c) / (2000 * k)
    assert np.abs(counts - 1 / c).max() < 0.004, "every channel equally likely"
    without = select_channels(p, "random", n_keep=k, rng=np.random.default_rng(0))
    assert len(np.unique(without)) == k


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "general"}, "exactly one"),
    ({"kind": "general", "n_keep": 0}, "n_keep"),
    ({"kind": "general", "drop_ratio": 1.0}, "drop_ratio"),
    ({"kind": "random", "n_keep": 2}, "rng"),
    ({"kind": "best", "n_keep": 2}, "kind must be one of"),
    ({"kind": "general", "n_keep": 2, "replace": True}, "replace applies to kind 'random'"),
])
def test_select_channels_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_channels(np.arange(4.0), **kwargs)


def test_nullify_input_and_layer_channels():
    x = torch.ones(3, 4, 2)
    out = nullify_channels(x, [0, 2])
    assert out[:, [0, 2]].eq(1).all() and out[:, [1, 3]].eq(0).all()
    assert channel_mask([1], 3).tolist() == [0.0, 1.0, 0.0]
    layer = nn.Identity()
    model = nn.Sequential(layer, nn.Flatten())
    handle = nullify_layer(layer, [1, 3])
    assert model(x).view(3, 4, 2)[:, [0, 2]].eq(0).all()
    handle.remove()
    assert model(x).eq(1).all()


def test_recovery_rate_and_errors():
    assert recovery_rate(np.array([0.9, 0.8, 0.1, 0.2]), [0, 1]) == 1.0
    assert recovery_rate(np.array([0.9, 0.1, 0.8, 0.2]), [0, 1]) == 0.5
    with pytest.raises(ValueError, match="samples"):
        permutation_salience(nn.Linear(3, 2), torch.randn(5, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="permutations must be"):
        permutation_salience(nn.Linear(3, 2), torch.randn(5, 3), torch.randn(5, 2),
                             permutations=torch.zeros(2, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="distance"):
        permutation_salience(nn.Linear(3, 2), torch.randn(5, 3), torch.randn(5, 2),
                             distance="cosine")
    with pytest.raises(ValueError, match="xs1 \\+ xs2"):
        mvd.table2_spec(30, 30)


def test_table2_spec_ground_truth():
    spec = mvd.table2_spec(10, 30)
    assert spec.gamma == pytest.approx(0.75) and spec.beta == 0
    assert spec.channels("a", "general").tolist() == list(range(30))
    assert spec.channels("a", "specific").tolist() == list(range(30, 40))
