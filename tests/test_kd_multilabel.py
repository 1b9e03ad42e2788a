"""KD on multi-label targets (MFH Table 7): the per-label binary KD loss against an independent
computation, the registry's ``kd`` dispatching to it, and the multi-label MVD stand-in and the
MM-IMDB 50 / 50 training split it needs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from cmkd import data, methods, models
from cmkd.data import mvd
from cmkd.distill.kd import binary_kd_loss


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(Bern(p) || Bern(q)) elementwise, in float64."""
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_binary_kd_matches_the_bernoulli_kl_per_label(T):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 3, generator=g) * 3, torch.randn(7, 3, generator=g) * 3
    p_t, p_s = expit(t.double().numpy() / T), expit(s.double().numpy() / T)
    per_sample = T**2 * _bernoulli_kl(p_t, p_s).sum(1)
    got = binary_kd_loss(s, t, temperature=T, reduction="none")
    np.testing.assert_allclose(got.double().numpy(), per_sample, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(binary_kd_loss(s, t, temperature=T)), per_sample.mean(),
                               rtol=1e-4)
    np.testing.assert_allclose(float(binary_kd_loss(s, t, temperature=T, reduction="sum")),
                               per_sample.sum(), rtol=1e-4)
    np.testing.assert_allclose(
        float(binary_kd_loss(s, t, temperature=T, reduction="elementwise_mean")),
        per_sample.mean() / 3, rtol=1e-4)


def test_binary_kd_gradient_and_zero():
    # d/ds of T^2 KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T))) = T (sigmoid(s/T) - sigmoid(t/T))
    T = 3.0
    s = torch.tensor([[-20.0, 0.3, 4.0]], requires_grad=True)
    t = torch.tensor([[1.0, -2.0, 4.0]])
    binary_kd_loss(s, t, temperature=T, reduction="sum").backward()
    want = T * (torch.sigmoid(s.detach() / T) - torch.sigmoid(t / T))
    torch.testing.assert_close(s.grad, want)
    assert float(binary_kd_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        binary_kd_loss(s, t, temperature=0.0)


def _mlps():
    kw = dict(in_features=6, classes=3, hidden=(8,))
    return (models.build("mlp", modality="b", **kw), models.build("mlp", modality="a", **kw))


def test_kd_method_uses_binary_kd_and_bce_on_multilabel_targets():
    torch.manual_seed(0)
    student, teacher = _mlps()
    batch = {"a": torch.randn(5, 6), "b": torch.randn(5, 6),
             "label": (torch.rand(5, 3) < 0.5).float()}
    hp = {"temperature": 2.0, "ce_weight": 0.3, "kd_weight": 0.7}
    m = methods.build("kd", hp, student=student, teacher=teacher, classes=3,
                      student_inputs=("b",), teacher_inputs=("a",))
    out = m.step(batch, 0)
    s, t = student(batch["b"]), teacher(batch["a"]).detach()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, batch["label"])
    kd = binary_kd_loss(s, t, temperature=2.0)
    torch.testing.assert_close(out["kd"], kd.detach())
    torch.testing.assert_close(out["total"], 0.3 * bce + 0.7 * kd)
    m = methods.build("kd", {"select": "random"}, student=student, teacher=teacher, classes=3,
                      student_inputs=("b",), teacher_inputs=("a",))
    with pytest.raises(ValueError, match="multi-label"):
        m.step(batch, 0)


def test_mvd_multilabel_labels_follow_their_hyperplanes():
    spec = mvd.vary_gamma_spec(5)
    d = mvd.generate_multilabel(spec, 500, np.random.default_rng(1), labels=3)
    assert d.y.shape == (500, 3) and d.delta.shape == (3, spec.d_star)
    np.testing.assert_array_equal(d.y, (d.x_star.astype(np.float64) @ d.delta.T > 0))
    assert 0.3 < d.y.mean() < 0.7
    whole = data.load("mvd", None, "train", multilabel=2, n_train=40, overlap=5)
    first = data.load("mvd", None, "train", multilabel=2, n_train=40, overlap=5, half="first")
    second = data.load("mvd", None, "train", multilabel=2, n_train=40, overlap=5, half="second")
    assert len(first) == len(second) == 20
    both = torch.cat([torch.stack([first[i]["xb"] for i in range(20)]),
                      torch.stack([second[i]["xb"] for i in range(20)])])
    torch.testing.assert_close(both, torch.stack([whole[i]["xb"] for i in range(40)]))
    assert whole[0]["label"].dtype == torch.float32 and whole[0]["label"].shape == (2,)
    # the multi-class draw is untouched by the new options
    a, b = data.load("mvd", None, "test"), data.load("mvd", None, "test", half="second")
    torch.testing.assert_close(a[3]["xa"], b[3]["xa"])
    with pytest.raises(ValueError, match="half"):
        data.load("mvd", None, "train", half="third")


def test_mmimdb_halves_split_the_training_rows(tmp_path):
    from test_data_loaders import make_mmimdb

    make_mmimdb(tmp_path, n=30)
    kw = dict(boundaries=(20, 25))
    rows = {h: data.load("mmimdb", tmp_path, "train", half=h, **kw).rows
            for h in ("all", "first", "second")}
    assert len(rows["first"]) == len(rows["second"]) == 10
    assert not set(rows["first"]) & set(rows["second"])
    assert sorted({*rows["first"], *rows["second"]}) == list(rows["all"]) == list(range(20))
    assert list(rows["first"]) != list(range(10))     # a random split, not the first rows
    again = data.load("mmimdb", tmp_path, "train", half="first", **kw).rows
    np.testing.assert_array_equal(again, rows["first"])
    other = data.load("mmimdb", tmp_path, "train", half="first", half_seed=1, **kw).rows
    assert list(other) != list(rows["first"])
    assert len(data.load("mmimdb", tmp_path, "val", half="first", **kw)) == 5
