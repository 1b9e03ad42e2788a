"""cmkd.methods, the feature-based methods (FitNet, Review, RKD, SHAKE): each step's terms equal
the pure loss of cmkd.distill called directly on the same features (an identity), the teacher
gets no gradient, the extra modules train, bad layer names are refused with the names that
exist, the batched FitNet equals notebook 08's, and engine.fit runs each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmkd import methods
from cmkd.distill import fitnet_loss, hcl_loss, rkd_loss, shake_loss
from cmkd.engine import OptimConfig, fit, make_loader
from cmkd.models import BatchedLinear, BatchedMLP
from cmkd.params import ParamError
from cmkd.runtime import torch_threads
from tiny_backbones import TinyConvNet, TinyNet, two_images, two_views

FEATURE_METHODS = ("fitnet", "review", "rkd", "shake")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _pair(kind: str, seed: int = 0):
    """(student on 'b', teacher on 'a', batch): vectors ('mlp'), maps of different sizes and
    widths ('conv': student 6x6 input, teacher 8x8), or a conv student with an MLP teacher."""
    torch.manual_seed(seed)
    if kind == "mlp":
        student, teacher = TinyNet(4, 3, hidden=5, modality="b"), TinyNet(4, 3, modality="a")
        data = two_views(6, seed=1)
    else:
        student = TinyConvNet(3, (4, 6), modality="b")
        teacher = (TinyConvNet(3, (5, 7), modality="a") if kind == "conv"
                   else TinyNet(4, 3, modality="a"))
        data = two_images(6, seed=1)
        if kind == "mixed":
            data.tensors["a"] = two_views(6, seed=1).tensors["a"]
    return student, teacher, dict(data.tensors)


def _build(name, kind, hparams=None, seed=0):
    student, teacher, batch = _pair(kind, seed)
    m = methods.build(name, hparams or {}, student=student, teacher=teacher, classes=3)
    return m, batch


CASES = [(name, kind) for name in FEATURE_METHODS for kind in ("mlp", "conv", "mixed")
         if not (name == "review" and kind == "mixed")]


@pytest.mark.parametrize("name, kind", CASES)
def test_step_is_finite_teacher_untouched_extra_trained(name, kind):
    m, batch = _build(name, kind)
    teacher_ids = {id(p) for p in m.teacher.parameters()}
    params = {id(p) for p in m.parameters()}
    assert not params & teacher_ids
    assert {id(p) for p in m.extra.parameters()} <= params
    assert {id(p) for p in m.student.parameters()} <= params
    if name != "rkd":
        assert len(list(m.extra.parameters())) > 0
    m.train()
    assert not m.teacher.training and m.extra.training
    out = m.step(batch, 0)
    assert out["total"].requires_grad and out["total"].dim() == 0
    for k, v in out.items():
        assert math.isfinite(float(v.detach())), k
        if k != "total":
            assert not v.requires_grad, k
    out["total"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.extra.parameters()) \
        or name == "rkd"
    assert all(p.grad is not None for p in m.student.parameters())


def _features(m, batch):
    _, fs = m.student.forward_features(batch["b"])
    _, ft = m.teacher.forward_features(batch["a"])
    return fs, ft


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_fitnet_terms_equal_the_pure_loss(kind):
    m, batch = _build("fitnet", kind, {"feat_weight": 3.0, "ce_weight": 0.5})
    m.eval()
    out = m.step(batch, 0)
    fs, ft = _features(m, batch)
    layer = {"mlp": "body", "conv": "conv1"}[kind]  # the middle layer ('auto')
    assert m.layers == [(layer, layer)]
    t = ft[layer]
    if kind == "conv":  # teacher 8x8 pooled to the student's 6x6
        assert t.shape[-1] == 8 and fs[layer].shape[-1] == 6
        t = F.adaptive_avg_pool2d(t, 6)
    hint = fitnet_loss(fs[layer], t, regressor=m.extra["regressors"][0])
    ce = F.cross_entropy(m.student(batch["b"]), batch["label"])
    torch.testing.assert_close(out["fitnet"], hint)
    torch.testing.assert_close(out["total"], 0.5 * ce + 3.0 * hint)


def test_fitnet_layers_by_name_and_several_pairs():
    m, batch = _build("fitnet", "conv", {"student_layers": ["conv1", "conv2"],
                                         "teacher_layers": ["conv2", "conv2"]})
    assert len(m.extra["regressors"]) == 2
    assert m.extra["regressors"][1][0].in_channels == 6  # student conv2 -> teacher conv2 (7)
    assert m.extra["regressors"][1][0].out_channels == 7
    m.eval()
    out = m.step(batch, 0)
    fs, ft = _features(m, batch)
    direct = sum(fitnet_loss(fs[s], F.adaptive_avg_pool2d(ft[t], fs[s].shape[-2:]),
                             regressor=r)
                 for (s, t), r in zip(m.layers, m.extra["regressors"]))
    torch.testing.assert_close(out["fitnet"], direct)


def test_fitnet_auto_falls_back_to_pooled_for_a_map_and_a_vector():
    m, _ = _build("fitnet", "mixed")
    assert m.layers == [("pooled", "pooled")]
    with pytest.raises(ParamError, match="pair maps with maps"):
        _build("fitnet", "mixed", {"student_layers": ["conv1"], "teacher_layers": ["body"]})


@pytest.mark.parametrize("name, hparams, param", [
    ("fitnet", {"student_layers": ["layer9"]}, "student_layers"),
    ("fitnet", {"teacher_layers": ["conv3"]}, "teacher_layers"),
    ("review", {"student_layers": ["conv1", "convv2"], "teacher_layers": ["conv1", "conv2"]},
     "student_layers"),
    ("rkd", {"teacher_layer": "pool"}, "teacher_layer"),
    ("shake", {"teacher_layer": "conv5"}, "teacher_layer"),
])
def test_bad_layer_names_list_the_features(name, hparams, param):
    with pytest.raises(ParamError) as err:
        _build(name, "conv", hparams)
    msg = str(err.value)
    assert f"method {name!r}" in msg and f"parameter '{param}'" in msg
    assert "conv1, conv2, pooled" in msg


def test_unequal_layer_lists_are_refused():
    with pytest.raises(ParamError, match="one teacher layer per student layer"):
        _build("fitnet", "conv", {"student_layers": ["conv1", "conv2"],
                                  "teacher_layers": ["conv1"]})


def test_review_terms_equal_hcl_and_warm_up():
    m, batch = _build("review", "conv", {"warmup_epochs": 4})
    assert m.layers == [("conv1", "conv1"), ("conv2", "conv2"), ("pooled", "pooled")]
    m.eval()
    fs, ft = _features(m, batch)
    s_maps = [fs["conv1"], fs["conv2"], fs["pooled"][:, :, None, None]]
    t_maps = [F.adaptive_avg_pool2d(ft["conv1"], 6), F.adaptive_avg_pool2d(ft["conv2"], 3),
              ft["pooled"][:, :, None, None]]
    hcl = hcl_loss(m.extra["fusion"](s_maps), t_maps)
    ce = F.cross_entropy(m.student(batch["b"]), batch["label"])
    for epoch, factor in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):  # mdistiller: epoch / 4
        out = m.step(batch, epoch)
        torch.testing.assert_close(out["review"], hcl)
        torch.testing.assert_close(out["total"], ce + factor * hcl)
    # mdistiller's middle channels: min(512, the deepest student stage) = pooled's 6
    assert m.extra["fusion"].abfs[0].project[0].out_channels == 6


def test_review_auto_pairs_the_deepest_maps():
    torch.manual_seed(0)
    student, teacher = TinyConvNet(3, modality="b"), TinyConvNet(3, modality="a")
    teacher.feature_shapes = {"conv0": (3, None, None), **teacher.feature_shapes}
    m = methods.build("review", student=student, teacher=teacher, classes=3)
    assert m.layers == [("conv1", "conv1"), ("conv2", "conv2"), ("pooled", "pooled")]
    with pytest.raises(ParamError, match="'auto' stands alone"):
        methods.build("review", {"student_layers": ["auto", "pooled"]}, student=student,
                      teacher=teacher, classes=3)


@pytest.mark.parametrize("kind", ["mlp", "conv", "mixed"])
def test_rkd_terms_equal_the_pure_loss(kind):
    m, batch = _build("rkd", kind, {"feat_weight": 2.0})
    m.eval()
    out = m.step(batch, 0)
    fs, ft = _features(m, batch)
    direct = rkd_loss(fs["pooled"], ft["pooled"])  # weights 25 and 50 by default
    ce = F.cross_entropy(m.student(batch["b"]), batch["label"])
    torch.testing.assert_close(out["rkd"], direct)
    torch.testing.assert_close(out["total"], ce + 2.0 * direct)
    torch.testing.assert_close(out["rkd"], 25 * out["rkd_distance"] + 50 * out["rkd_angle"])


def test_rkd_flattens_a_named_map_and_skips_tiny_batches():
    m, batch = _build("rkd", "conv", {"student_layer": "conv2", "teacher_layer": "conv1"})
    m.eval()
    out = m.step(batch, 0)
    fs, ft = _features(m, batch)
    torch.testing.assert_close(out["rkd"], rkd_loss(fs["conv2"].flatten(1),
                                                    ft["conv1"].flatten(1)))
    two = {k: v[:2] for k, v in batch.items()}
    out = m.step(two, 0)
    assert float(out["rkd"]) == 0.0 and out["total"].requires_grad


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_shake_terms_equal_the_pure_loss(kind):
    m, batch = _build("shake", kind)
    layer = {"mlp": "body", "conv": "conv1"}[kind]  # 'auto': second-to-last map, or the one
    assert m.layer == ("pooled" if kind == "mlp" else layer)
    m.eval()
    out = m.step(batch, 0)
    fs, ft = _features(m, batch)
    zs, zt = m.student(batch["b"]), m.teacher(batch["a"])
    shadow = m.extra["shadow"](ft[m.layer])
    direct = shake_loss(zs, zt, batch["label"], shadow=shadow)  # the official defaults
    for k, v in direct.items():
        torch.testing.assert_close(out[k], v, msg=k)
    from cmkd.metrics.krc import kendall_tau
    below = int((kendall_tau(shadow.detach(), zs.detach(), "a") < 0).sum())
    assert float(out["n_krc_below_omega"]) == below


def _batched_pair(runs=3, hidden=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = BatchedMLP(4, [hidden, hidden], 3, [11 + r for r in range(runs)])
    teacher = BatchedMLP(6, [hidden, hidden], 3, [21 + r for r in range(runs)]).eval()
    batch = {"xb": torch.randn(runs, 8, 4, generator=g), "xa": torch.randn(runs, 8, 6,
                                                                          generator=g),
             "y": torch.randint(0, 3, (runs, 8), generator=g)}
    batch["label"] = batch["y"]
    return student, teacher, batch


def test_fitnet_runs_equals_notebook_08():
    """The batched path gives the FitNet loss notebook 08 computed before it moved onto the
    registry, on the same tensors: CE(head(f)) + fitnet_loss(f, teacher features,
    BatchedLinear(seeds), runs=True)."""
    student, teacher, batch = _batched_pair()
    seeds = [101, 202, 303]
    m = methods.build("fitnet", {"feat_weight": 1.0}, student=student, teacher=teacher,
                      classes=3, student_inputs=("xb",), teacher_inputs=("xa",), runs=True,
                      seeds=seeds)
    assert m.layers == [("pooled", "pooled")]
    out = m.step(batch, 0)
    # notebook 08's former 'fitnet' branch of gamma_c2kd.train_method
    reg = BatchedLinear(5, 5, seeds)
    with torch.no_grad():
        tfeat = teacher.features(batch["xa"])
    f = student.features(batch["xb"])
    logits = student.head(f)
    ce = F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), reduction="none").view(
        batch["y"].shape).mean(-1)
    expected = ce + fitnet_loss(f, tfeat, regressor=reg, runs=True)
    assert out["total"].shape == (3,)
    torch.testing.assert_close(out["total"], expected, rtol=0, atol=0)
    torch.testing.assert_close(m.extra["regressors"][0].weight, reg.weight, rtol=0, atol=0)
    out["total"].sum().backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_rkd_and_shake_runs_are_per_run():
    student, teacher, batch = _batched_pair()
    kw = dict(student=student, teacher=teacher, classes=3, student_inputs=("xb",),
              teacher_inputs=("xa",), runs=True)
    r = methods.build("rkd", **kw).step(batch, 0)
    direct = rkd_loss(student.features(batch["xb"]), teacher.features(batch["xa"]), runs=True)
    torch.testing.assert_close(r["rkd"], direct)
    for run in range(3):
        one = rkd_loss(student.features(batch["xb"])[run], teacher.features(batch["xa"])[run])
        torch.testing.assert_close(r["rkd"][run], one)
    shake = methods.build("shake", seeds=[1, 2, 3], **kw)
    s = shake.step(batch, 0)
    assert s["total"].shape == (3,) and s["n_krc_below_omega"].shape == (3,)
    # the shadow head is seeded by the method's seeds (its output layer by seeds + 1)
    shadow = shake.extra["shadow"]
    torch.testing.assert_close(shadow[0].weight, BatchedLinear(5, 5, [1, 2, 3]).weight)
    torch.testing.assert_close(shadow[-1].weight, BatchedLinear(5, 3, [2, 3, 4]).weight)
    with pytest.raises(ValueError, match="no batched"):
        methods.build("review", **kw)


def test_bad_hparams_are_refused():
    with pytest.raises(ParamError, match="'feat_weight'"):
        _build("fitnet", "mlp", {"feat_weight": -1.0})
    with pytest.raises(ParamError, match="did you mean 'warmup_epochs'"):
        _build("review", "conv", {"warmup_epoch": 3})
    with pytest.raises(ParamError, match="'omega'"):
        _build("shake", "mlp", {"omega": 2.0})


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_fit_smoke(name):
    student, teacher, _ = _pair("conv")
    m = methods.build(name, student=student, teacher=teacher, classes=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train = make_loader(two_images(24, seed=2), 8, shuffle=True, seed=0)
    val = make_loader(two_images(12, seed=3), 12)
    res = fit(m, train, val, val, optim=OptimConfig(lr=0.05), epochs=2, device="cpu", seed=0,
              progress=False)
    assert len(res.history) == 2 and "total" in res.history
    assert res.history["total"].map(math.isfinite).all()
    assert 0 <= res.test_at_best_val["accuracy"] <= 1
    assert res.state_dicts["extra"].keys() == m.extra.state_dict().keys()
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
