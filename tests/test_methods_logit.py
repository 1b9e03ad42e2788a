"""cmkd.methods, the logit-based methods: DKD, DIST, NKD, DML, DLB, Zipf, USKD and C2KD.

Each step is checked against its pure loss called directly on the same logits (an identity: the
method wires, the loss computes), the teacher's parameters train or not as the method says, DLB
pairs its batches, C2KD's switches turn on and off the terms Table 5 says, its KRC count equals a
direct count with cmkd.metrics.kendall_tau, and runs=True (batched MLPs) gives, run by run, what
the same models give one at a time.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cmkd import methods
from cmkd.distill import (
    c2kd_loss,
    dist_loss,
    dkd_loss,
    dkd_warmup,
    dlb_loss,
    dml_loss,
    kd_loss,
    nkd_loss,
    tckd_nckd,
    uskd_loss,
    zipf_loss,
)
from cmkd.engine import OptimConfig, fit, make_loader
from cmkd.methods.c2kd import C2KD_PRESETS
from cmkd.methods.dlb import DLBBatchSampler, dlb_batches
from cmkd.metrics import kendall_tau
from cmkd.models import MLP, BatchedMLP, BatchedProxyHead, ProxyHead
from cmkd.params import ParamError
from cmkd.runtime import torch_threads
from tiny_backbones import DictDataset, TinyNet, two_views

CLASSES = 5
LOGIT_METHODS = ("dkd", "dist", "nkd", "dml", "dlb", "zipf", "uskd", "c2kd")
SELF_KD = ("dlb", "zipf", "uskd")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _models(seed=0):
    torch.manual_seed(seed)
    return TinyNet(4, CLASSES, modality="b"), TinyNet(4, CLASSES, modality="a")


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 4, generator=g), "b": torch.randn(n, 4, generator=g),
            "label": torch.arange(n) % CLASSES}


def _build(name, hparams=None, seed=0, **kw):
    student, teacher = _models(seed)
    m = methods.build(name, hparams, student=student, teacher=teacher, classes=CLASSES, **kw)
    m.train()
    return m


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("name", LOGIT_METHODS + tuple(sorted(methods.PRESETS)))
def test_step_gives_finite_terms_and_a_differentiable_total(name):
    m = _build(name)
    out = m.step(_batch(), 0)
    assert out["total"].requires_grad and out["total"].dim() == 0
    for k, v in out.items():
        assert math.isfinite(float(v.detach())), (k, v)
        if k != "total":
            assert not v.requires_grad, k
    out["total"].backward()
    assert all(p.grad is not None for p in m.student.parameters())


def test_registry_lists_the_methods_and_presets():
    assert set(LOGIT_METHODS) <= set(methods.names())
    table2 = {f"{b}_{s}" for b in ("kd", "tckd", "nckd") for s in ("krc", "random")}
    assert set(methods.PRESETS) == (set(C2KD_PRESETS) - {"c2kd"}
                                    | {"shake_raw", "tckd", "nckd"} | table2)
    assert methods.resolve("nckd_random") == ("dkd", {"alpha": 0.0, "select": "random"})
    assert methods.resolve("shake_raw") == ("shake", {"layer_norm": False})
    assert methods.resolve("tckd") == ("dkd", {"beta": 0.0})
    assert methods.resolve("nckd") == ("dkd", {"alpha": 0.0})
    assert methods.resolve("c2kd_bd", {"omega": 0.5}) == (
        "c2kd", {"proxy": False, "ofs": False, "nt": False, "omega": 0.5})
    with pytest.raises(ParamError, match="unknown method 'c2kd_nope'"):
        methods.resolve("c2kd_nope")


@pytest.mark.parametrize("preset, part", [("tckd", 0), ("nckd", 1)])
def test_tckd_and_nckd_presets_distil_one_dkd_term(preset, part):
    """C2KD Table 2's rows: the preset's distillation term is DKD's TCKD (weight 1) or NCKD
    (weight 8) alone, at T 4, as the separate terms of cmkd.distill.tckd_nckd give them."""
    from cmkd.distill.dkd import tckd_nckd

    m = _build(preset, {"warmup_epochs": 0})
    batch = _batch()
    out = m.step(batch, 0)
    with torch.no_grad():
        s = m.student(batch[m.student_inputs[0]])
        t = m.teacher(batch[m.teacher_inputs[0]])
    terms = tckd_nckd(s, t, batch["label"], 4.0)
    weight = (1.0, 8.0)[part]
    expected = weight * terms[part].mean()  # the terms carry T^2 already
    assert float(out["dkd"]) == pytest.approx(float(expected), rel=1e-5)


def test_presets_cover_notebook_08_variants():
    """Notebook 08's C2KD variants (gamma_c2kd.C2KD_VARIANTS, once its private switch table,
    kept here) are the presets' hyperparameters, switch by switch."""
    from cmkd.experiments.gamma_c2kd import C2KD_VARIANTS

    switches = {  # name: (proxy, ofs, nt, top_k, target_mode, average)
        "c2kd": (True, True, True, None, "remove", "selected"),
        "c2kd_top1": (True, True, True, 1, "remove", "selected"),
        "c2kd_official": (True, True, True, None, "zero", "batch"),
        "c2kd_noproxy": (False, True, True, None, "remove", "selected"),
        "c2kd_bd_nt": (False, False, True, None, "remove", "selected"),
        "c2kd_bd_ofs": (False, True, False, None, "remove", "selected"),
        "c2kd_bd": (False, False, False, None, "remove", "selected"),
    }
    assert set(C2KD_VARIANTS) == set(switches)
    for name, v in switches.items():
        hp = methods.get("c2kd").make_hparams(methods.resolve(name)[1])
        top_k = None if hp.teacher_update == "all" else hp.teacher_top_k
        assert (hp.proxy, hp.ofs, hp.nt, top_k, hp.target_mode, hp.average) == v, name
        assert hp.bd, name


