import pytest
import torch
import torch.nn.functional as F

from cmkd.distill import kd_loss


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g, dtype=torch.float64), \
        torch.randn(16, 5, generator=g, dtype=torch.float64)


@pytest.mark.filterwarnings("ignore:reduction. .mean.")
@pytest.mark.parametrize("ours, torchs", [("mean", "batchmean"), ("elementwise_mean", "mean"),
                                          ("sum", "sum")])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_matches_torch_kl_div(logits, ours, torchs, T):
    s, t = logits
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction=torchs) * T * T
    assert kd_loss(s, t, temperature=T, reduction=ours).item() == pytest.approx(ref.item(),
                                                                                 rel=1e-12)


def test_elementwise_mean_is_mean_over_classes(logits):
    s, t = logits
    assert kd_loss(s, t, reduction="elementwise_mean") == pytest.approx(kd_loss(s, t).item() / 5)


def test_zero_when_student_equals_teacher(logits):
    s, _ = logits
    assert kd_loss(s, s.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(s, s + 7.0).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_gradient_identity(logits, T):
    s, t = logits
    s = s.clone().requires_grad_(True)
    kd_loss(s, t, temperature=T).backward()
    expected = (F.softmax(s / T, 1) - F.softmax(t / T, 1)) / T * T**2 / s.shape[0]
    torch.testing.assert_close(s.grad, expected.detach())


def test_teacher_detached_unless_asked(logits):
    s, t = logits
    t = t.clone().requires_grad_(True)
    assert not kd_loss(s, t).requires_grad  # only the (constant) student: no graph
    (g,) = torch.autograd.grad(kd_loss(s, t, detach_teacher=False), t)
    assert g.abs().sum() > 0


def test_runs_are_declared(logits):
    s, t = logits
    stacked = kd_loss(torch.stack([s, t]), torch.stack([t, s]), runs=True)
    assert stacked.shape == (2,)
    assert stacked[0].item() == pytest.approx(kd_loss(s, t).item())
    assert kd_loss(s, t, reduction="none").shape == (16,)
    assert kd_loss(torch.stack([s, t]), torch.stack([t, s]), runs=True,
                   reduction="none").shape == (2, 16)


def test_errors(logits):
    s, t = logits
    with pytest.raises(ValueError, match=r"teacher logits must have the student's shape "
                                         r"\(16, 5\) \(batch, classes\), got \(16, 4\)"):
        kd_loss(s, t[:, :4])
    with pytest.raises(ValueError, match=r"student logits must have shape \(batch, classes\), "
                                         r"got \(2, 16, 5\); pass runs=True"):
        kd_loss(torch.stack([s, t]), torch.stack([t, s]))
    with pytest.raises(ValueError, match=r"student logits must have shape "
                                         r"\(runs, batch, classes\), got \(16, 5\)"):
        kd_loss(s, t, runs=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        kd_loss(s, t, reduction="batchmean")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(s, t, temperature=0)
    with pytest.raises(ValueError, match="class_dim must be -1 or 0"):
        kd_loss(s, t, class_dim=1)


def test_class_dimension_can_lead(logits):
    s, t = logits
    runs_s, runs_t = torch.stack([s, t]), torch.stack([t, s])  # (runs, batch, classes)
    lead_s, lead_t = runs_s.permute(2, 0, 1), runs_t.permute(2, 0, 1)  # (classes, runs, batch)
    for red in ("mean", "elementwise_mean", "none", "sum"):
        torch.testing.assert_close(
            kd_loss(lead_s, lead_t, temperature=2.0, reduction=red, runs=True, class_dim=0),
            kd_loss(runs_s, runs_t, temperature=2.0, reduction=red, runs=True))
