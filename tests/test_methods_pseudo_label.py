"""cmkd.methods 'pseudo_label' (MFH Appendix B.3's modality-specific teacher with hard
pseudo-labels): the loss against its closed form, and a planted case where hard and soft
pseudo-labels (``kd`` with ``ce_weight`` 0) lead a free student to different places."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cmkd import methods
from cmkd.params import ParamError
from cmkd.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


class Fixed(nn.Module):
    """Logits that do not depend on the input: a learnable (``train``) or fixed row."""

    def __init__(self, logits, train: bool = False):
        super().__init__()
        self.modalities, self.classes = ("x",), len(logits)
        row = torch.tensor(logits, dtype=torch.float32)
        self.row = nn.Parameter(row) if train else nn.Buffer(row)

    def forward(self, x):
        return self.row.expand(x.shape[0], -1)


def _batch(n=4, labels=None):
    label = (torch.zeros(n, 2) if labels is None else labels)
    return {"x": torch.zeros(n, 1), "label": label}


def test_hard_pseudo_labels_loss_is_the_closed_form():
    # multi-label: teacher sigmoids 0.6 and 0.3 -> hard labels 1 and 0 (the true labels, all
    # ones here, enter no loss)
    t = [math.log(0.6 / 0.4), math.log(0.3 / 0.7)]
    m = methods.build("pseudo_label", student=Fixed([0.5, -1.0], train=True),
                      teacher=Fixed(t), classes=2)
    out = m.step(_batch(labels=torch.ones(4, 2)), 0)
    sig = [1 / (1 + math.exp(-z)) for z in (0.5, -1.0)]
    expected = -(math.log(sig[0]) + math.log(1 - sig[1])) / 2
    assert float(out["total"].detach()) == pytest.approx(expected, rel=1e-6)
    # classes: the cross entropy to the teacher's argmax (class 2), not to the true label 0
    m = methods.build("pseudo_label", student=Fixed([1.0, 0.0, -1.0], train=True),
                      teacher=Fixed([0.0, 0.1, 0.3]), classes=3)
    out = m.step({"x": torch.zeros(3, 1), "label": torch.zeros(3, dtype=torch.long)}, 0)
    logz = math.log(sum(math.exp(z) for z in (1.0, 0.0, -1.0)))
    assert float(out["total"].detach()) == pytest.approx(logz + 1.0, rel=1e-6)
    with pytest.raises(ParamError, match="threshold"):
        methods.build("pseudo_label", {"threshold": 1.0}, student=Fixed([0.0, 0.0], True),
                      teacher=Fixed([0.0, 0.0]), classes=2)


@pytest.mark.parametrize("form", ["hard", "soft"])
def test_hard_and_soft_pseudo_labels_lead_a_free_student_apart(form):
    """A student with free logits learns the teacher's sigmoids 0.6 and 0.3 (soft: binary KD,
    its minimum at the teacher's probabilities) or their thresholds 1 and 0 (hard: its sigmoids
    go towards 1 and 0)."""
    t = [math.log(0.6 / 0.4), math.log(0.3 / 0.7)]
    student = Fixed([0.0, 0.0], train=True)
    name, hp = (("pseudo_label", {}) if form == "hard"
                else ("kd", {"ce_weight": 0.0, "kd_weight": 1.0}))
    m = methods.build(name, hp, student=student, teacher=Fixed(t), classes=2)
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        m.step(_batch(), 0)["total"].backward()
        opt.step()
    p = torch.sigmoid(student.row.detach())
    if form == "soft":
        assert torch.allclose(p, torch.tensor([0.6, 0.3]), atol=0.01)
    else:
        assert p[0] > 0.95 and p[1] < 0.05
