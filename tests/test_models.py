"""cmkd.models: the registry and the Backbone contract of every registered network (tiny inputs)."""

import math
import socket

import pytest
import torch
from torch import nn

from cmkd import models
from cmkd.models import build, names, ogm_ge_coefficients, ogm_ge_modulate_

SMALL_FUSION = dict(modalities=("audio", "image"), encoders=("avdigits_cnn", "avdigits_cnn"),
                    encoder_options=({}, {}))


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


# name -> list of (options, inputs); every registered name must appear (checked below)
CASES = {
    "resnet18": [(dict(classes=3, in_channels=1), [_x(2, 1, 32, 32)]),
                 (dict(classes=3, frames=3), [_x(2, 3, 3, 32, 32)]),
                 (dict(classes=3, frames=3, frame_mode="stack"), [_x(2, 3, 3, 32, 32)])],
    "resnet34": [(dict(classes=4), [_x(2, 3, 32, 32)])],
    "resnet50": [(dict(classes=4, in_channels=1), [_x(2, 1, 32, 32)])],
    "r3d18": [(dict(classes=3), [_x(1, 3, 2, 16, 16)])],
    "lenet5": [(dict(), [_x(2, 1, 28, 28)]), (dict(classes=4, image_size=16), [_x(2, 1, 16, 16)])],
    "audio_cnn3": [(dict(), [_x(2, 1, 16, 16)])],
    "audio_cnn5": [(dict(classes=5), [_x(2, 1, 32, 40)])],
    "audio_cnn6": [(dict(hidden=0), [_x(2, 1, 64, 64)])],
    "avdigits_cnn": [(dict(modality="image"), [_x(2, 1, 8, 8)]),
                     (dict(modality="audio"), [_x(2, 1, 32, 32)])],
    "fusion_concat": [(dict(classes=3, **SMALL_FUSION), [_x(2, 1, 32, 32), _x(2, 1, 8, 8)])],
    "fusion_film": [(dict(classes=3, **SMALL_FUSION), [_x(2, 1, 32, 32), _x(2, 1, 8, 8)])],
    "fusion_ogm_ge": [(dict(classes=3), [_x(2, 1, 32, 32), _x(2, 3, 32, 32)])],
    "mlp": [(dict(in_features=5, classes=3, hidden=[4, 6]), [_x(2, 5)]),
            (dict(in_features=5, classes=3, hidden=()), [_x(2, 5)])],
    "proxy_head": [(dict(in_channels=8, classes=3), [_x(2, 8, 4, 4)]),
                   (dict(in_channels=8, classes=3, hidden=5), [_x(2, 8)])],
}
PARAMS = [pytest.param(n, o, x, id=f"{n}-{i}") for n, cases in CASES.items()
          for i, (o, x) in enumerate(cases)]


# dense (segmentation) networks return (batch, classes, H, W) logits: their contract is checked
# in tests/test_models_deeplab.py (the heads through the dense methods in test_dense_distill.py),
# the RGB-D teachers' in tests/test_models_rgbd.py
DENSE = ("deeplabv3plus_cen_resnet18", "deeplabv3plus_general_resnet18",
         "deeplabv3plus_mobilenet_v2", "deeplabv3plus_resnet18", "deeplabv3plus_sagate_resnet18",
         "dense_proxy_head")


def test_every_registered_model_has_a_case():
    assert sorted([*CASES, *DENSE]) == names()


@pytest.mark.parametrize("name, opts, inputs", PARAMS)
def test_logits_and_announced_features(name, opts, inputs):
    torch.manual_seed(0)
    model = build(name, **opts).eval()
    assert isinstance(model, models.Backbone)
    assert len(model.modalities) == len(inputs)
    with torch.no_grad():
        logits, feats = model.forward_features(*inputs)
        again = model(*inputs)
    assert logits.shape == (inputs[0].shape[0], model.classes)
    assert torch.equal(logits, again)
    assert list(feats) == list(model.feature_shapes)
    assert list(feats)[-1] == "pooled"
    assert feats["pooled"].dim() == 2
    for key, shape in model.feature_shapes.items():
        got = feats[key].shape
        assert got[0] == inputs[0].shape[0], key
        assert len(got) - 1 == len(shape), (key, got, shape)
        assert all(s is None or s == g for s, g in zip(shape, got[1:])), (key, got, shape)
    # the classifier takes "pooled"
    assert torch.allclose(model.classify(feats["pooled"]), logits)


def _block_members(block):
    return list(block) if isinstance(block, nn.ModuleList) else [block]


