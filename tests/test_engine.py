"""cmkd.engine: schedules, determinism, model selection, a KD run, teacher updates, metrics;
stacks of runs (each run as if trained alone, per-run selection, hooks, shapes) and
cmkd.models.stack.Stacked."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from torch.utils.data import DataLoader

from cmkd import engine, methods, models
from cmkd.data.arrays import ArrayDataset, StackedDataset
from cmkd.engine import (
    OptimConfig,
    collect_outputs,
    evaluate,
    fit,
    learning_rate,
    make_loader,
)
from cmkd.jobs import Job, read_history, run_job
from cmkd.methods.base import Method
from cmkd.models.stack import Stacked
from cmkd.params import ParamError
from cmkd.runtime import torch_threads
from tiny_backbones import DictDataset, TinyConvNet, TinyNet, TwoWay, two_images, two_views


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
        "epoch", "lr", "steps", "since_best", "total", "ce", "kd", "train_accuracy",
        "train_f1_macro",
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


@pytest.mark.parametrize("patience, epochs_run", [(1, 3), (2, 4), (5, 7), (None, 7)])
def test_patience_stops_when_validation_has_stalled(patience, epochs_run):
    # the planted run above: validation peaks at epoch 1 (then 0.5, 0.5, ... as theta climbs)
    train = _threshold_set([0.0, 1.0, 2.0], [0, 1, 1])
    val = _threshold_set([1.5, 2.5], [0, 1])
    test = _threshold_set([0.5, 3.5], [1, 0])
    res = fit(Climb(student=Threshold(), classes=2), train, val, test,
              optim=OptimConfig(lr=1.0, momentum=0.0), epochs=7, device="cpu",
              patience=patience)
    assert res.epochs_run == epochs_run == len(res.history)
    assert res.history.since_best.tolist() == [0, 0] + list(range(1, epochs_run - 1))
    assert res.best_epoch == 1 and res.since_best == epochs_run - 2
    assert res.test_at_best_val == {"accuracy": 0.0}
    assert res.test_correct.tolist() == [0, 0]  # theta 2 misclassifies both test items
    assert not np.isnan(res.history.test_accuracy.iloc[-1])  # the stopping epoch is tested
    assert float(res.state_dicts["student"]["theta"]) == epochs_run
    with pytest.raises(ValueError, match="patience must be a positive int or None, got 0"):
        fit(Climb(student=Threshold(), classes=2), train, val, test,
            optim=OptimConfig(lr=1.0), epochs=2, device="cpu", patience=0)


def test_per_item_test_correctness_matches_the_reported_accuracy():
    res = _kd_run(3, epochs=3)
    assert res.test_correct.dtype == torch.uint8 and res.test_correct.shape == (24,)
    assert res.test_correct.double().mean().item() == pytest.approx(
        res.test_at_best_val["accuracy"])
    stack = _fit_stack("kd", None, list(range(R_RUNS)), epochs=3)
    for r in range(R_RUNS):
        one = stack.run(r)
        assert one.test_correct.shape == (21,)
        assert one.test_correct.double().mean().item() == pytest.approx(
            one.test_at_best_val["accuracy"])
        assert one.since_best == stack.epochs_run - 1 - one.best_epoch


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


def test_dense_scores_match_torchmetrics_on_the_logits_ties_included():
    # evaluate hands torchmetrics each pixel's top-1 class (max over dim 1) instead of the
    # logits; the scores must be those torchmetrics computes from the logits themselves
    from cmkd.metrics.task import task_metrics

    g = torch.Generator().manual_seed(3)
    seg = torch.randn(6, Fixed.classes, 5, 7, generator=g)
    seg[:, 2] = seg[:, 1]  # ties between two classes: the first one wins either way
    seg[0, :, 0, 0] = 0.0  # a pixel whose classes all tie
    target = torch.randint(0, Fixed.classes, (6, 5, 7), generator=g)
    target[:, 0] = 255
    loader = DataLoader(DictDataset(z=seg, label=target), batch_size=4)
    ours = evaluate(Fixed(), loader, ("z",), ("miou", "accuracy"))
    ref = task_metrics(("miou", "accuracy"), Fixed.classes, "segmentation")
    ref.update(seg[:4], target[:4])
    ref.update(seg[4:], target[4:])
    assert ours == {k: float(v) for k, v in ref.compute().items()}


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


# ----------------------------------------------------------------------------- stacks of runs
R_RUNS, DIM, HIDDEN, CLASSES = 3, 4, 6, 3


def _mlp_stack(seeds, modality):
    return models.stacked("mlp", seeds, in_features=DIM, classes=CLASSES, hidden=(HIDDEN,),
                          modality=modality)


def _run_splits(runs, n_train=30):
    """Each run its own draw of :func:`two_views` (train, val, test), as ArrayDatasets."""
    return [{split: ArrayDataset(two_views(n, 100 * r + i).tensors)
             for i, (split, n) in enumerate((("train", n_train), ("val", 18), ("test", 21)))}
            for r in runs]


def _stack_setup(name, hp, runs):
    """The method ``name`` on the stack of ``runs`` (indices into fixed per-run seeds and data:
    student seeds 10 + r, teacher seeds 50 + r, method seeds 90 + r) and its three loaders."""
    student = _mlp_stack([10 + r for r in runs], "b")
    needs = methods.get(methods.resolve(name)[0]).needs_teacher
    teacher = _mlp_stack([50 + r for r in runs], "a") if needs else None
    method = methods.build(name, hp, student=student, teacher=teacher, classes=CLASSES,
                           runs=True, seeds=[90 + r for r in runs])
    sets = {s: StackedDataset([d[s] for d in _run_splits(runs)])
            for s in ("train", "val", "test")}
    train = make_loader(sets["train"], 8, shuffle=True, seed=7,
                        batch_sampler=method.train_batch_sampler(len(sets["train"]), 8, 7))
    return method, train, make_loader(sets["val"], 7), make_loader(sets["test"], 7)


def _fit_stack(name, hp, runs, *, epochs=3, metrics=("accuracy",)):
    method, train, val, test = _stack_setup(name, hp, runs)
    return fit(method, train, val, test,
               optim=OptimConfig(lr=0.1, momentum=0.9, weight_decay=1e-3), epochs=epochs,
               device="cpu", seed=0, metrics=metrics)


def _run_part(key, value, r, runs):
    """Run r's part of a stacked state tensor (BatchedBatchNorm holds runs x channels rows)."""
    if value.dim() == 0:
        return value
    if ".bn." in key:
        c = value.shape[0] // runs
        return value[r * c:(r + 1) * c]
    return value[r]


