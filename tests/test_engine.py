"""cmkd.engine: schedules, determinism, model selection, a KD run, teacher updates, metrics."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from torch.utils.data import DataLoader

from cmkd import methods
from cmkd.engine import (
    OptimConfig,
    collect_outputs,
    evaluate,
    fit,
    learning_rate,
    make_loader,
)
from cmkd.methods.base import Method
from cmkd.params import ParamError
from cmkd.runtime import torch_threads
from tiny_backbones import DictDataset, TinyNet, TwoWay, two_views


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread is faster, and not slowed by other processes on the cores
    (with two threads on a busy shared machine the KD test took 40 times longer)."""
    with torch_threads(1):
        yield


# ----------------------------------------------------------------------------- schedules
def _torch_schedule(scheduler_cls, epochs, **kwargs):
    """Per-epoch learning rates from a torch.optim.lr_scheduler (an independent reference)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = scheduler_cls(opt, **kwargs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_poly_schedule_matches_torch_and_c2kd_values():
    cfg = OptimConfig("sgd", lr=0.01, schedule="poly")
    ours = [learning_rate(cfg, e, 100) for e in range(100)]
    ref = _torch_schedule(torch.optim.lr_scheduler.PolynomialLR, 100, total_iters=100,
                          power=0.9)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    official = OptimConfig("sgd", lr=1e-2, schedule="poly", lr_min=1e-4)  # C2KD's code
    assert learning_rate(official, 0, 100) == pytest.approx(1e-2)
    assert learning_rate(official, 50, 100) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5**0.9)
    assert learning_rate(official, 99, 100) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.01**0.9)


def test_step_and_constant_schedules():
    cfg = OptimConfig("adamw", lr=0.01, weight_decay=1e-5, schedule="step", step_size=25)
    ours = [learning_rate(cfg, e, 60) for e in range(60)]
    ref = _torch_schedule(torch.optim.lr_scheduler.StepLR, 60, step_size=25, gamma=0.1)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert learning_rate(OptimConfig(lr=0.3), 7, 10) == 0.3
    with pytest.raises(ValueError, match=r"epoch must lie in \[0, 10\)"):
        learning_rate(cfg, 10, 10)


def test_optim_config_validation_messages():
    with pytest.raises(ParamError, match="'optimizer': 'adam' is not allowed; choose one of "
                                         "'sgd', 'adamw'"):
        OptimConfig("adam")
    with pytest.raises(ParamError, match="'lr_min': must not exceed lr"):
        OptimConfig(lr=0.01, lr_min=0.1)
    with pytest.raises(ParamError, match="'sched'.*did you mean 'schedule'"):
        OptimConfig.from_mapping({"sched": "poly"})
    assert OptimConfig.from_mapping({"schedule": "poly", "lr": 1}).lr == 1.0


# ----------------------------------------------------------------------------- runs
def _kd_run(seed, loader_seed=None, epochs=2):
    torch.manual_seed(seed)
    student = TinyNet(4, 3, modality="b", dropout=0.2)
    teacher = TinyNet(4, 3, modality="a")
    method = methods.build("kd", {"temperature": 2.0}, student=student, teacher=teacher,
                           classes=3)
    train = make_loader(two_views(48, 0), 16, shuffle=True,
                        seed=seed if loader_seed is None else loader_seed)
    val = make_loader(two_views(24, 1), 24)
    test = make_loader(two_views(24, 2), 24)
    return fit(method, train, val, test, optim=OptimConfig(lr=0.05, schedule="poly"),
               epochs=epochs, device="cpu", seed=seed, metrics=("accuracy", "f1_macro"))


def test_fit_is_deterministic_and_history_has_the_columns():
    a, b = _kd_run(3), _kd_run(3)
    pd.testing.assert_frame_equal(a.history, b.history)
    for k, v in a.state_dicts["student"].items():
        torch.testing.assert_close(v, b.state_dicts["student"][k], rtol=0, atol=0)
    assert list(a.history.columns) == [
        "epoch", "lr", "steps", "total", "ce", "kd", "train_accuracy", "train_f1_macro",
        "val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro"]
    assert a.history.lr.tolist() == pytest.approx([0.05, 0.05 * 0.5**0.9])
    c = _kd_run(3, loader_seed=4)  # another shuffle order: another history
    assert not np.allclose(a.history.total, c.history.total)


class Threshold(nn.Module):
    """Two classes split at a learnable threshold: x (batch, 1) -> class 1 when x > theta."""

    modalities = ("x",)
    classes = 2
    feature_shapes = {"pooled": (1,)}

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(()))

    def forward_features(self, x):
        x = x[:, 0]
        return torch.stack([self.theta - x, x - self.theta], -1), {"pooled": x[:, None]}

    def forward(self, x):
        return self.forward_features(x)[0]

    def blocks(self):
        return [self]


class Climb(Method):
    """Moves theta up by lr per step (loss -theta) and counts the samples it saw."""

    name = "test_climb"
    needs_teacher = False

    def step(self, batch, epoch):
        logits = self.student_forward(batch)
        n = torch.tensor(float(len(batch["label"])))
        return {"total": -self.student.theta + 0 * logits.sum(), "n_seen": n}


def _threshold_set(xs, labels):
    return DataLoader(DictDataset(x=torch.tensor(xs)[:, None], label=torch.tensor(labels)),
                      batch_size=8)


def test_best_validation_epoch_and_last_epoch_are_both_recorded():
    # theta after epoch e is e + 1; validation accuracy peaks at theta = 2 (epoch 1), where the
    # test accuracy is 0; at the last epoch (theta = 4) the test accuracy is 0.5
    train = _threshold_set([0.0, 1.0, 2.0], [0, 1, 1])
    val = _threshold_set([1.5, 2.5], [0, 1])
    test = _threshold_set([0.5, 3.5], [1, 0])
    method = Climb(student=Threshold(), classes=2)
    rows = []
    res = fit(method, train, val, test, optim=OptimConfig(lr=1.0, momentum=0.0), epochs=4,
              device="cpu", on_epoch=rows.append)
    assert res.history.val_accuracy.tolist() == [0.5, 1.0, 0.5, 0.5]
    assert res.best_epoch == 1
    assert res.best_val == {"accuracy": 1.0}
    assert res.test_at_best_val == {"accuracy": 0.0}
    assert res.test_last == {"accuracy": 0.5}
    assert float(res.state_dicts["best_student"]["theta"]) == 2.0
    assert float(res.state_dicts["student"]["theta"]) == 4.0
    assert res.history.n_seen.tolist() == [3.0] * 4  # counters are summed over the epoch
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    no_val = fit(Climb(student=Threshold(), classes=2), train, None, test,
                 optim=OptimConfig(lr=1.0, momentum=0.0), epochs=4, device="cpu")
    assert no_val.best_epoch == 3 and no_val.test_at_best_val == {"accuracy": 0.5}


def test_kd_student_learns_from_a_fixed_teacher_alone():
    """ce_weight = 0: the student (modality b) sees no label, only the teacher (modality a)."""
    train = make_loader(two_views(96, 0), 16, shuffle=True, seed=0)
    val = make_loader(two_views(48, 1), 48)
    test = make_loader(two_views(48, 2), 48)
    optim = OptimConfig(lr=0.05)
    torch.manual_seed(0)
    teacher = TinyNet(4, 3, modality="a")
    fit(methods.build("nokd", student=teacher, classes=3), train, val, test, optim=optim,
        epochs=15, device="cpu")
    teacher_acc = evaluate(teacher, test, ("a",))["accuracy"]
    assert teacher_acc > 0.9
    frozen = copy.deepcopy(teacher.state_dict())
    student = TinyNet(4, 3, modality="b")
    before = evaluate(student, test, ("b",))["accuracy"]
    kd = methods.build("kd", {"ce_weight": 0.0, "temperature": 2.0}, student=student,
                       teacher=teacher, classes=3)
    res = fit(kd, train, val, test, optim=optim, epochs=15, device="cpu")
    assert res.test_at_best_val["accuracy"] > 0.85 > before + 0.3
    assert res.history.kd.iloc[-1] < 0.5 * res.history.kd.iloc[0]
    for k, v in teacher.state_dict().items():  # the frozen teacher (BN statistics too)
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)


def _changed(before, after, prefix):
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


@pytest.mark.parametrize("update, changed", [
    ("frozen", []), ("top_k", ["head"]), ("all", ["body", "mid", "head"])])
def test_fit_updates_the_right_teacher_parameters(update, changed):
    torch.manual_seed(0)
    student, teacher = TinyNet(4, 3, modality="b"), TinyNet(4, 3, modality="a")
    before = copy.deepcopy(teacher.state_dict())
    method = TwoWay({"teacher_update": update, "teacher_top_k": 1}, student=student,
                    teacher=teacher, classes=3)
    fit(method, make_loader(two_views(32, 0), 16, shuffle=True), None, None,
        optim=OptimConfig(lr=0.1), epochs=1, device="cpu")
    after = teacher.state_dict()
    for block in ("body", "mid", "head"):  # 'body' holds BN running statistics too
        assert _changed(before, after, block) == (block in changed), block


def test_cuda_only_options_are_refused_on_cpu():
    method = methods.build("nokd", student=TinyNet(4, 3, modality="a"), classes=3)
    loader = make_loader(two_views(8, 0), 8)
    with pytest.raises(ValueError, match="amp=True is only supported on CUDA"):
        fit(method, loader, None, None, optim=OptimConfig(), epochs=1, device="cpu", amp=True)
    with pytest.raises(ValueError, match="metrics must be"):
        fit(method, loader, None, None, optim=OptimConfig(), epochs=1, device="cpu",
            metrics=("top5",))


# ----------------------------------------------------------------------------- metrics
class Fixed(nn.Module):
    """Returns the batch's stored logits: evaluate() on known predictions."""

    classes = 3

    def forward(self, logits):
        return logits