@pytest.mark.parametrize("name, opts, inputs", PARAMS)
def test_blocks_partition_the_parameters_and_end_with_the_classifier(name, opts, inputs):
    model = build(name, **opts)
    blocks = model.blocks()
    assert blocks[-1] is model.classifier
    ids = [id(p) for b in blocks for p in b.parameters()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name, opts, inputs",
                         [p for p in PARAMS if not p.values[0].startswith("fusion")])
def test_blocks_are_ordered_input_to_output(name, opts, inputs):
    """The order in which a forward pass first calls the blocks is the order of blocks()."""
    model = build(name, **opts).eval()
    calls = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
               for k, b in enumerate(model.blocks())]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    first = sorted(set(calls), key=calls.index)
    assert first == list(range(len(model.blocks())))


def test_fusion_blocks_pair_the_encoders_from_the_top():
    model = build("fusion_film", classes=3, **SMALL_FUSION)
    audio, image = model.encoders["audio"].blocks(), model.encoders["image"].blocks()
    blocks = model.blocks()
    assert blocks[-1] is model.classifier and blocks[-2] is model.film
    top = blocks[-3]
    assert isinstance(top, nn.ModuleList) and top[0] is audio[-2] and top[1] is image[-2]
    # audio has 3 blocks below its classifier, image 2: the bottom level holds audio's alone
    assert blocks[0] is audio[0]
    assert len(blocks) == 3 + 2


# ------------------------------------------------------------------ ResNet stems
def test_resnet_spectrogram_stem():
    model = build("resnet18", classes=6, in_channels=1, modality="audio")
    conv = model.stem[0]
    assert conv.weight.shape == (64, 1, 7, 7)
    assert (conv.stride, conv.padding, conv.bias) == ((2, 2), (3, 3), None)
    assert model.modalities == ("audio",)
    with pytest.raises(ValueError, match=r"'audio' must be \(batch, 1, H, W\)"):
        model(_x(2, 3, 32, 32))


def test_resnet_frames_pool_is_the_mean_over_frames_of_the_2d_network():
    torch.manual_seed(0)
    clip_model = build("resnet18", classes=5, frames=3).eval()
    frame_model = build("resnet18", classes=5).eval()
    frame_model.load_state_dict(clip_model.state_dict())
    clip = _x(2, 3, 3, 32, 32)
    with torch.no_grad():
        logits, feats = clip_model.forward_features(clip)
        per_frame = [frame_model.forward_features(clip[:, :, t]) for t in range(3)]
    for key in ("layer1", "layer4", "pooled"):
        mean = torch.stack([f[key] for _, f in per_frame]).mean(0)
        assert torch.allclose(feats[key], mean, atol=1e-5), key
    pooled = torch.stack([f["pooled"] for _, f in per_frame]).mean(0)
    assert torch.allclose(logits, frame_model.classifier(pooled), atol=1e-5)


def test_resnet_frames_stack_on_channels():
    model = build("resnet18", classes=5, frames=3, frame_mode="stack").eval()
    assert model.stem[0].weight.shape == (64, 9, 7, 7)
    clip = _x(2, 3, 3, 32, 32)
    with torch.no_grad():
        stem = model.stem[0](clip.reshape(2, 9, 32, 32))
        assert torch.equal(stem, model.stem[0](clip.flatten(1, 2)))
        assert model(clip).shape == (2, 5)


def test_resnet_frame_count_and_layout_are_checked():
    one = build("resnet18", classes=2).eval()
    x = _x(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(one(x), one(x[:, :, None]))
    three = build("resnet18", classes=2, frames=3)
    with pytest.raises(ValueError, match=r"\(batch, 3, 3, H, W\) \(frames=3\)"):
        three(_x(2, 3, 2, 32, 32))
    with pytest.raises(ValueError, match=r"must be \(batch, 3, 3, H, W\)"):
        three(x)


def test_resnet50_is_torchvisions_bottleneck_network():
    from torchvision.models.resnet import Bottleneck

    model = build("resnet50", classes=3)
    assert isinstance(model.layer1[0], Bottleneck)
    assert model.feature_shapes["pooled"] == (2048,)
    assert model.feature_shapes["layer3"] == (1024, None, None)


# ------------------------------------------------------------------ registry errors
def test_unknown_model_lists_the_registered_names():
    with pytest.raises(ValueError) as err:
        build("resnet-18", classes=3)
    msg = str(err.value)
    assert "unknown model 'resnet-18'" in msg and "did you mean 'resnet18'" in msg
    for n in names():
        assert n in msg


def test_unknown_or_missing_option_lists_the_allowed_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'frame' \(did you mean 'frames'\?\)"
                       r".*allowed options: classes, in_channels=3, frames=1"):
        build("resnet18", classes=3, frame=3)
    with pytest.raises(ValueError, match=r"missing required option\(s\) classes"):
        build("resnet18")