@pytest.mark.parametrize("name, hp", [("nokd", None), ("kd", {"temperature": 2.0}),
                                      ("c2kd", None), ("dlb", None)])
def test_a_stack_trains_like_its_runs_one_at_a_time(name, hp):
    """R runs trained as one stack equal R one-run stacks (same seeds, data and batch order):
    weights, teacher and method modules, history, selection and scores, run by run."""
    metrics = ("accuracy", "f1_macro") if name == "kd" else ("accuracy",)
    runs = list(range(R_RUNS))
    res = _fit_stack(name, hp, runs, metrics=metrics)
    assert res.runs == R_RUNS and res.history.run.tolist() == [0, 1, 2] * 3
    assert np.isfinite(res.history.total).all()
    if name != "c2kd":  # (C2KD's total holds its teacher's terms too)
        assert res.history.ce.iloc[-R_RUNS:].mean() < res.history.ce.iloc[:R_RUNS].mean()
    for r in runs:
        one = _fit_stack(name, hp, [r], metrics=metrics)
        for part in res.state_dicts:
            for k, v in res.state_dicts[part].items():
                torch.testing.assert_close(_run_part(k, v, r, R_RUNS),
                                           _run_part(k, one.state_dicts[part][k], 0, 1),
                                           rtol=1e-5, atol=1e-6, msg=f"{name} run {r} {part} {k}")
        pd.testing.assert_frame_equal(res.run(r).history, one.run(0).history, rtol=1e-5)
        mine = res.run(r)
        assert mine.best_epoch == one.best_epoch[0]
        for field_ in ("best_val", "test_at_best_val", "val_last", "test_last",
                       "teacher_test_last"):
            assert getattr(mine, field_) == pytest.approx(getattr(one.run(0), field_)), field_
    if name == "c2kd":  # C2KD trains its teacher: scored after training, per run
        assert len(res.teacher_test_last) == R_RUNS
        assert set(res.state_dicts["extra"]) >= {"student_proxy.1.bn.running_mean"}
    else:
        assert res.teacher_test_last == []