@pytest.mark.parametrize("name, hparams, words", [
    ("c2kd", {"bd": False}, ["'teacher_update'", "bd: false", "frozen"]),
    ("c2kd", {"teacher_update": "frozen"}, ["'teacher_update'", "bd: false"]),
    ("c2kd", {"filter": "spearman"}, ["'filter'", "'krc'", "'gradcos'"]),
    ("c2kd", {"target_mode": "keep"}, ["'target_mode'", "'remove', 'zero'"]),
    ("c2kd", {"proxy_feature": "layer9"}, ["no feature 'layer9'", "'body'", "'pooled'"]),
    ("dkd", {"beta": -1.0}, ["method 'dkd'", "'beta'", "out of range"]),
    ("uskd", {"weak_feature": "nope"}, ["no feature 'nope'"]),
])
def test_bad_hyperparameters_are_refused_by_name(name, hparams, words):
    with pytest.raises(ValueError) as err:
        _build(name, hparams)
    for w in words:
        assert w in str(err.value)


# ----------------------------------------------------------------------------- identities
def _logits(m, batch):
    """The student's (and teacher's) logits and features, recomputed (train-mode BN uses the
    batch statistics, so a second forward gives the same values)."""
    s, sf = m.student.forward_features(batch["b"])
    t, tf = (m.teacher.forward_features(batch["a"]) if m.teacher is not None else (None, None))
    return s, t, sf, tf