def test_evaluate_against_direct_computations():
    g = torch.Generator().manual_seed(0)
    logits, label = torch.randn(20, 3, generator=g), torch.randint(0, 3, (20,), generator=g)
    loader = DataLoader(DictDataset(z=logits, label=label), batch_size=7)
    acc = evaluate(Fixed(), loader, ("z",), ("accuracy",))["accuracy"]
    assert acc == pytest.approx(float((logits.argmax(1) == label).float().mean()))

    scores = torch.randn(30, 3, generator=g)
    labels = (torch.rand(30, 3, generator=g) > 0.5).float()
    loader = DataLoader(DictDataset(z=scores, label=labels), batch_size=8)
    m_ap = evaluate(Fixed(), loader, ("z",), ("map",))["map"]
    assert m_ap == pytest.approx(average_precision_score(labels.numpy(), scores.numpy(),
                                                         average="macro"), abs=1e-6)

    seg = torch.randn(2, 3, 2, 3, generator=g)
    target = torch.tensor([[[0, 1, 255], [2, 2, 1]], [[0, 0, 1], [255, 2, 0]]])
    loader = DataLoader(DictDataset(z=seg, label=target), batch_size=1)
    miou = evaluate(Fixed(), loader, ("z",), ("miou",))["miou"]
    pred, keep = seg.argmax(1)[target != 255], target[target != 255]
    ious = [((pred == c) & (keep == c)).sum() / ((pred == c) | (keep == c)).sum()
            for c in range(3) if ((pred == c) | (keep == c)).any()]
    assert miou == pytest.approx(float(torch.stack(ious).mean()))