def test_each_run_selects_its_own_best_validation_epoch():
    """Checked against the history (argmax of the run's own val column, the earliest on ties)
    and against the student's state at that epoch, snapshotted by on_epoch."""
    method, train, val, test = _stack_setup("kd", None, list(range(R_RUNS)))
    snapshots = {}

    def snapshot(row):
        if row["run"] == 0:
            snapshots[row["epoch"]] = copy.deepcopy(method.student.state_dict())

    res = fit(method, train, val, test, optim=OptimConfig(lr=0.1, momentum=0.9), epochs=5,
              device="cpu", seed=0, on_epoch=snapshot)
    assert sorted(snapshots) == list(range(5))
    h = res.history
    for r in range(R_RUNS):
        scores = h[h.run == r].val_accuracy.to_numpy()
        best = int(np.flatnonzero(scores == scores.max())[0])
        assert res.best_epoch[r] == best
        row = h[(h.run == r) & (h.epoch == best)].iloc[0]
        assert res.best_val[r] == {"accuracy": row.val_accuracy}
        assert res.test_at_best_val[r] == {"accuracy": row.test_accuracy}
        for k, v in res.state_dicts["best_student"].items():
            assert torch.equal(v[r], snapshots[best][k][r]), (r, k)
    # the merged best state, evaluated, gives each run's selected scores
    model = _mlp_stack([0] * R_RUNS, "b")
    model.load_state_dict(res.state_dicts["best_student"])
    assert evaluate(model, val, ("b",)) == res.best_val
    assert evaluate(model, test, ("b",)) == res.test_at_best_val


def test_a_stack_tested_only_at_its_best_states_scores_as_with_a_test_curve():
    """fit(test_every=0) on a stack: each run's test at its own best epoch (and per-item
    correctness) as when every epoch is tested."""
    out = {}
    for every in (1, 0):
        method, train, val, test = _stack_setup("kd", None, list(range(R_RUNS)))
        out[every] = fit(method, train, val, test, optim=OptimConfig(lr=0.1, momentum=0.9),
                         epochs=5, device="cpu", seed=0, test_every=every)
    curve, end = out[1], out[0]
    assert curve.best_epoch == end.best_epoch and len(set(end.best_epoch)) > 1
    assert curve.test_at_best_val == end.test_at_best_val
    assert curve.test_last == end.test_last
    for a, b in zip(curve.test_correct, end.test_correct):
        assert torch.equal(a, b)
    h = end.history
    assert h[h.epoch < 4].test_accuracy.isna().all() and h[h.epoch == 4].test_accuracy.notna().all()
    with pytest.raises(ValueError, match="test_every must be an int >= 0"):
        fit(method, train, val, test, optim=OptimConfig(lr=0.1), epochs=1, device="cpu",
            test_every=-1)


class StackedThreshold(nn.Module):
    """R runs of :class:`Threshold`: theta (R,); x (R, batch, 1) -> logits (R, batch, 2)."""

    modalities = ("x",)
    classes = 2
    feature_shapes = {"pooled": (1,)}

    def __init__(self, runs):
        super().__init__()
        self.n_runs = runs
        self.theta = nn.Parameter(torch.zeros(runs))

    def forward(self, x):
        x = x[..., 0]
        t = self.theta[:, None]
        return torch.stack([t - x, x - t], -1)


class StackClimb(Method):
    """Moves theta_r up by lr * speed[r] per step (loss -speed[r] theta_r)."""

    name = "test_stack_climb"
    needs_teacher = False
    speed = torch.tensor([1.0, 0.5, 0.25])

    def step(self, batch, epoch):
        logits = self.student_forward(batch)
        return {"total": -self.speed * self.student.theta + 0 * logits.sum((1, 2))}


def _stacked_threshold_set(xs, labels):
    return make_loader(StackedDataset([ArrayDataset({"x": torch.tensor(x)[:, None],
                                                     "label": torch.tensor(y)})
                                       for x, y in zip(xs, labels)]), 8)