def test_dkd_dist_nkd_equal_their_losses():
    batch, y = _batch(), _batch()["label"]
    ce = nn.functional.cross_entropy
    m = _build("dkd", {"beta": 2.0, "warmup_epochs": 8})
    out = m.step(batch, 3)
    s, t, _, _ = _logits(m, batch)
    direct = dkd_loss(s, t, y, beta=2.0, warmup=dkd_warmup(4, 8))
    torch.testing.assert_close(out["dkd"], direct)
    torch.testing.assert_close(out["total"], ce(s, y) + direct)
    assert m.warmup(0) == pytest.approx(1 / 8) and m.warmup(7) == 1.0

    m = _build("dist", {"kd_weight": 2.0})
    out = m.step(batch, 0)
    s, t, _, _ = _logits(m, batch)
    torch.testing.assert_close(out["dist"], dist_loss(s, t))
    torch.testing.assert_close(out["total"], ce(s, y) + 2.0 * dist_loss(s, t))

    m = _build("nkd")
    out = m.step(batch, 0)
    s, t, _, _ = _logits(m, batch)
    torch.testing.assert_close(out["nkd"], nkd_loss(s, t, y, gamma=1.5))
    torch.testing.assert_close(out["total"], ce(s, y) + nkd_loss(s, t, y))
    assert float(out["n_krc_below_omega"]) == float((kendall_tau(t, s) <= 0).sum())


def test_dml_equals_its_loss_and_trains_both_peers():
    batch = _batch()
    m = _build("dml", {"temperature": 2.0})
    assert m.teacher_update == "all"
    out = m.step(batch, 0)
    s, t, _, _ = _logits(m, batch)
    direct = dml_loss(s, t, batch["label"], temperature=2.0)
    for k in ("student", "teacher", "total"):
        torch.testing.assert_close(out[k], direct[k])
    out["total"].backward()
    assert all(p.grad is not None for p in m.teacher.parameters())
    assert {id(p) for p in m.teacher.parameters()} <= {id(p) for p in m.parameters()}


def test_zipf_and_uskd_equal_their_losses():
    batch, y = _batch(), _batch()["label"]
    ce = nn.functional.cross_entropy
    student, _ = _models()
    m = methods.build("zipf", student=student, classes=CLASSES)
    assert m.teacher is None
    out = m.step(batch, 0)
    s = student(batch["b"])
    torch.testing.assert_close(out["zipf"], zipf_loss(s, y))
    torch.testing.assert_close(out["total"], ce(s, y) + zipf_loss(s, y))

    m = methods.build("uskd", student=student, classes=CLASSES)
    assert m.weak_feature == "pooled"  # TinyNet has no layer3
    assert isinstance(m.extra["weak"], nn.Linear) and m.extra["weak"].in_features == 8
    out = m.step(batch, 0)
    s, feats = student.forward_features(batch["b"])
    weak = m.extra["weak"](feats["pooled"])
    torch.testing.assert_close(out["uskd"], uskd_loss(s, y, weak=weak))
    out["total"].backward()
    assert m.extra["weak"].weight.grad is not None  # the weak head trains
    m = methods.build("uskd", {"weak": False, "weak_feature": "body"}, student=student,
                      classes=CLASSES)
    assert "weak" not in m.extra
    torch.testing.assert_close(m.step(batch, 0)["uskd"], uskd_loss(student(batch["b"]), y))
    m = methods.build("uskd", {"weak_feature": "body"}, student=student, classes=CLASSES)
    assert m.weak_feature == "body"


def test_c2kd_equals_its_loss():
    batch, y = _batch(), _batch()["label"]
    m = _build("c2kd", {"omega": -0.5, "lambda2": 0.5, "target_mode": "zero"})
    assert m.proxy_features == ("pooled", "pooled")  # no layer3 on TinyNet
    out = m.step(batch, 0)
    s, t, sf, tf = _logits(m, batch)
    sp, tp = m.extra["student_proxy"](sf["pooled"]), m.extra["teacher_proxy"](tf["pooled"])
    direct = c2kd_loss(s, t, y, student_proxy=sp, teacher_proxy=tp, omega=-0.5,
                       lambdas=(1.0, 0.5, 1.0), target_mode="zero")
    for k, v in direct.items():
        torch.testing.assert_close(out[k], v, msg=k)


