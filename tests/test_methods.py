"""cmkd.methods: registry, hyperparameter validation, teacher updates, the KD and no-KD steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmkd import methods, models
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
        n_runs = 2

        def forward(self, x):  # (runs, batch, 3)
            return x

    m = methods.build("nokd", student=Batched(), classes=3, student_inputs=("x",), runs=True)
    x, y = torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5))
    out = m.step({"x": x, "label": y}, 0)
    direct = torch.stack([F.cross_entropy(x[r], y[r]) for r in range(2)])
    torch.testing.assert_close(out["total"], direct)


# ----------------------------------------------------------------------------- stacks of runs
def _stack(runs, seed=0, modality="b"):
    return models.stacked("mlp", [seed + r for r in range(runs)], in_features=4, classes=3,
                          hidden=[5], modality=modality)


def test_runs_need_stacked_models_of_one_size():
    student, teacher = _models()
    with pytest.raises(ValueError, match="runs=True needs a stacked model.*TinyNet is not one"):
        methods.build("nokd", student=student, classes=3, runs=True)
    with pytest.raises(ValueError, match="a stack of 2 student runs needs a teacher stack of "
                                         "as many runs, got 3"):
        methods.build("kd", student=_stack(2), teacher=_stack(3, modality="a"), classes=3,
                      runs=True)
    with pytest.raises(ValueError, match="method 'kd': 3 seeds for a stack of 2 runs"):
        methods.build("kd", student=_stack(2), teacher=_stack(2, modality="a"), classes=3,
                      runs=True, seeds=[1, 2, 3])
    m = methods.build("kd", student=_stack(2), teacher=_stack(2, modality="a"), classes=3,
                      runs=True, seeds=[7, 9])
    assert m.n_runs == 2 and m.run_seeds() == [7, 9] and m.run_seeds(11) == [18, 20]
    one = methods.build("kd", student=student, teacher=teacher, classes=3)
    assert one.n_runs is None
    with pytest.raises(ValueError, match="run_seeds is for methods built with runs=True"):
        one.run_seeds()


def test_a_stacked_student_trains_with_per_run_losses():
    """A stacked student's 'total' is per run and the runs' gradients are their own."""
    student, teacher = _stack(2), _stack(2, seed=5, modality="a")
    m = methods.build("kd", student=student, teacher=teacher, classes=3, runs=True)
    g = torch.Generator().manual_seed(0)
    batch = {"a": torch.randn(2, 6, 4, generator=g), "b": torch.randn(2, 6, 4, generator=g),
             "label": torch.randint(0, 3, (2, 6), generator=g)}
    out = m.step(batch, 0)
    assert out["total"].shape == (2,)
    out["total"][1].backward()
    grad = student[0].weight.grad
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[1]) > 0


# ----------------------------------------------------------------------------- method_hparams
def test_hparams_for_precedence():
    """registry defaults < overrides[method] < preset < overrides[preset] < row."""
    overrides = {
        "c2kd": {"lambda1": 0.7, "proxy": True, "lambda2": 0.4, "omega": 0.1},
        "c2kd_bd": {"ofs": True, "lambda2": 0.5, "omega": 0.2},
        "c2kd_noproxy": {"lambda3": 0.9},  # another preset's: not applied
    }
    name, hp = methods.hparams_for("c2kd_bd", overrides, {"omega": 0.3})
    assert name == "c2kd"
    assert hp == {"lambda1": 0.7,                       # overrides[method]
                  "proxy": False, "nt": False,           # the preset over overrides[method]
                  "ofs": True, "lambda2": 0.5,           # overrides[preset] over the preset
                  "omega": 0.3}                          # the row over everything
    full = methods.get(name).make_hparams(hp)
    assert full.lambda3 == 1.0 and full.filter == "krc"  # the registry's defaults under all
    # the method's own name: its overrides, no preset, and the row
    assert methods.hparams_for("c2kd", overrides) == ("c2kd", overrides["c2kd"])
    assert methods.hparams_for("kd", {"kd": {"temperature": 4.0, "kd_weight": 2.0}},
                               {"temperature": 8.0}) == (
        "kd", {"temperature": 8.0, "kd_weight": 2.0})
    assert methods.hparams_for("c2kd_noselect") == ("c2kd", {"ofs": False})
    # nothing mutated
    assert overrides["c2kd_bd"] == {"ofs": True, "lambda2": 0.5, "omega": 0.2}


@pytest.mark.parametrize("overrides, words", [
    ({"kdd": {}}, ["unknown method 'kdd'", "did you mean 'kd'"]),
    ({"c2kd_nope": {"omega": 0.1}}, ["unknown method 'c2kd_nope'"]),
    ({"kd": 4.0}, ["'kd'", "expected a mapping of hyperparameter names"]),
    # a preset's entry before its method's malformed one: still the malformed one named
    ({"c2kd_bd": {}, "c2kd": 4.0}, ["'c2kd'", "expected a mapping of hyperparameter names"]),
    ({"kd": {"temprature": 2.0}}, ["method 'kd'", "'temprature'", "unknown parameter",
                                   "did you mean 'temperature'"]),
    ({"c2kd": {"omega": 2.0}}, ["method 'c2kd'", "'omega'", "out of range"]),
    ({"c2kd_bd": {"filter": "spearman"}}, ["method 'c2kd'", "'filter'", "'krc'"]),
    ({"c2kd": {"bd": False}}, ["'teacher_update'", "bd: false"]),
    # a preset is checked over its method's overrides: bd false with the preset's 'top_k'
    ({"c2kd": {"bd": False, "teacher_update": "frozen"}, "c2kd_partial": {}},
     ["'teacher_update'", "bd: false", "'top_k'"]),
])
def test_check_method_hparams_messages(overrides, words):
    with pytest.raises(ParamError) as err:
        methods.check_method_hparams(overrides)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_check_method_hparams_accepts_methods_and_presets():
    methods.check_method_hparams({})
    methods.check_method_hparams({"kd": {"temperature": 4}, "c2kd": {"omega": 0.1},
                                  "c2kd_partial": {"teacher_top_k": 1}, "c2kd_dist_bd": {}})