def test_runs_peaking_at_different_epochs_are_selected_apart():
    # theta_r after epoch e: speed[r] (e + 1) = run 0: 1 2 3 4, run 1: .5 1 1.5 2,
    # run 2: .25 .5 .75 1; validation peaks at epoch 1 (theta 2), epoch 2 (theta 1.5) and is
    # flat for run 2 (the earliest epoch wins the tie)
    train = _stacked_threshold_set([[0.0, 1.0, 2.0]] * 3, [[0, 1, 1]] * 3)
    val = _stacked_threshold_set([[1.5, 2.5], [1.25, 1.75], [5.0, 6.0]],
                                 [[0, 1], [0, 1], [1, 1]])
    test = _stacked_threshold_set([[0.5, 3.5], [0.5, 1.6], [0.1, 0.9]], [[1, 0], [1, 1], [1, 1]])
    method = StackClimb(student=StackedThreshold(3), classes=2, runs=True)
    res = fit(method, train, val, test, optim=OptimConfig(lr=1.0, momentum=0.0), epochs=4,
              device="cpu")
    assert res.best_epoch == [1, 2, 0]
    assert res.best_val == [{"accuracy": 1.0}] * 3
    # test at theta 2 / 1.5 / .25, and at the last epoch (theta 4 / 2 / 1)
    assert res.test_at_best_val == [{"accuracy": 0.0}, {"accuracy": 0.5}, {"accuracy": 0.5}]
    assert res.test_last == [{"accuracy": 0.5}, {"accuracy": 0.0}, {"accuracy": 0.0}]
    assert res.state_dicts["best_student"]["theta"].tolist() == [2.0, 1.5, 0.25]
    assert res.state_dicts["student"]["theta"].tolist() == [4.0, 2.0, 1.0]
    one = res.run(1)
    assert one.best_epoch == 2 and one.test_at_best_val == {"accuracy": 0.5}
    assert one.history.val_accuracy.tolist() == [0.5, 0.5, 1.0, 0.5]
    assert "run" not in one.history
    with pytest.raises(ValueError, match=r"run must lie in \[0, 3\), got 3"):
        res.run(3)
    single = fit(Climb(student=Threshold(), classes=2), _threshold_set([0.0, 1.0], [0, 1]),
                 None, None, optim=OptimConfig(lr=1.0), epochs=1, device="cpu")
    with pytest.raises(ValueError, match="run\\(\\) is for the result of a stack"):
        single.run(0)
    no_val = fit(StackClimb(student=StackedThreshold(3), classes=2, runs=True), train, None,
                 test, optim=OptimConfig(lr=1.0, momentum=0.0), epochs=4, device="cpu")
    assert no_val.best_epoch == [3, 3, 3] and no_val.test_at_best_val == no_val.test_last


class FreezeRun(Method):
    """nokd on a stack whose after_backward zeroes run ``frozen``'s gradients: between
    backward() and the optimiser step, so that run never moves."""

    name = "test_freeze_run"
    needs_teacher = False
    frozen = 1

    def step(self, batch, epoch):
        ce = self.supervised_loss(self.student_forward(batch), batch["label"])
        return {"total": ce, "ce": ce.detach()}

    def after_backward(self, epoch):
        self.calls = getattr(self, "calls", 0) + 1
        for p in self.student.parameters():
            p.grad[self.frozen] = 0


def test_after_backward_acts_on_a_stack_between_backward_and_step():
    student = _mlp_stack([1, 2, 3], "b")
    before = copy.deepcopy(student.state_dict())
    method = FreezeRun(student=student, classes=CLASSES, runs=True)
    train = make_loader(StackedDataset([d["train"] for d in _run_splits(range(3))]), 8,
                        shuffle=True)
    res = fit(method, train, None, None, optim=OptimConfig(lr=0.1), epochs=2, device="cpu")
    assert method.calls == 2 * len(train)
    assert np.isfinite(res.history.total).all()
    for k, v in res.state_dicts["student"].items():
        assert torch.equal(v[1], before[k][1]), k
        assert not torch.equal(v[0], before[k][0]) and not torch.equal(v[2], before[k][2]), k


class BadShape(Method):
    """Returns a scalar 'total' (or, with ``per_run``, (R,) terms without a stack)."""

    name = "test_bad_shape"
    needs_teacher = False

    def step(self, batch, epoch):
        ce = self.supervised_loss(self.student_forward(batch), batch["label"])
        return {"total": ce.sum(), "ce": ce.detach()} if self.runs else \
            {"total": torch.stack([ce, ce])}


