"""cmkd.models.proxy.ProxyHead, C2KD's proxy head (Eq. 5) and SHAKE's shadow head: its layers,
its output against the formula computed by hand, and its registry entry."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmkd.models import build
from cmkd.models.proxy import ProxyHead


def _randomise_batch_norm(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so eval mode is a real map."""
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))


def test_layers_are_conv_bn_leaky_relu_then_a_linear_classifier():
    head = ProxyHead(8, 5, hidden=6)
    assert [type(m).__name__ for m in head.adapt] == ["Conv2d", "BatchNorm2d", "LeakyReLU"]
    conv, _, act = head.adapt
    assert conv.kernel_size == (1, 1) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (8, 6)
    assert act.negative_slope == 0.1
    assert isinstance(head.classifier, nn.Linear)
    assert (head.classifier.in_features, head.classifier.out_features) == (6, 5)
    assert head.blocks() == [head.adapt, head.classifier]
    assert head.feature_shapes == {"pooled": (6,)}
    assert ProxyHead(8, 5).classifier.in_features == 8  # hidden defaults to in_channels


def test_output_is_eq5_computed_by_hand():
    """logits = W_fc LeakyReLU_0.1(BN(W_conv avgpool(x))) + b_fc, BN with running statistics."""
    g = torch.Generator().manual_seed(0)
    head = ProxyHead(8, 5, hidden=6).eval()
    conv, bn, _ = head.adapt
    _randomise_batch_norm(bn, g)
    x = torch.randn(4, 8, 3, 3, generator=g)
    pooled = x.mean((2, 3))
    z = pooled @ conv.weight[:, :, 0, 0].T
    z = (z - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    z = torch.where(z > 0, z, 0.1 * z)
    expected = z @ head.classifier.weight.T + head.classifier.bias
    with torch.no_grad():
        torch.testing.assert_close(head(x), expected)
        torch.testing.assert_close(head(pooled), expected)  # (batch, C) pooled features
        logits, feats = head.forward_features(x)
        torch.testing.assert_close(feats["pooled"], z)
        torch.testing.assert_close(logits, expected)


def test_trains_on_maps_and_pooled_features():
    head = ProxyHead(8, 5, hidden=6)
    x = torch.randn(4, 8, 3, 3)
    loss = F.cross_entropy(head(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert head(torch.randn(4, 8)).shape == (4, 5)


def test_registered_as_proxy_head():
    torch.manual_seed(0)
    built = build("proxy_head", in_channels=8, classes=3, hidden=5)
    torch.manual_seed(0)
    direct = ProxyHead(8, 3, hidden=5)
    assert isinstance(built, ProxyHead)
    for p, q in zip(built.parameters(), direct.parameters(), strict=True):
        assert torch.equal(p, q)


def test_refuses_bad_options_and_inputs():
    with pytest.raises(ValueError, match=r"model 'proxy_head': option 'classes' must be an "
                                         r"integer >= 1; got 0"):
        ProxyHead(8, 0)
    with pytest.raises(ValueError, match=r"option 'hidden' must be an integer >= 1; got 0"):
        ProxyHead(8, 3, hidden=0)
    head = ProxyHead(8, 3)
    with pytest.raises(ValueError, match=r"must be \(batch, 8, H, W\) or \(batch, 8\), "
                                         r"got shape \(4, 7, 3, 3\)"):
        head(torch.randn(4, 7, 3, 3))
    with pytest.raises(ValueError, match=r"got shape \(4, 8, 3\)"):
        head(torch.randn(4, 8, 3))
