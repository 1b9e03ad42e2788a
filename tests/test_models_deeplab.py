"""DeepLab V3+ (cmkd.models.deeplab): registry names, shapes, depth stem, torchvision layouts."""

import pytest
import torch
import torchvision

from cmkd import models

TINY = {"deeplabv3plus_resnet18": {"width": 8, "head_width": 16},
        "deeplabv3plus_mobilenet_v2": {"width_mult": 0.25, "head_width": 16}}


def test_registered():
    assert {"deeplabv3plus_resnet18", "deeplabv3plus_mobilenet_v2"} <= set(models.names())


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("channels", [3, 1])
def test_shapes_and_features(name, channels):
    torch.manual_seed(0)
    m = models.build(name, classes=5, in_channels=channels, **TINY[name])
    x = torch.randn(2, channels, 48, 64)
    logits, feats = m.forward_features(x)
    assert logits.shape == (2, 5, 48, 64)
    assert list(feats) == ["layer1", "layer2", "layer3", "layer4", "aspp", "decoder", "pooled"]
    strides = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16, "aspp": 16, "decoder": 4}
    for k, s in strides.items():
        assert feats[k].shape[1] == m.feature_shapes[k][0]
        assert feats[k].shape[2:] == (48 // s, 64 // s), k
    assert feats["pooled"].shape == (2, m.feature_shapes["pooled"][0])
    m.eval()  # ASPP's dropout
    assert torch.equal(m(x), m.forward_features(x)[0])
    m.train()
    # every parameter receives a gradient (the whole network is wired)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match=f"\\(batch, {channels}, H, W\\)"):
        m(torch.randn(2, 4 - channels if channels == 3 else 3, 48, 64))


def test_bad_option():
    with pytest.raises(ValueError, match="width"):
        models.build("deeplabv3plus_resnet18", classes=3, width=0)
    with pytest.raises(ValueError, match="unknown option"):
        models.build("deeplabv3plus_resnet18", classes=3, width_mult=0.5)


@pytest.mark.parametrize("name,ref", [
    ("deeplabv3plus_resnet18", lambda: {k: v for k, v in torchvision.models.resnet18(
        weights=None).state_dict().items() if not k.startswith("fc")}),
    ("deeplabv3plus_mobilenet_v2", lambda: {k: v for k, v in torchvision.models.mobilenet_v2(
        weights=None).state_dict().items() if k.startswith("features")
        and not k.startswith("features.18")}),
])
def test_encoder_matches_torchvision_and_loads_weights(name, ref, tmp_path):
    """At full width the encoder has torchvision's parameter names and shapes, so a
    user-supplied ImageNet file loads; a depth stem averages the RGB kernel."""
    state = ref()
    m = models.build(name, classes=4, head_width=8)
    mapping = m._encoder_state_names()
    assert set(mapping.values()) == set(state)
    sd = m.state_dict()
    assert all(sd[ours].shape == state[theirs].shape for ours, theirs in mapping.items())
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    depth = models.build(name, classes=4, head_width=8, in_channels=1, weights=str(path))
    dsd = depth.state_dict()
    stem = next(k for k, v in mapping.items() if state[v].dim() == 4)
    assert torch.allclose(dsd[stem], state[mapping[stem]].mean(1, keepdim=True))
    last = [k for k in mapping if k.startswith("layer4") and state[mapping[k]].dim() == 4][-1]
    assert torch.equal(dsd[last], state[mapping[last]])
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        models.build(name, classes=4, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="full-width"):
        models.build(name, classes=4, weights=str(path), **TINY[name])