def test_terms_of_the_wrong_shape_are_refused():
    train = make_loader(StackedDataset([d["train"] for d in _run_splits(range(2))]), 8)
    with pytest.raises(ValueError, match=r"method 'test_bad_shape' trains a stack of 2 runs but "
                                         r"returned terms of shapes \{'total': \(\)\}; each term "
                                         r"must have shape \(2,\)"):
        fit(BadShape(student=_mlp_stack([1, 2], "b"), classes=CLASSES, runs=True), train, None,
            None, optim=OptimConfig(), epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"returned non-scalar terms \{'total': \(2,\)\}"):
        fit(BadShape(student=TinyNet(4, 3, modality="b"), classes=3),
            make_loader(two_views(16, 0), 8), None, None, optim=OptimConfig(), epochs=1,
            device="cpu")


def test_dlb_stack_through_run_job(tmp_path):
    """A stack job (per-run seeds and MVD draws) of DLB, its own batch sampler included."""
    job = Job(dataset="mvd", model="mlp", inputs=("xb",), method="dlb",
              model_options={"in_features": 50, "classes": 2, "hidden": (8,), "modality": "xb"},
              dataset_options={"n_train": 40, "n_val": 16, "n_test": 16},
              runs=[{"seed": 1}, {"seed": 2, "dataset_options": {"run": 1}}],
              optim={"lr": 0.05}, epochs=2, batch_size=8, device="cpu")
    rows = run_job(job, tmp_path)
    assert [r["run"] for r in rows] == [0, 1] and [r["run_seed"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["test_at_best_val"]) for r in rows)
    h = read_history(job, tmp_path)
    assert h.run.tolist() == [0, 1, 0, 1]
    assert np.isfinite(h[["total", "ce", "dlb"]].to_numpy()).all()
    assert (h.dlb > 0).all()  # DLB's batches repeat the previous half: its term is on
    # 40 samples in halves of 4: 10 DLB batches per epoch
    assert h.steps.tolist() == [10] * 4


# ----------------------------------------------------------------------------- Stacked
def _conv_models(seeds, modality):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(TinyConvNet(3, modality=modality))
    return out