def test_collect_outputs():
    torch.manual_seed(0)
    model = TinyNet(4, 3, modality="a")
    loader = make_loader(two_views(10, 0), 4)
    out = collect_outputs(model, loader, ("a",), ("pooled", "body"))
    assert out["logits"].shape == (10, 3) and out["pooled"].shape == (10, 8)
    assert out["label"].tolist() == (torch.arange(10) % 3).tolist()
    model.eval()
    torch.testing.assert_close(out["logits"], model(two_views(10, 0).tensors["a"]))
    with pytest.raises(KeyError, match="no feature"):
        collect_outputs(model, loader, ("a",), ("layer9",))


class TinyCNN(nn.Module):
    """img (batch, 1, 8, 8) -> conv-BN-ReLU -> pooled (batch, 4) -> linear."""

    modalities = ("img",)
    classes = 3
    feature_shapes = {"pooled": (4,)}

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward_features(self, img):
        pooled = self.conv(img).mean((2, 3))
        return self.head(pooled), {"pooled": pooled}

    def forward(self, img):
        return self.forward_features(img)[0]

    def blocks(self):
        return [self.conv, self.head]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_with_bf16_and_channels_last():
    g = torch.Generator().manual_seed(0)
    data = DictDataset(img=torch.randn(32, 1, 8, 8, generator=g), label=torch.arange(32) % 3)
    torch.manual_seed(0)
    student, teacher = TinyCNN(), TinyCNN()
    method = methods.build("kd", student=student, teacher=teacher, classes=3)
    loader = make_loader(data, 8, shuffle=True)
    res = fit(method, loader, loader, loader, optim=OptimConfig(lr=0.05), epochs=2,
              device="cuda", metrics=("accuracy", "f1_macro", "map", "miou"))
    assert np.isfinite(res.history.total).all()
    assert student.conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(v.device.type == "cpu" for v in res.state_dicts["student"].values())
