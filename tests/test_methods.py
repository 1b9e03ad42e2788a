"""cmkd.methods: registry, hyperparameter validation, teacher updates, the KD and no-KD steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmkd import methods
from cmkd.methods.base import Method, register
from cmkd.params import ParamError
from tiny_backbones import TinyNet, TwoWay


def _models(seed=0):
    torch.manual_seed(seed)
    return TinyNet(4, 3, modality="b"), TinyNet(4, 3, modality="a")


def test_registry_lists_and_builds():
    assert {"nokd", "kd"} <= set(methods.names())
    student, teacher = _models()
    m = methods.build("kd", {"temperature": 4}, student=student, teacher=teacher, classes=3)
    assert isinstance(m, methods.get("kd"))
    assert m.hp.temperature == 4.0 and m.hp.kd_weight == 1.0  # default filled
    assert m.student_inputs == ("b",) and m.teacher_inputs == ("a",)


def test_unknown_method_message():
    with pytest.raises(ParamError) as err:
        methods.get("kdd")
    msg = str(err.value)
    assert "'kdd'" in msg and "did you mean 'kd'" in msg and "nokd" in msg


@pytest.mark.parametrize("hparams, words", [
    ({"temprature": 2.0}, ["method 'kd'", "'temprature'", "did you mean 'temperature'",
                           "kd_weight"]),
    ({"temperature": -1.0}, ["method 'kd'", "'temperature'", "out of range", "(0, 100]"]),
    ({"reduction": "sum"}, ["method 'kd'", "'reduction'", "'mean', 'elementwise_mean'"]),
    ({"kd_weight": "high"}, ["method 'kd'", "'kd_weight'", "expected float"]),
])
def test_bad_hparam_messages(hparams, words):
    student, teacher = _models()
    with pytest.raises(ParamError) as err:
        methods.build("kd", hparams, student=student, teacher=teacher, classes=3)
    for w in words:
        assert w in str(err.value)


def test_missing_teacher_and_bad_inputs():
    student, _ = _models()
    with pytest.raises(ValueError, match="method 'kd' needs a teacher"):
        methods.build("kd", student=student, teacher=None, classes=3)
    m = methods.build("nokd", student=student, classes=3)
    with pytest.raises(KeyError, match=r"no key\(s\) \['b'\]"):
        m.step({"a": torch.zeros(2, 4), "label": torch.zeros(2, dtype=torch.long)}, 0)


def test_register_refuses_duplicates():
    class Other(Method):
        name = "kd"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)


def test_kd_step_against_direct_formula():
    student, teacher = _models()
    m = methods.build("kd", {"temperature": 2.0, "ce_weight": 0.5, "kd_weight": 3.0},
                      student=student, teacher=teacher, classes=3)
    m.eval()
    torch.manual_seed(1)
    batch = {"a": torch.randn(5, 4), "b": torch.randn(5, 4), "label": torch.tensor([0, 1, 2, 0, 1])}
    out = m.step(batch, 0)
    s, t = student(batch["b"]), teacher(batch["a"])
    kl = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True,
                  reduction="batchmean") * 4
    ce = F.cross_entropy(s, batch["label"])
    torch.testing.assert_close(out["kd"], kl)
    torch.testing.assert_close(out["ce"], ce)
    torch.testing.assert_close(out["total"], 0.5 * ce + 3.0 * kl)
    assert out["total"].requires_grad and not out["kd"].requires_grad


def test_kd_term_vanishes_when_student_is_teacher():
    student, teacher = _models()
    student.load_state_dict(teacher.state_dict())
    m = methods.build("kd", student=student, teacher=teacher, classes=3,
                      student_inputs=("a",))
    m.eval()
    batch = {"a": torch.randn(6, 4), "label": torch.arange(6) % 3}
    assert float(m.step(batch, 0)["kd"]) == pytest.approx(0.0, abs=1e-6)


def test_frozen_teacher_is_not_optimised():
    student, teacher = _models()
    m = methods.build("kd", student=student, teacher=teacher, classes=3)
    ids = {id(p) for p in m.parameters()}
    assert ids == {id(p) for p in student.parameters()}
    assert not any(p.requires_grad for p in teacher.parameters())
    m.train()
    assert student.training and not teacher.training
    out = m.step({"a": torch.randn(4, 4), "b": torch.randn(4, 4),
                  "label": torch.tensor([0, 1, 2, 0])}, 0)
    out["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("update, top_k, trained_blocks", [
    ("frozen", 1, []), ("top_k", 1, ["head"]), ("top_k", 2, ["mid", "head"]),
    ("all", 1, ["body", "mid", "head"]),
])
def test_teacher_update_selects_parameters(update, top_k, trained_blocks):
    student, teacher = _models()
    m = TwoWay({"teacher_update": update, "teacher_top_k": top_k}, student=student,
               teacher=teacher, classes=3)
    expected = {id(p) for b in trained_blocks for p in getattr(teacher, b).parameters()}
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert {id(p) for p in m.parameters()} & teacher_ids == expected
    assert {id(p) for p in teacher.parameters() if p.requires_grad} == expected
    m.train()
    for b in ("body", "mid", "head"):
        assert getattr(teacher, b).training == (b in trained_blocks)


def test_top_k_beyond_the_blocks_is_refused():
    student, teacher = _models()
    with pytest.raises(ValueError, match=r"teacher_top_k in \[1, 3\]"):
        TwoWay({"teacher_update": "top_k", "teacher_top_k": 4}, student=student,
               teacher=teacher, classes=3)


def test_supervised_loss_by_task():
    student, _ = _models()
    m = methods.build("nokd", student=student, classes=3)
    logits = torch.randn(4, 3)
    multilabel = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]])
    torch.testing.assert_close(m.supervised_loss(logits, multilabel),
                               F.binary_cross_entropy_with_logits(logits, multilabel))
    seg_logits = torch.randn(2, 3, 2, 2)
    seg = torch.tensor([[[0, 1], [255, 2]], [[255, 255], [1, 1]]])
    keep = seg != 255
    direct = F.cross_entropy(seg_logits.permute(0, 2, 3, 1)[keep], seg[keep])
    torch.testing.assert_close(m.supervised_loss(seg_logits, seg), direct)
    with pytest.raises(ValueError, match="cannot tell the task"):
        m.supervised_loss(logits, torch.zeros(4, 2, dtype=torch.long))


def test_runs_mode_gives_per_run_losses():
    class Batched(torch.nn.Module):
        def forward(self, x):  # (runs, batch, 3)
            return x

    m = methods.build("nokd", student=Batched(), classes=3, student_inputs=("x",), runs=True)
    x, y = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5))
    out = m.step({"x": x, "label": y}, 0)
    direct = torch.stack([F.cross_entropy(x[r], y[r]) for r in range(2)])
    torch.testing.assert_close(out["total"], direct)
