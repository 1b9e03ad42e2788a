"""The RGB-D teachers of MFH Tables 3 and 6 (cmkd.models.rgbd) keep their defining property:
SA-Gate's separate encoders fused by gates, CEN's shared convolutions with per-modality batch
norm and channel exchanging by BN scale, the modality-general network's one set of weights fed
RGB and depth alike."""

import torch
from torch import nn

from cmkd.models import build
from cmkd.models.deeplab import DeepLabV3Plus
from cmkd.models.rgbd import ModalBatchNorm

OPTS = dict(classes=5, width=4, head_width=8)


def _inputs(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), 1 + 4 * torch.rand(n, 1, size, size,
                                                                          generator=g)


def _convs(m):
    return sum(p.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d)
               for p in mod.parameters())


def test_sagate_has_separate_encoders_and_gates_convex():
    m = build("deeplabv3plus_sagate_resnet18", **OPTS).eval()
    single = DeepLabV3Plus("resnet18", 5, width=4, head_width=8)
    enc = [single.stem, single.layer1, single.layer2, single.layer3, single.layer4]
    # two encoders (RGB stem 3 channels, depth stem 1): about twice one encoder's convolutions
    assert m.rgb_stem.conv1.weight.shape[1] == 3 and m.depth_stem.conv1.weight.shape[1] == 1
    assert _convs(nn.ModuleList([m.rgb_stem, *m.rgb_layers])) == _convs(nn.ModuleList(enc))
    rgb, depth = _inputs()
    out = m(rgb, depth)
    assert out.shape == (4, 5, 32, 32)
    # both modalities reach the output
    assert not torch.allclose(out, m(rgb, depth + 1))
    assert not torch.allclose(out, m(rgb + 1, depth))
    # the aggregation is a per-pixel convex combination of the two refined streams
    gate = m.gates[0]
    r, d = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    r2, d2, fused = gate(r, d)
    lo, hi = torch.minimum(r2, d2), torch.maximum(r2, d2)
    assert (fused >= lo - 1e-6).all() and (fused <= hi + 1e-6).all()


def test_cen_shares_convolutions_and_exchanges_weakest_channels():
    m = build("deeplabv3plus_cen_resnet18", **OPTS, exchange_ratio=0.5)
    single = DeepLabV3Plus("resnet18", 5, width=4, head_width=8)
    assert _convs(m) == _convs(single)          # one set of convolution weights
    bns = [b for b in m.modules() if isinstance(b, ModalBatchNorm)]
    assert bns and not any(isinstance(b, nn.BatchNorm2d) and not any(
        b is x for mb in bns for x in mb.bns) for b in m.modules())
    assert sum(b.exchange for b in bns) == 8    # bn1 of the 8 residual blocks
    # exchanging by hand: channel c of modality k is the other's where k's |gamma| is among the
    # `ratio` smallest of the half it owns
    bn = ModalBatchNorm(8, exchange=True, exchange_ratio=0.5).train()
    with torch.no_grad():
        bn.bns[0].weight.copy_(torch.tensor([0.9, 0.1, 0.5, -0.05, 1, 1, 1, 1]))
        bn.bns[1].weight.copy_(torch.tensor([1, 1, 1, 1, 0.3, -0.2, 0.01, 2.0]))
    x = torch.randn(6, 8, 5, 5)
    y = bn(x)
    a = bn.bns[0](x[:3])
    b = bn.bns[1](x[3:])
    swap0, swap1 = {1, 3}, {5, 6}
    for c in range(8):
        assert torch.allclose(y[:3, c], b[:, c] if c in swap0 else a[:, c])
        assert torch.allclose(y[3:, c], a[:, c] if c in swap1 else b[:, c])
    rgb, depth = _inputs()
    assert m(rgb, depth).shape == (4, 5, 32, 32)


def test_general_network_sees_rgb_and_depth_with_one_set_of_weights():
    m = build("deeplabv3plus_general_resnet18", **OPTS)
    rgb, depth = _inputs()
    m.train()
    x = m.mixed_input(rgb, depth)
    assert torch.equal(x[0::2], rgb[0::2])                     # even: RGB
    assert torch.allclose(x[1::2], m.depth_in(depth)[1::2])    # odd: depth, own projection
    m.eval()
    out = m(rgb, depth)
    assert torch.equal(out, m(rgb + 3, depth))                 # scored on depth only
    assert not torch.allclose(out, m(rgb, depth * 2))
    m.eval_modality = "rgb"
    assert torch.equal(m(rgb, depth), m(rgb, depth * 2))
