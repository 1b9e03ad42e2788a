"""C2KD Table 2's "+KRC" and "+Random" (cmkd.methods.selection, cmkd.distill.random_mask).

Planted truth: logits whose student side equals the teacher's on a chosen set of samples and is
reversed on the rest, so the KRC filter must keep exactly that set; the random mask keeps as
many, is reproducible from its seed, and spreads its choice uniformly over the batch.  The
methods' KD term is checked against the pure loss averaged by hand over the kept samples.
"""

from __future__ import annotations

import pytest
import torch

from cmkd import methods
from cmkd.distill import dkd_loss, kd_loss, ofsd_mask, random_mask
from cmkd.methods.selection import Selection
from cmkd.params import ParamError
from tiny_backbones import TinyNet

CLASSES = 5


def _planted(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, CLASSES, generator=g)
    aligned = torch.rand(n, generator=g) < 0.4
    student = torch.where(aligned[:, None], 2 * teacher + 1, -teacher)  # tau +1 / -1
    return teacher, student, aligned


def test_krc_selection_keeps_exactly_the_planted_aligned_samples():
    t, s, aligned = _planted()
    assert torch.equal(Selection("krc").mask(t, s), aligned)
    assert Selection("none").mask(t, s) is None


def test_random_mask_keeps_the_krc_count_and_is_seeded():
    t, s, aligned = _planted()
    a = Selection("random", seed=3).mask(t, s)
    b = Selection("random", seed=3).mask(t, s)
    c = Selection("random", seed=4).mask(t, s)
    assert a.sum() == aligned.sum() == c.sum()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, aligned)  # chance of a tie: 1 / C(40, k), negligible


def test_random_mask_per_run_counts_and_uniform_choice():
    keep = torch.zeros(3, 10, dtype=torch.bool)
    keep[0, :4] = True
    keep[2, :9] = True
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([random_mask(keep, g) for _ in range(4000)])
    assert (draws.sum(-1) == keep.sum(-1)).all()
    freq = draws.double().mean(0)  # each position kept with probability count / batch
    expected = keep.sum(-1, keepdim=True).double() / 10
    se = (expected * (1 - expected) / 4000).sqrt().clamp_min(1e-9)
    assert ((freq - expected).abs() <= 5 * se + 1e-12).all()


def _build(name, hparams=None, seed=0):
    torch.manual_seed(seed)
    student, teacher = TinyNet(4, CLASSES, modality="b"), TinyNet(4, CLASSES, modality="a")
    m = methods.build(name, hparams, student=student, teacher=teacher, classes=CLASSES)
    m.train()
    return m


def _batch(n=32):
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(n, 4, generator=g), "b": torch.randn(n, 4, generator=g),
            "label": torch.arange(n) % CLASSES}


def _logits(m, batch):
    with torch.no_grad():
        return m.student(batch["b"]), m.teacher(batch["a"])


@pytest.mark.parametrize("name", ["kd_krc", "tckd_krc", "nckd_krc"])
def test_krc_presets_distil_the_mean_over_the_kept_samples(name):
    m = _build(name, {"warmup_epochs": 0} if name != "kd_krc" else None)
    batch = _batch()
    out = m.step(batch, 0)
    s, t = _logits(m, batch)
    keep = ofsd_mask(t, s, 0.0)
    assert 0 < keep.sum() < len(keep)  # the filter acts on this batch
    assert float(out["keep"]) == pytest.approx(float(keep.double().mean()))
    if name == "kd_krc":
        per, key = kd_loss(s, t, reduction="none"), "kd"
    else:
        hp = methods.resolve(name)[1]
        per = dkd_loss(s, t, batch["label"], alpha=hp.get("alpha", 1.0),
                       beta=hp.get("beta", 8.0), reduction="none")
        key = "dkd"
    assert float(out[key]) == pytest.approx(float(per[keep].mean()), rel=1e-5)


@pytest.mark.parametrize("base", ["kd", "nckd"])
def test_random_presets_keep_as_many_as_krc_and_repeat_from_the_seed(base):
    batch = _batch()
    krc = _build(f"{base}_krc").step(batch, 0)
    r1, r2 = (_build(f"{base}_random").step(batch, 0) for _ in range(2))
    key = "kd" if base == "kd" else "dkd"
    assert float(r1["keep"]) == pytest.approx(float(krc["keep"]))
    assert float(r1[key]) == float(r2[key])


def test_select_is_validated():
    with pytest.raises(ParamError, match="select"):
        _build("kd", {"select": "spearman"})
