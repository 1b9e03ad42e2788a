"""Dense distillation: per-pixel losses (cmkd.distill.dense), CIRKD's relations
(cmkd.distill.cirkd) and the methods on segmentation networks, checked against direct
references (explicit loops, torch's own KL on the 4-d tensors)."""

import pytest
import torch
import torch.nn.functional as F

from cmkd import methods, models
from cmkd.distill import dist_loss, kd_loss, nkd_loss
from cmkd.distill.cirkd import (
    anchor_relation_loss,
    labels_at,
    minibatch_pixel_loss,
    region_embeddings,
)
from cmkd.distill.dense import dense, pixels
from cmkd.engine import fit, make_loader
from cmkd.metrics.task import IGNORE_INDEX

C = 4


def _batch(seed=0, b=2, h=5, w=6, void=True):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, C, h, w, generator=g)
    t = torch.randn(b, C, h, w, generator=g)
    y = torch.randint(0, C, (b, h, w), generator=g)
    if void:
        y[:, :2, :] = IGNORE_INDEX
    return s, t, y


def test_pixels_order_and_void():
    s, t, y = _batch()
    rows_s, rows_t, labels = pixels(y, s, t)
    n = int((y != IGNORE_INDEX).sum())
    assert rows_s.shape == (n, C) and labels.shape == (n,)
    # the first labelled pixel is (image 0, row 2, column 0)
    assert torch.equal(rows_s[0], s[0, :, 2, 0]) and labels[0] == y[0, 2, 0]
    assert (labels != IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="batch, classes, H, W"):
        pixels(y, s[:, :, :4])


def test_dense_kd_equals_masked_kl_on_maps():
    """Per-pixel KD = torch's KL on the (B, C, H, W) maps, averaged over labelled pixels."""
    s, t, y = _batch()
    ours = dense(kd_loss, s, t, y, pass_target=False, temperature=2.0)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.log_softmax(t / 2, 1), log_target=True,
                  reduction="none").sum(1) * 4
    mask = y != IGNORE_INDEX
    assert torch.allclose(ours, kl[mask].mean(), atol=1e-6)


@pytest.mark.parametrize("loss,needs_target", [(kd_loss, False), (dist_loss, False),
                                               (nkd_loss, True)])
def test_void_pixels_do_not_contribute(loss, needs_target):
    s, t, y = _batch(1)
    base = dense(loss, s, t, y, pass_target=needs_target)
    s2, t2 = s.clone(), t.clone()
    void = y == IGNORE_INDEX
    s2.permute(0, 2, 3, 1)[void] = 50 * torch.randn(int(void.sum()), C)
    t2.permute(0, 2, 3, 1)[void] = -50 * torch.randn(int(void.sum()), C)
    assert torch.allclose(dense(loss, s2, t2, y, pass_target=needs_target), base, atol=1e-6)
    # and labelled pixels do
    s2[0, 0, -1, -1] += 5
    assert not torch.allclose(dense(loss, s2, t2, y, pass_target=needs_target), base)


def test_minibatch_pixel_loss_against_loops():
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(3, 5, 2, 3, generator=g), torch.randn(3, 7, 2, 3, generator=g)
    tau = 0.5
    ref = 0.0
    for a in range(3):
        for b in range(3):
            for i in range(6):
                si = F.normalize(fs[a].flatten(1)[:, i], dim=0)
                ti = F.normalize(ft[a].flatten(1)[:, i], dim=0)
                sj = F.normalize(fs[b].flatten(1), dim=0)
                tj = F.normalize(ft[b].flatten(1), dim=0)
                p = torch.softmax(ti @ tj / tau, 0)
                q = torch.softmax(si @ sj / tau, 0)
                ref += float((p * (p.log() - q.log())).sum())
    ref /= 3 * 3 * 6
    assert minibatch_pixel_loss(fs, ft, temperature=tau).item() == pytest.approx(ref, rel=1e-5)
    assert minibatch_pixel_loss(ft, ft).item() == pytest.approx(0, abs=1e-6)


def test_anchor_relation_and_regions():
    g = torch.Generator().manual_seed(4)
    s, t, a = (torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g),
               torch.randn(4, 3, generator=g))
    n = lambda x: F.normalize(x, dim=1)  # noqa: E731
    p = torch.softmax(n(t) @ n(a).T / 0.2, 1)
    q = torch.softmax(n(s) @ n(a).T / 0.2, 1)
    ref = (p * (p.log() - q.log())).sum(1).mean() * 4
    got = anchor_relation_loss(s, t, a, temperature=0.1, kd_temperature=2.0)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert anchor_relation_loss(t, t, a).item() == pytest.approx(0, abs=1e-6)
    feats = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    y[0, 0] = IGNORE_INDEX
    regions = region_embeddings(feats, y, 3)
    ref = [feats[b][:, y[b] == k].mean(1) for b in range(2) for k in range(3)
           if (y[b] == k).any()]
    assert torch.allclose(regions, torch.stack(ref), atol=1e-6)
    assert torch.equal(labels_at(y, (2, 2)), y[:, ::2, ::2])


def _seg_models(seed=0, classes=C):
    torch.manual_seed(seed)
    s = models.build("deeplabv3plus_resnet18", classes=classes, width=4, head_width=8,
                     modality="rgb")
    t = models.build("deeplabv3plus_mobilenet_v2", classes=classes, width_mult=0.1,
                     head_width=8, in_channels=1, modality="depth")
    return s, t


def _seg_batch(b=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (b, size, size), generator=g)
    y[:, :4] = IGNORE_INDEX
    return {"rgb": torch.randn(b, 3, size, size, generator=g),
            "depth": torch.randn(b, 1, size, size, generator=g), "label": y}