# ----------------------------------------------------------------------------- teachers
@pytest.mark.parametrize("name, hparams, trained", [
    ("dkd", None, []), ("dist", None, []), ("nkd", None, []),
    ("dml", None, ["body", "mid", "head"]),
    ("c2kd", None, ["body", "mid", "head"]),
    ("c2kd", {"teacher_update": "top_k", "teacher_top_k": 1}, ["head"]),
    ("c2kd_partial", None, ["mid", "head"]),
    ("kd", None, []),
    ("c2kd", {"bd": False, "teacher_update": "frozen"}, []),
])
def test_teacher_gets_gradients_only_where_it_trains(name, hparams, trained):
    m = _build(name, hparams)
    m.step(_batch(), 0)["total"].backward()
    for block in ("body", "mid", "head"):
        grads = [p.grad for p in getattr(m.teacher, block).parameters()]
        if block in trained:
            assert all(g is not None for g in grads), block
        else:
            assert all(g is None for g in grads), block
        assert getattr(m.teacher, block).training == (block in trained)
    if "teacher_proxy" in m.extra:  # the teacher's proxy learns even from a frozen teacher
        assert all(p.grad is not None for p in m.extra["teacher_proxy"].parameters())


@pytest.mark.parametrize("name", SELF_KD)
def test_self_kd_needs_no_teacher(name):
    student, _ = _models()
    m = methods.build(name, student=student, classes=CLASSES)
    assert m.teacher is None and m.teacher_blocks_trained() == []
    m.train()
    m.step(_batch(), 0)["total"].backward()


def test_top_k_teacher_update_reads_blocks():
    """'top_k' trains the teacher's top blocks of blocks() (a block may group several children),
    a stacked MLP's top linear layers; the rest gets no gradient."""
    class Grouped(TinyNet):
        """blocks (body, mid) then head."""

        def blocks(self):
            return [nn.Sequential(self.body, self.mid), self.head]

    torch.manual_seed(0)
    teacher = Grouped(4, CLASSES, modality="a")
    for k, trained in ((1, ["head"]), (2, ["body", "mid", "head"])):
        m = methods.build("c2kd", {"teacher_update": "top_k", "teacher_top_k": k},
                          student=_models()[0], teacher=teacher, classes=CLASSES)
        assert ({id(p) for b in m.teacher_blocks_trained() for p in b.parameters()}
                == {id(p) for b in trained for p in getattr(teacher, b).parameters()})
        for b in ("body", "mid", "head"):
            assert all(p.requires_grad == (b in trained)
                       for p in getattr(teacher, b).parameters()), (k, b)
    with pytest.raises(ValueError, match=r"teacher_top_k in \[1, 2\]"):
        methods.build("c2kd", {"teacher_update": "top_k", "teacher_top_k": 3},
                      student=_models()[0], teacher=teacher, classes=CLASSES)
    mlp = BatchedMLP(4, [6, 6], 3, [0, 1])
    m = methods.build("c2kd", {"teacher_update": "top_k", "teacher_top_k": 1},
                      student=BatchedMLP(4, [6, 6], 3, [2, 3]), teacher=mlp, classes=3,
                      runs=True, student_inputs=("b",), teacher_inputs=("a",))
    assert m.teacher_blocks_trained() == [mlp[-1]]
    assert [p.shape for p in m.parameters()[-2:]] == [(2, 6, 3), (2, 3)]