def test_stacked_cnn_computes_each_source_model():
    sources = _conv_models([1, 2, 3], "a")
    stacked = Stacked(sources)
    x = torch.randn(3, 5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    stacked.eval()
    logits, feats = stacked.forward_features(x)
    assert logits.shape == (3, 5, 3) and feats["conv1"].shape == (3, 5, 4, 8, 8)
    for r, m in enumerate(sources):
        m.eval()
        ref_logits, ref_feats = m.forward_features(x[r])
        torch.testing.assert_close(stacked(x)[r], m(x[r]))
        torch.testing.assert_close(logits[r], ref_logits)
        for k in ref_feats:
            torch.testing.assert_close(feats[k][r], ref_feats[k])
    assert stacked.n_runs == 3 and stacked.classes == 3 and stacked.modalities == ("a",)
    with pytest.raises(ValueError, match=r"a stack of 3 runs takes inputs \(runs, batch, "):
        stacked(x[:2])
    with pytest.raises(ValueError, match="one architecture"):
        Stacked([TinyConvNet(3), TinyNet(4, 3)])


def test_stacked_cnn_batch_norm_statistics_train_per_run():
    sources = _conv_models([1, 2], "a")
    stacked = Stacked(sources).train()
    refs = [copy.deepcopy(m).train() for m in sources]
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(2, 6, 1, 8, 8, generator=g)
        x[1] = 3 * x[1] + 1  # another distribution in run 1
        out = stacked(x)
        for r, m in enumerate(refs):
            torch.testing.assert_close(out[r], m(x[r]))
    bn = stacked.stack.conv1[1]
    assert bn.num_batches_tracked.tolist() == [2, 2]
    for r, m in enumerate(refs):
        torch.testing.assert_close(bn.running_mean[r], m.conv1[1].running_mean)
        torch.testing.assert_close(bn.running_var[r], m.conv1[1].running_var)
    assert not torch.allclose(bn.running_var[0], bn.running_var[1])


def test_registry_stacks_any_network_from_its_seeds():
    stacked = models.stacked("avdigits_cnn", [4, 9], modality="image", classes=5)
    assert isinstance(stacked, Stacked)
    state = torch.random.get_rng_state()
    x = torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for r, seed in enumerate([4, 9]):
        torch.manual_seed(seed)
        ref = models.build("avdigits_cnn", modality="image", classes=5).eval()
        torch.testing.assert_close(stacked.eval()(x)[r], ref(x[r]))
    torch.random.set_rng_state(state)
    before = torch.random.get_rng_state()
    models.stacked("avdigits_cnn", [4], modality="image")
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is kept


def test_kd_on_a_stacked_cnn_pair_trains_each_run_like_its_own_models():
    """One fit epoch of KD on Stacked CNNs (batch norm in both) equals, run by run, the plain
    (unstacked) source models trained by the plain method on that run's data."""
    seeds_s, seeds_t = [1, 2], [5, 6]
    data = [two_images(24, 10 + r) for r in range(2)]
    student = Stacked(_conv_models(seeds_s, "b"))
    teacher = Stacked(_conv_models(seeds_t, "a"))
    t_before = copy.deepcopy(teacher.state_dict())
    method = methods.build("kd", student=student, teacher=teacher, classes=3, runs=True)
    stack = StackedDataset([ArrayDataset(d.tensors) for d in data])
    optim = OptimConfig(lr=0.05)
    res = fit(method, make_loader(stack, 8, shuffle=True, seed=3), None, make_loader(stack, 8),
              optim=optim, epochs=1, device="cpu")
    assert np.isfinite(res.history.total).all() and res.history.steps.tolist() == [3, 3]
    for k, v in teacher.state_dict().items():  # the frozen teacher, BN statistics too
        assert torch.equal(v, t_before[k]), k
    for r in range(2):
        s, t = _conv_models([seeds_s[r]], "b")[0], _conv_models([seeds_t[r]], "a")[0]
        plain = fit(methods.build("kd", student=s, teacher=t, classes=3),
                    make_loader(data[r], 8, shuffle=True, seed=3), None,
                    make_loader(data[r], 8), optim=optim, epochs=1, device="cpu")
        for k, v in plain.state_dicts["student"].items():
            torch.testing.assert_close(res.state_dicts["student"][f"stack.{k}"][r], v,
                                       rtol=1e-5, atol=1e-6, msg=k)
        # (a stack counts its accuracy in float64, torchmetrics in float32)
        assert res.test_last[r] == pytest.approx(plain.test_last, rel=1e-6)
        assert res.run(r).history.total.iloc[0] == pytest.approx(plain.history.total.iloc[0],
                                                                 rel=1e-5)


def test_a_stack_keeps_the_default_memory_format(monkeypatch):
    """channels_last ('auto': on CUDA) would make a stack's 5-d conv weights fail; fit keeps a
    stack in the default format.  CUDA's 'auto' is emulated on the CPU here."""
    with pytest.raises(RuntimeError, match="rank 4"):
        Stacked(_conv_models([1, 2], "a")).to(memory_format=torch.channels_last)
    monkeypatch.setattr(engine, "_use",
                        lambda flag, name, device: name == "channels_last" and flag is not False)
    data = StackedDataset([ArrayDataset(two_images(16, r).tensors) for r in range(2)])
    method = methods.build("nokd", student=Stacked(_conv_models([1, 2], "a")), classes=3,
                           runs=True)
    res = fit(method, make_loader(data, 8), None, None, optim=OptimConfig(), epochs=1,
              device="cpu")
    assert np.isfinite(res.history.total).all()
    with pytest.raises(ValueError, match="channels_last=True is for one run; a stack of 2 runs"):
        fit(method, make_loader(data, 8), None, None, optim=OptimConfig(), epochs=1,
            device="cpu", channels_last=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kd_on_a_stacked_cnn_pair_on_cuda():
    data = StackedDataset([ArrayDataset(two_images(32, r).tensors) for r in range(2)])
    method = methods.build("kd", student=Stacked(_conv_models([1, 2], "b")),
                           teacher=Stacked(_conv_models([5, 6], "a")), classes=3, runs=True)
    loader = make_loader(data, 8, shuffle=True)
    res = fit(method, loader, loader, loader, optim=OptimConfig(lr=0.05), epochs=2,
              device="cuda")
    assert np.isfinite(res.history.total).all() and len(res.test_last) == 2