@pytest.mark.parametrize("name", ["nokd", "kd", "dist", "nkd", "shake", "c2kd", "c2kd_dist",
                                  "cirkd"])
def test_methods_on_segmentation_networks(name):
    s, t = _seg_models()
    hp = {"pixel_memory": 64, "region_memory": 16} if name == "cirkd" else None
    m = methods.build(name, hp, student=s, teacher=t, classes=C)
    m.train()
    batch = _seg_batch()
    for epoch in range(2):  # CIRKD's banks are filled by the first step, read by the second
        terms = m.step(batch, epoch)
        assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values()), terms
        terms["total"].backward()
    assert all(p.grad is not None for p in s.parameters())
    if name.startswith("c2kd"):  # the filter counts labelled pixels
        labelled = int((batch["label"] != IGNORE_INDEX).sum())
        assert 0 <= terms["n_krc_below_omega"] <= labelled
    if name == "cirkd":
        assert terms["pixel_relation"] > 0 and terms["region_relation"] > 0
        assert len(m.pixel_bank) <= 64 and len(m.region_bank) <= 16


def test_kd_method_ignores_void_teacher_pixels():
    """The method's KD term does not move when the teacher changes on void pixels only."""
    s, t = _seg_models(1)
    m = methods.build("kd", student=s, teacher=t, classes=C)
    m.eval()
    batch = _seg_batch()
    base = m.step(batch, 0)["kd"]
    void_depth = dict(batch)
    # the frozen teacher sees the same depth, so perturb its output directly: wrap its forward
    orig = t.forward

    def shifted(x):
        out = orig(x)
        return out + 30 * (batch["label"] == IGNORE_INDEX)[:, None].float() * torch.randn_like(out)

    t.forward = shifted
    assert torch.allclose(m.step(void_depth, 0)["kd"], base, atol=1e-5)


def test_fit_scores_miou_on_rgbd_scenes():
    from cmkd.data.rgbd_scenes import RGBDScenes

    train, test = RGBDScenes("train", n=8, size=32), RGBDScenes("test", n=4, size=32)
    s, t = _seg_models(2, classes=5)
    m = methods.build("c2kd", student=s, teacher=t, classes=5)
    res = fit(m, make_loader(train, 4, shuffle=True), None, make_loader(test, 4),
              optim={"lr": 0.01}, epochs=1, device="cpu", progress=False, metrics=("miou",))
    assert 0 <= res.test_last["miou"] <= 1
    assert {"train_miou", "test_miou"} <= set(res.history.columns)


def test_class_major_softmaxes_match_torch_on_many_rows_and_are_torch_on_few():
    from cmkd.distill import _softmax as rows

    g = torch.Generator().manual_seed(5)
    many = (4 * torch.randn(rows.MANY_ROWS + 3, 5, generator=g)).requires_grad_()
    target = torch.randint(0, 5, (many.shape[0],), generator=g)
    for ours, ref in [(rows.log_softmax, lambda z: F.log_softmax(z, -1)),
                      (rows.softmax, lambda z: torch.softmax(z, -1)),
                      (lambda z: rows.cross_entropy(z, target),
                       lambda z: F.cross_entropy(z, target, reduction="none"))]:
        a, b = ours(many), ref(many)
        assert a.dim() == 1 or not a.is_contiguous()  # computed class-major: a transposed view
        weights = torch.randn(a.shape, generator=g)  # a gradient that is not uniform
        (ga,) = torch.autograd.grad((a * weights).sum(), many)
        (gb,) = torch.autograd.grad((b * weights).sum(), many)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    # a leading run dimension: classes stay the last dimension
    stack = torch.randn(3, rows.MANY_ROWS, 4, generator=g)
    torch.testing.assert_close(rows.log_softmax(stack), F.log_softmax(stack, -1))
    # a classification batch takes torch's own kernels: exactly torch's numbers
    few = torch.randn(256, 10, generator=g)
    assert torch.equal(rows.log_softmax(few), F.log_softmax(few, -1))
    assert torch.equal(rows.softmax(few), torch.softmax(few, -1))
    y = torch.randint(0, 10, (256,), generator=g)
    assert torch.equal(rows.cross_entropy(few, y), F.cross_entropy(few, y, reduction="none"))


def test_testing_only_the_best_state_gives_the_scores_of_testing_every_epoch():
    """fit(test_every=0) tests once training has ended, at the best-validation state it kept:
    the same test at best validation, last test, selected epoch and states as a test curve
    drawn every epoch, with no test pass in between."""
    from cmkd.data.rgbd_scenes import RGBDScenes

    train = RGBDScenes("train", n=16, size=32)
    val, test = RGBDScenes("val", n=8, size=32), RGBDScenes("test", n=8, size=32)
    out = {}
    for every in (1, 0):
        s, _ = _seg_models(4, classes=5)
        m = methods.build("nokd", student=s, classes=5)
        out[every] = fit(m, make_loader(train, 4, shuffle=True, seed=1), make_loader(val, 4),
                         make_loader(test, 4), optim={"lr": 0.05, "momentum": 0.9}, epochs=6,
                         device="cpu", seed=3, progress=False, metrics=("miou",),
                         test_every=every)
    curve, end = out[1], out[0]
    assert curve.best_epoch == end.best_epoch < 5  # the best epoch is not the last one
    assert curve.test_at_best_val == end.test_at_best_val
    assert curve.test_last == end.test_last and curve.best_val == end.best_val
    for which in ("student", "best_student"):
        a, b = curve.state_dicts[which], end.state_dicts[which]
        assert all(torch.equal(a[k], b[k]) for k in a), which
    assert end.history.test_miou.notna().tolist() == [False] * 5 + [True]
