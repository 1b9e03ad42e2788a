"""cmkd.models.batched and cmkd.models.stacked: R runs of a model as one module with a leading run
dimension (grouped layers for 'mlp', torch.func for any other network); seeded initialisation,
per-run equivalence with the single model, and the run-state helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cmkd import models
from cmkd.models import (
    MLP,
    BatchedBatchNorm,
    BatchedLinear,
    BatchedMLP,
    BatchedProxyHead,
    ProxyHead,
    Stacked,
    init_linear_batched,
    linear_logits,
    merge_runs,
    run_count,
    run_state,
)
from cmkd.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _as_mlp(stack: BatchedMLP, r: int, in_features: int, hidden: list[int], classes: int
            ) -> MLP:
    """Run r of a stacked MLP as a registry MLP with the same weights."""
    single = MLP(in_features, classes, tuple(hidden))
    targets = [h[0] for h in single.hidden] + [single.classifier]
    with torch.no_grad():
        for src, dst in zip(stack.blocks(), targets, strict=True):
            dst.weight.copy_(src.weight[r].T)
            dst.bias.copy_(src.bias[r])
    return single


# ----------------------------------------------------------------------------- stacked('mlp')
def test_stacked_mlp_is_a_seeded_batched_mlp():
    seeds = [5, 9, 13]
    stack = models.stacked("mlp", seeds, in_features=4, classes=3, hidden=[6, 5], modality="xb")
    assert isinstance(stack, BatchedMLP) and run_count(stack) == 3
    assert stack.modalities == ("xb",) and stack.classes == 3
    assert stack.feature_shapes == {"pooled": (5,)}
    ref = BatchedMLP(4, [6, 5], 3, seeds, modality="xb")
    for (k, v), (k2, v2) in zip(stack.state_dict().items(), ref.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k
    # layer l of run r: nn.Linear's uniform initialisation drawn from seed seeds[r] + l
    for layer, (d_in, d_out) in enumerate([(4, 6), (6, 5), (5, 3)]):
        lin = stack.blocks()[layer]
        for r, s in enumerate(seeds):
            w, b = init_linear_batched([d_in], d_in, d_out, [s + layer])
            assert torch.equal(lin.weight[r], w[0]) and torch.equal(lin.bias[r], b[0])
        assert float(lin.weight.detach().abs().max()) <= d_in ** -0.5


def test_a_stacked_run_depends_only_on_its_seed():
    kw = dict(in_features=4, classes=3, hidden=[6])
    two, one = models.stacked("mlp", [5, 7], **kw), models.stacked("mlp", [7], **kw)
    for k, v in one.state_dict().items():
        assert torch.equal(two.state_dict()[k][1], v[0]), k
    assert not torch.equal(two[0].weight[0], two[0].weight[1])


def test_stacked_mlp_run_r_computes_the_single_mlp():
    stack = models.stacked("mlp", [1, 2], in_features=4, classes=3, hidden=[6, 5])
    x = _x(2, 7, 4)
    logits, feats = stack.forward_features(x)
    assert logits.shape == (2, 7, 3) and feats["pooled"].shape == (2, 7, 5)
    torch.testing.assert_close(stack(x), logits)
    torch.testing.assert_close(stack.head(feats["pooled"]), logits)
    for r in range(2):
        single = _as_mlp(stack, r, 4, [6, 5], 3)
        ref_logits, ref_feats = single.forward_features(x[r])
        torch.testing.assert_close(logits[r], ref_logits)
        torch.testing.assert_close(feats["pooled"][r], ref_feats["pooled"])


def test_stacked_checks_options_and_seeds():
    with pytest.raises(ValueError, match="a stack needs at least one seed"):
        models.stacked("mlp", [], in_features=4, classes=3)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'clases'"):
        models.stacked("mlp", [0], in_features=4, clases=3)
    with pytest.raises(ValueError, match="'hidden' must be an integer >= 1"):
        models.stacked("mlp", [0], in_features=4, classes=3, hidden=[0])
    with pytest.raises(ValueError, match="already has a stacked form"):
        models.register_stacked("mlp")(lambda seeds, **kw: None)


# ----------------------------------------------------------------------------- Stacked (torch.func)
def test_stacked_network_run_r_is_the_network_built_after_its_seed():
    before = torch.get_rng_state()
    stack = models.stacked("avdigits_cnn", [3, 4], modality="image").eval()
    assert torch.equal(torch.get_rng_state(), before), "the global generator was not restored"
    assert isinstance(stack, Stacked) and run_count(stack) == 2
    assert stack.classes == 10 and stack.modalities == ("image",)
    x = _x(2, 5, 1, 8, 8)
    with torch.no_grad():
        logits, feats = stack.forward_features(x)
        assert torch.equal(stack(x), logits)
    assert logits.shape == (2, 5, 10)
    assert set(feats) == set(stack.feature_shapes)
    for r, seed in enumerate((3, 4)):
        torch.manual_seed(seed)
        single = models.build("avdigits_cnn", modality="image").eval()
        for k, v in single.state_dict().items():
            assert torch.equal(stack.state_dict()[f"stack.{k}"][r], v), k
        with torch.no_grad():
            ref_logits, ref_feats = single.forward_features(x[r])
        torch.testing.assert_close(logits[r], ref_logits)
        torch.testing.assert_close(feats["pooled"][r], ref_feats["pooled"])
    with pytest.raises(ValueError, match=r"a stack of 2 runs takes inputs \(runs, batch, \.\.\.\)"):
        stack(_x(3, 5, 1, 8, 8))


def test_stacked_batch_norm_trains_per_run():
    """Train mode: each run normalises by its own batch and updates its own running
    statistics, as the single network does."""
    stack = models.stacked("avdigits_cnn", [1, 2], modality="audio")
    x = _x(2, 4, 1, 32, 32)
    out = stack(x)
    state = stack.state_dict()
    for r, seed in enumerate((1, 2)):
        torch.manual_seed(seed)
        single = models.build("avdigits_cnn", modality="audio")
        torch.testing.assert_close(out[r], single(x[r]), atol=1e-5, rtol=1e-4)
        for k, v in single.state_dict().items():
            if "running" in k:
                torch.testing.assert_close(state[f"stack.{k}"][r], v, atol=1e-6, rtol=1e-5)


def test_stacked_refuses_mixed_architectures():
    with pytest.raises(ValueError, match="one architecture"):
        Stacked([nn.Linear(2, 2), nn.Conv1d(2, 2, 1)])
    with pytest.raises(ValueError, match="at least one model"):
        Stacked([])


# ----------------------------------------------------------------------------- BatchedLinear
def test_batched_linear_from_weights_copies_and_computes():
    w, b = _x(3, 4, 2, seed=1), _x(3, 2, seed=2)
    layer = BatchedLinear.from_weights(w, b)
    assert isinstance(layer.weight, nn.Parameter) and torch.equal(layer.weight, w)
    w.add_(1.0)  # a copy, not a view of the given tensors
    assert not torch.equal(layer.weight, w)
    x = _x(3, 5, 4, seed=3)
    out = layer(x)
    for r in range(3):
        torch.testing.assert_close(out[r], x[r] @ layer.weight[r] + layer.bias[r])
    torch.testing.assert_close(out, linear_logits(layer.weight, layer.bias, x))
    out.sum().backward()
    assert layer.weight.grad.shape == (3, 4, 2) and layer.bias.grad.shape == (3, 2)
    no_bias = BatchedLinear.from_weights(w, None)
    assert no_bias.bias is None
    torch.testing.assert_close(no_bias(x), torch.bmm(x, w))


@pytest.mark.parametrize("weight, bias", [((4, 2), (2,)), ((3, 4, 2), (2,)), ((3, 4, 2), (3, 4))])
def test_batched_linear_from_weights_refuses_bad_shapes(weight, bias):
    with pytest.raises(ValueError, match=r"expected weight \(R, in, out\) and bias \(R, out\)"):
        BatchedLinear.from_weights(torch.zeros(weight), torch.zeros(bias))


def test_batched_linear_from_seeds():
    layer = BatchedLinear(4, 3, [7, 8], bias=False)
    assert layer.bias is None and layer.weight.shape == (2, 4, 3)
    w, _ = init_linear_batched([4, 4], 4, 3, [7, 8])
    assert torch.equal(layer.weight, w)


def test_init_linear_batched_pads_and_checks():
    w, b = init_linear_batched([2, 4], 4, 3, [1, 2])
    assert w.shape == (2, 4, 3) and b.shape == (2, 3)
    assert torch.count_nonzero(w[0, 2:]) == 0 and torch.count_nonzero(w[0, :2]) == 6
    assert float(w[0].abs().max()) <= 2 ** -0.5 and float(b[1].abs().max()) <= 0.5
    # a run's values depend on its own seed and width only
    w1, b1 = init_linear_batched([2], 4, 3, [1])
    assert torch.equal(w1[0], w[0]) and torch.equal(b1[0], b[0])
    with pytest.raises(ValueError, match="one entry per run"):
        init_linear_batched([2, 4], 4, 3, [1])
    with pytest.raises(ValueError, match=r"run 1: n_features must lie in \[1, 4\], got 5"):
        init_linear_batched([2, 5], 4, 3, [1, 2])


# ----------------------------------------------------------------------------- batch norm, proxy
def test_batched_batch_norm_is_per_run_and_channel():
    bn = BatchedBatchNorm(3, 4)
    x = _x(3, 16, 4) * torch.tensor([1.0, 5.0, 0.1])[:, None, None] + 2.0
    y = bn(x)
    for r in range(3):
        ref = nn.BatchNorm1d(4)
        torch.testing.assert_close(y[r], ref(x[r]))
        torch.testing.assert_close(bn.bn.running_mean[r * 4:(r + 1) * 4], ref.running_mean)


def test_batched_proxy_head_run_r_is_a_proxy_head():
    heads = BatchedProxyHead(6, 5, 3, [10, 20])
    lin1, bn, _, lin2 = heads
    assert heads[0].bias is None
    assert torch.equal(lin1.weight, BatchedLinear(6, 5, [10, 20]).weight)
    assert torch.equal(lin2.weight, BatchedLinear(5, 3, [11, 21]).weight)
    x = _x(2, 8, 6)
    out = heads(x)
    assert out.shape == (2, 8, 3)
    for r in range(2):
        single = ProxyHead(6, 3, hidden=5)
        with torch.no_grad():
            single.adapt[0].weight.copy_(lin1.weight[r].T[:, :, None, None])
            single.classifier.weight.copy_(lin2.weight[r].T)
            single.classifier.bias.copy_(lin2.bias[r])
        torch.testing.assert_close(out[r], single(x[r]))  # train mode: batch statistics


# ----------------------------------------------------------------------------- run states
def test_run_state_and_merge_runs():
    stacks = [models.stacked("mlp", [s, s + 1, s + 2], in_features=3, classes=2, hidden=[4])
              for s in (0, 10, 20)]
    states = [m.state_dict() for m in stacks]
    one = run_state(states[1], 2)
    assert set(one) == set(states[1]) and all(torch.equal(v, states[1][k][2])
                                               for k, v in one.items())
    merged = merge_runs(states)  # run r from states[r]
    for k, v in merged.items():
        assert v.shape == states[0][k].shape
        for r in range(3):
            assert torch.equal(v[r], states[r][k][r]), (k, r)
    assert all(torch.equal(v, states[0][k]) for k, v in merge_runs([states[0]] * 3).items())
    # the merged state loads into the stack: run r computes what stacks[r]'s run r computes
    model = models.stacked("mlp", [99, 98, 97], in_features=3, classes=2, hidden=[4])
    model.load_state_dict(merged)
    x = _x(3, 5, 3)
    for r in range(3):
        torch.testing.assert_close(model(x)[r], stacks[r](x)[r])
    with pytest.raises(ValueError, match="at least one state"):
        merge_runs([])


def test_run_count_needs_a_stacked_model():
    assert run_count(models.stacked("mlp", [1, 2], in_features=3, classes=2)) == 2
    with pytest.raises(ValueError, match="runs=True needs a stacked model.*MLP is not one"):
        run_count(models.build("mlp", in_features=3, classes=2))