# ----------------------------------------------------------------------------- DLB
def test_dlb_pairs_each_batch_with_the_previous_one():
    n, bs = 20, 8
    data = DictDataset(b=torch.randn(n, 4), label=torch.arange(n) % CLASSES,
                       index=torch.arange(n))
    sampler = DLBBatchSampler(n, bs, seed=3)
    loader = DataLoader(data, batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == len(sampler) == 5
    for prev, cur in zip(batches, batches[1:]):  # each batch starts with the previous' end
        assert torch.equal(cur["index"][:bs // 2], prev["index"][-(bs // 2):])
    student, _ = _models()
    m = methods.build("dlb", {"alpha": 2.0}, student=student, classes=CLASSES)
    m.eval()  # fixed weights: the repeated samples get the same logits, the DLB term is 0
    out = [m.step(b, 0) for b in batches]
    assert float(out[0]["dlb"]) == 0.0
    for o in out[1:]:
        assert float(o["dlb"]) == pytest.approx(0.0, abs=1e-6)
    # changed weights between steps: the term is the KD towards the stored logits
    m.reset()
    first = m.step(batches[0], 0)
    before = student(batches[0]["b"]).detach()
    with torch.no_grad():
        student.head.weight.mul_(1.5)
    out = m.step(batches[1], 0)
    now = student(batches[1]["b"])
    half = bs // 2
    torch.testing.assert_close(out["dlb"], dlb_loss(now[:half], before))
    y = batches[1]["label"]
    torch.testing.assert_close(out["total"], nn.functional.cross_entropy(now, y)
                               + 2.0 * dlb_loss(now[:half], before))
    assert float(first["dlb"]) == 0.0
    # a new epoch starts afresh; a batch that does not repeat the previous one is refused
    assert float(m.step(batches[0], 1)["dlb"]) == 0.0
    with pytest.raises(ValueError, match="does not start with the samples"):
        m.step(batches[2], 1)


def test_dlb_batches_order_in_the_sampler():
    g = torch.Generator().manual_seed(5)
    expected = [b.tolist() for b in dlb_batches(10, 4, torch.Generator().manual_seed(5))]
    assert list(DLBBatchSampler(10, 4, generator=g)) == expected


# ----------------------------------------------------------------------------- C2KD switches
NONZERO = {  # Table 5: which terms each configuration has (omega -1: every sample kept)
    "c2kd": {"ce_student", "ce_teacher", "proxy_teacher", "proxy_student", "cross"},
    "c2kd_noproxy": {"ce_student", "ce_teacher", "cross"},
    "c2kd_bd_nt": {"ce_student", "ce_teacher", "cross"},
    "c2kd_bd_ofs": {"ce_student", "ce_teacher", "cross"},
    "c2kd_bd": {"ce_student", "ce_teacher", "cross"},
    "c2kd_dist_bd": {"ce_student", "ce_teacher", "cross"},
    "c2kd_dist_noproxy": {"ce_student", "ce_teacher", "cross"},
    "c2kd_dist": {"ce_student", "ce_teacher", "proxy_teacher", "proxy_student", "cross"},
    "c2kd_nkd_bd": {"ce_student", "ce_teacher", "cross"},
    "c2kd_nkd_noproxy": {"ce_student", "ce_teacher", "cross"},
    "c2kd_nkd": {"ce_student", "ce_teacher", "proxy_teacher", "proxy_student", "cross"},
}
#: Table 5 row (a), one-way KD from a frozen teacher: C2KD with every module off
ONE_WAY = {"proxy": False, "ofs": False, "nt": False, "bd": False, "teacher_update": "frozen"}


@pytest.mark.parametrize("name", [*sorted(NONZERO), "one_way"])
def test_c2kd_switches_turn_terms_on_and_off_as_table_5(name):
    if name == "one_way":
        m, nonzero = _build("c2kd", {**ONE_WAY, "omega": -1.0}), {"ce_student", "cross"}
    else:
        m, nonzero = _build(name, {"omega": -1.0}), NONZERO[name]
    out = m.step(_batch(), 0)
    terms = ("ce_student", "ce_teacher", "proxy_teacher", "proxy_student", "cross")
    assert {k for k in terms if float(out[k]) != 0.0} == nonzero
    assert ("student_proxy" in m.extra) == m.hp.proxy
    if not m.hp.ofs:
        assert float(out["keep"]) == 1.0


def test_c2kd_crossmodal_term_by_switch():
    """Without proxies the crossmodal term is, switch by switch, a KL written another way."""
    batch, y = _batch(12, seed=4), _batch(12, seed=4)["label"]

    def cross(name, **hp):
        m = _build(name, hp)
        out = m.step(batch, 0)
        s, t, _, _ = _logits(m, batch)
        return out, s.detach(), t.detach()

    out, s, t = cross("c2kd_bd")  # BD: KL both ways over all classes
    torch.testing.assert_close(out["cross"], kd_loss(s, t) + kd_loss(t, s))
    out, s, t = cross("c2kd", **ONE_WAY)  # one way
    torch.testing.assert_close(out["cross"], kd_loss(s, t))
    out, s, t = cross("c2kd_bd_nt")  # NT: DKD's NCKD (target removed) both ways
    torch.testing.assert_close(out["cross"],
                               tckd_nckd(s, t, y)[1].mean() + tckd_nckd(t, s, y)[1].mean())
    out, s, t = cross("c2kd_bd_ofs")  # OFS: the samples with KRC > 0, averaged over them
    kept = kendall_tau(t, s) > 0
    assert 0 < int(kept.sum()) < len(y)
    per = kd_loss(s, t, reduction="none") + kd_loss(t, s, reduction="none")
    torch.testing.assert_close(out["cross"], per[kept].mean())
    torch.testing.assert_close(out["keep"], kept.float().mean())
    out, s, t = cross("c2kd_bd_ofs", average="batch")  # the official code's average
    torch.testing.assert_close(out["cross"], (per * kept).mean())


def test_table_5_row_a_is_the_registry_kd():
    """C2KD with every module off (one-way KL at T = 1 from a frozen teacher) is KD."""
    batch = _batch()
    kd = _build("kd").step(batch, 0)
    one_way = _build("c2kd", ONE_WAY).step(batch, 0)
    torch.testing.assert_close(one_way["total"], kd["total"])
    torch.testing.assert_close(one_way["cross"], kd["kd"])


@pytest.mark.parametrize("name, hparams", [
    ("c2kd", {}), ("c2kd", {"omega": 0.3}), ("c2kd_noproxy", {}), ("c2kd_cosine", {}),
    ("c2kd_noselect", {}), ("c2kd_bd", {"omega": -0.2}),
])
def test_n_krc_below_omega_is_a_direct_count(name, hparams):
    batch = _batch(16, seed=6)
    m = _build(name, hparams)
    out = m.step(batch, 0)
    s, t, sf, tf = _logits(m, batch)
    if m.hp.proxy:
        s, t = m.extra["student_proxy"](sf["pooled"]), m.extra["teacher_proxy"](tf["pooled"])
    tau = kendall_tau(t.detach(), s.detach())
    assert float(out["n_krc_below_omega"]) == float((tau <= m.hp.omega).sum())
    if m.hp.ofs and m.hp.filter == "krc":
        assert float(out["keep"]) == pytest.approx(float((tau > m.hp.omega).float().mean()))


def test_c2kd_bases_of_fig_5_change_only_the_crossmodal_term():
    batch = _batch()
    outs = {b: _build("c2kd", {"base": b, "omega": -1.0}).step(batch, 0)
            for b in ("kl", "dist", "nkd")}
    for k in ("ce_student", "ce_teacher", "proxy_teacher", "proxy_student", "keep"):
        torch.testing.assert_close(outs["dist"][k], outs["kl"][k])
        torch.testing.assert_close(outs["nkd"][k], outs["kl"][k])
    assert len({round(float(o["cross"]), 6) for o in outs.values()}) == 3


def test_c2kd_proxies_read_a_named_feature_map():
    """A model with a 'layer3' map: the proxies read it (pooled), as the official code."""

    class WithMaps(TinyNet):
        def __init__(self, modality):
            super().__init__(4, CLASSES, modality=modality)
            self.feature_shapes = {"layer3": (6, None, None), "pooled": (8,)}
            self.conv = nn.Conv2d(1, 6, 1)

        def forward_features(self, x):
            logits, feats = super().forward_features(x)
            layer3 = self.conv(x[:, None, :, None].expand(-1, 1, 4, 3))
            return logits, {"layer3": layer3, "pooled": feats["pooled"]}

    torch.manual_seed(0)
    m = methods.build("c2kd", student=WithMaps("b"), teacher=WithMaps("a"), classes=CLASSES)
    assert m.proxy_features == ("layer3", "layer3")
    assert m.extra["student_proxy"].adapt[0].in_channels == 6
    m.train()
    out = m.step(_batch(), 0)
    out["total"].backward()
    assert m.student.conv.weight.grad is not None  # the proxy's gradient reaches layer3


# ----------------------------------------------------------------------------- runs=True
R, DIM, HID = 2, 4, 6


def _single_mlp(batched: BatchedMLP, r: int, modality: str) -> MLP:
    """Run r of a BatchedMLP as an ordinary MLP with the same weights."""
    linears = [m for m in batched if not isinstance(m, nn.ReLU)]
    single = MLP(DIM, CLASSES, (HID, HID), modality=modality)
    targets = [single.hidden[0][0], single.hidden[1][0], single.classifier]
    with torch.no_grad():
        for src, dst in zip(linears, targets):
            dst.weight.copy_(src.weight[r].T)
            dst.bias.copy_(src.bias[r])
    return single


def _copy_proxy(batched: BatchedProxyHead, r: int, single: ProxyHead) -> None:
    lin1, bn, _, lin2 = batched
    c = lin1.weight.shape[-1]
    with torch.no_grad():
        single.adapt[0].weight.copy_(lin1.weight[r].T[:, :, None, None])
        single.adapt[1].weight.copy_(bn.bn.weight[r * c:(r + 1) * c])
        single.adapt[1].bias.copy_(bn.bn.bias[r * c:(r + 1) * c])
        single.classifier.weight.copy_(lin2.weight[r].T)
        single.classifier.bias.copy_(lin2.bias[r])


@pytest.mark.parametrize("name", ("nokd", "kd") + LOGIT_METHODS
                         + ("c2kd_noproxy", "c2kd_official", "c2kd_top1", "c2kd_dist_bd",
                            "c2kd_nkd_noproxy"))
def test_runs_give_the_single_run_results(name):
    g = torch.Generator().manual_seed(8)
    n = 10
    xa, xb = torch.randn(R, n, DIM, generator=g), torch.randn(R, n, DIM, generator=g)
    y = torch.randint(0, CLASSES, (R, n), generator=g)
    student = BatchedMLP(DIM, [HID, HID], CLASSES, [10, 20])
    teacher = BatchedMLP(DIM, [HID, HID], CLASSES, [30, 40])
    kw = dict(classes=CLASSES, student_inputs=("b",), teacher_inputs=("a",))
    batched = methods.build(name, student=student, teacher=teacher, runs=True, seeds=[5, 6],
                            **kw)
    batched.train()
    steps = 2 if name == "dlb" else 1  # DLB: the second step distils towards the first
    half = n // 2
    cut = [slice(0, half), slice(0, n)]  # DLB order: h0, then (h0, h1)
    for step in range(steps):
        sl = cut[step] if name == "dlb" else slice(0, n)
        out = batched.step({"a": xa[:, sl], "b": xb[:, sl], "label": y[:, sl]}, 0)
    assert out["total"].shape == (R,)
    for r in range(R):
        single = methods.build(name, student=_single_mlp(student, r, "b"),
                               teacher=_single_mlp(teacher, r, "a"), **kw)
        for key in ("student_proxy", "teacher_proxy"):
            if key in batched.extra:
                _copy_proxy(batched.extra[key], r, single.extra[key])
        if "weak" in batched.extra:
            with torch.no_grad():
                single.extra["weak"].weight.copy_(batched.extra["weak"].weight[r].T)
                single.extra["weak"].bias.copy_(batched.extra["weak"].bias[r])
        single.train()
        for step in range(steps):
            sl = cut[step] if name == "dlb" else slice(0, n)
            ref = single.step({"a": xa[r, sl], "b": xb[r, sl], "label": y[r, sl]}, 0)
        assert set(ref) == set(out)
        for k in ref:
            torch.testing.assert_close(out[k][r], ref[k], msg=f"{name} run {r} {k}")


def test_runs_seed_the_batched_modules():
    def proxy_weight(seeds):
        m = methods.build("c2kd", student=BatchedMLP(DIM, [HID], CLASSES, [0, 1]),
                          teacher=BatchedMLP(DIM, [HID], CLASSES, [2, 3]), classes=CLASSES,
                          runs=True, seeds=seeds, student_inputs=("b",), teacher_inputs=("a",))
        return m.extra["student_proxy"][0].weight, m.extra["teacher_proxy"][0].weight

    a, b = proxy_weight([5, 6]), proxy_weight([5, 6])
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], proxy_weight([7, 8])[0])
    # without seeds they are drawn from torch's global generator: a seeded caller repeats them
    torch.manual_seed(4)
    c = proxy_weight(None)
    torch.manual_seed(4)
    torch.testing.assert_close(proxy_weight(None)[0], c[0])


# ----------------------------------------------------------------------------- engine
def test_fit_runs_c2kd_on_tiny_backbones():
    torch.manual_seed(0)
    student = TinyNet(4, 3, modality="b")
    teacher = TinyNet(4, 3, modality="a")
    m = methods.build("c2kd", student=student, teacher=teacher, classes=3)
    before = [p.detach().clone() for p in teacher.parameters()]
    res = fit(m, make_loader(two_views(48, 0), 16, shuffle=True), make_loader(two_views(24, 1), 24),
              make_loader(two_views(24, 2), 24), optim=OptimConfig(lr=0.05, schedule="poly"),
              epochs=2, device="cpu", seed=0, progress=False)
    h = res.history
    for col in ("total", "cross", "keep", "n_krc_below_omega", "val_accuracy"):
        assert col in h and h[col].notna().all(), col
    assert ((h["n_krc_below_omega"] >= 0) & (h["n_krc_below_omega"] <= 48)).all()
    assert ((h["keep"] >= 0) & (h["keep"] <= 1)).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert set(res.state_dicts["extra"]) >= {"student_proxy.classifier.weight",
                                             "teacher_proxy.classifier.weight"}


def test_ogm_ge_trains_a_fusion_teacher_and_modulates_gradients():
    """OGM-GE: the fused CE is the loss; after backward the dominant modality's conv gradients
    are scaled by k (checked with ge=False against the coefficients computed directly)."""
    import torch.nn.functional as F

    from cmkd import methods, models
    from cmkd.models.fusion import ogm_ge_coefficients

    torch.manual_seed(0)
    model = models.build("fusion_ogm_ge", classes=4, modalities=("audio", "image"),
                         encoders=("avdigits_cnn", "avdigits_cnn"),
                         encoder_options=({}, {}))
    m = methods.build("ogm_ge", {"alpha": 0.5, "ge": False}, student=model, classes=4,
                      student_inputs=("audio", "image"))
    batch = {"audio": torch.randn(6, 1, 32, 32), "image": torch.randn(6, 1, 8, 8),
             "label": torch.tensor([0, 1, 2, 3, 0, 1])}
    m.train()
    out = m.step(batch, 0)
    logits, feats = model.forward_features(batch["audio"], batch["image"])
    torch.testing.assert_close(out["ce"], F.cross_entropy(logits, batch["label"]))
    k = ogm_ge_coefficients(*model.unimodal_logits(feats), batch["label"], alpha=0.5)
    out["total"].backward()
    conv = {mod: [p for p in model.encoders[mod].parameters() if p.dim() >= 3]
            for mod in ("audio", "image")}
    before = {mod: [p.grad.clone() for p in ps] for mod, ps in conv.items()}
    m.after_backward(0)
    for (mod, ps), kk in zip(conv.items(), k):
        for p, g in zip(ps, before[mod]):
            torch.testing.assert_close(p.grad, g * kk)
    assert min(float(k[0]), float(k[1])) < 1.0  # one modality was damped
    m._k = None
    m.after_backward(60)  # outside the modulation window: nothing happens
    with pytest.raises(Exception, match="concatenation late-fusion"):
        methods.build("ogm_ge", {}, student=models.build("avdigits_cnn", modality="audio"),
                      classes=10, student_inputs=("audio",))