@pytest.mark.parametrize("name, opts, match", [
    ("resnet18", dict(classes=3, frames=0), r"'frames' must be an integer >= 1; got 0"),
    ("resnet18", dict(classes=3, frame_mode="3d"), r"'frame_mode' must be one of 'pool', 'stack'"),
    ("avdigits_cnn", dict(modality="video"), r"'modality' must be one of 'image', 'audio'"),
    ("lenet5", dict(image_size=8), r"'image_size' must be an integer >= 12"),
    ("mlp", dict(in_features=3, classes=2, hidden=[4, 0]), r"'hidden' must be an integer >= 1"),
    ("fusion_concat", dict(classes=3, encoders=("resnet18",)), r"'encoders' must have 2 items"),
    ("fusion_concat", dict(classes=3, encoders=("resnet18", "nope")), r"unknown model 'nope'"),
    ("fusion_concat", dict(classes=3, encoder_options=({"classes": 2}, {})),
     r"must not set 'classes'"),
])
def test_bad_option_values_are_refused(name, opts, match):
    with pytest.raises(ValueError, match=match):
        build(name, **opts)


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match=r"takes 2 input\(s\), one per modality"):
        build("fusion_concat", classes=3, **SMALL_FUSION)(_x(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"'audio_cnn6'.*spatial sizes >= 64"):
        build("audio_cnn6")(_x(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"image_size=28"):
        build("lenet5")(_x(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"'mlp': input 'input' must be \(batch, 5\)"):
        build("mlp", in_features=5, classes=2)(_x(2, 4))


def test_audio_cnn_grid_is_centralnets_flatten_at_the_last_maps_side():
    torch.manual_seed(0)
    net = build("audio_cnn3", grid=2).eval()  # 16 x 16 input: the last map is 2 x 2
    x = _x(3, 1, 16, 16)
    feats = net.features(x)
    assert net.feature_shapes["pooled"] == (24 * 2 * 2,)
    torch.testing.assert_close(feats["pooled"], feats["block3"].flatten(1))
    # grid 1 is the global average pool of the last map
    one = build("audio_cnn3").eval()
    one.load_state_dict({k: v for k, v in net.state_dict().items() if "classifier" not in k},
                        strict=False)
    torch.testing.assert_close(one.features(x)["pooled"], feats["block3"].mean((2, 3)))
    with pytest.raises(ValueError, match=r"spatial sizes >= 16"):
        net(_x(2, 1, 8, 8))


def test_building_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access while building a model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    for name, cases in CASES.items():
        for opts, _ in cases:
            build(name, **opts)


# ------------------------------------------------------------------ models kept or wrapped
def test_avdigits_cnn_keeps_the_former_small_cnn_numbers():
    """Same weights from the same seed and same outputs as the former avdigits.small_cnn."""
    def former(modality):
        if modality == "audio":
            blocks = []
            for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
                blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                           nn.MaxPool2d(2)]
            return nn.Sequential(*blocks[:-1], nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                 nn.Linear(64, 10))
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(512, 10))

    for modality, x in (("image", _x(4, 1, 8, 8)), ("audio", _x(4, 1, 32, 32))):
        torch.manual_seed(3)
        old = former(modality)
        torch.manual_seed(3)
        new = build("avdigits_cnn", modality=modality)
        for p, q in zip(old.parameters(), new.parameters(), strict=True):
            assert torch.equal(p, q)
        assert torch.equal(old(x), new(x))  # train mode: BatchNorm on batch statistics


def test_mlp_without_hidden_layers_is_a_linear_model():
    model = build("mlp", in_features=5, classes=3, hidden=())
    x = _x(2, 5)
    assert torch.allclose(model(x), x @ model.classifier.weight.T + model.classifier.bias)
    assert model.blocks() == [model.classifier]


def test_film_fusion_modulates_the_second_modality_by_the_first():
    model = build("fusion_film", classes=3, **SMALL_FUSION).eval()
    a_in, b_in = _x(2, 1, 32, 32), _x(2, 1, 8, 8)
    with torch.no_grad():
        _, feats = model.forward_features(a_in, b_in)
        a, b = feats["audio.pooled"], feats["image.pooled"]
        gamma, beta = (a @ model.film.weight.T + model.film.bias).chunk(2, dim=1)
    assert torch.allclose(feats["pooled"], gamma * b + beta, atol=1e-6)


# ------------------------------------------------------------------ OGM-GE
def _official_coefficients(logits_a, logits_v, label, alpha):
    """OGM-GE's official rule (main.py), written as a per-sample Python loop."""
    sm_a, sm_v = logits_a.softmax(1), logits_v.softmax(1)
    score_a = sum(float(sm_a[i, label[i]]) for i in range(len(label)))
    score_v = sum(float(sm_v[i, label[i]]) for i in range(len(label)))
    ratio_v = score_v / score_a
    if ratio_v > 1:
        return 1.0, 1 - math.tanh(alpha * ratio_v)
    return 1 - math.tanh(alpha / ratio_v), 1.0


@pytest.mark.parametrize("seed", range(6))
def test_ogm_ge_coefficients_match_the_official_rule(seed):
    g = torch.Generator().manual_seed(seed)
    la, lv = torch.randn(8, 5, generator=g) * 2, torch.randn(8, 5, generator=g) * 2
    y = torch.randint(0, 5, (8,), generator=g)
    ka, kv = ogm_ge_coefficients(la, lv, y, alpha=0.3)
    ref = _official_coefficients(la, lv, y, 0.3)
    assert (float(ka), float(kv)) == pytest.approx(ref, rel=1e-6)
    assert min(float(ka), float(kv)) < 1 == max(float(ka), float(kv))


def test_ogm_ge_coefficients_check_shapes():
    with pytest.raises(ValueError, match="same shape"):
        ogm_ge_coefficients(_x(2, 3), _x(2, 4), torch.zeros(2, dtype=torch.long), alpha=0.1)
    with pytest.raises(ValueError, match=r"target must be \(batch,\)"):
        ogm_ge_coefficients(_x(2, 3), _x(2, 3), torch.zeros(3, dtype=torch.long), alpha=0.1)


def test_unimodal_logits_split_the_concatenation_classifier():
    model = build("fusion_ogm_ge", classes=3, **SMALL_FUSION).eval()
    assert model.modulation == "ogm_ge"
    with torch.no_grad():
        logits, feats = model.forward_features(_x(2, 1, 32, 32), _x(2, 1, 8, 8))
        la, lb = model.unimodal_logits(feats)
    assert torch.allclose(la + lb, logits, atol=1e-6)
    film = build("fusion_film", classes=3, **SMALL_FUSION)
    with pytest.raises(ValueError, match="needs fusion='concat'"):
        film.unimodal_logits(feats)


def test_ogm_ge_modulates_only_the_encoders_conv_kernels():
    torch.manual_seed(0)
    model = build("fusion_ogm_ge", classes=3, **SMALL_FUSION)
    y = torch.tensor([0, 2])
    torch.nn.functional.cross_entropy(model(_x(2, 1, 32, 32), _x(2, 1, 8, 8)), y).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}

    def is_conv(n):
        return n.startswith("encoders.") and before[n].dim() == 4

    k = (torch.tensor(0.25), torch.tensor(1.0))
    ogm_ge_modulate_(model, k, ge=False)
    for n, p in model.named_parameters():
        scale = (0.25 if ".audio." in n else 1.0) if is_conv(n) else 1.0
        assert torch.allclose(p.grad, before[n] * scale), n
    # GE adds noise of the gradient's standard deviation, reproducibly from a generator
    runs = []
    for _ in range(2):
        for n, p in model.named_parameters():
            p.grad = before[n].clone()
        ogm_ge_modulate_(model, k, generator=torch.Generator().manual_seed(1))
        runs.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in before:
        assert torch.equal(runs[0][n], runs[1][n])
        if not is_conv(n):
            assert torch.equal(runs[0][n], before[n]), n
    w = "encoders.audio.block2.0.weight"
    noise = runs[0][w] - before[w] * 0.25
    assert float(noise.std()) == pytest.approx(float(before[w].std()), rel=0.1)


def test_ogm_ge_refuses_a_film_model_and_bad_coefficients():
    with pytest.raises(ValueError, match="'modulation' must be one of"):
        models.LateFusion(3, modulation="ogm")
    with pytest.raises(ValueError, match="OGM-GE modulation needs fusion='concat'"):
        models.LateFusion(3, fusion="film", modulation="ogm_ge", **SMALL_FUSION)
    with pytest.raises(ValueError, match=r"\(k_a, k_b\)"):
        ogm_ge_modulate_(build("fusion_concat", classes=3, **SMALL_FUSION), (1.0,))
