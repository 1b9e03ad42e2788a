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
@pytest.mark.parametrize("reduction", ["batchmean", "mean"])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_matches_torch_kl_div(logits, reduction, T):
    s, t = logits
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction=reduction) * T * T
    assert kd_loss(s, t, T, reduction).item() == pytest.approx(ref.item(), rel=1e-12)


def test_mean_is_batchmean_over_classes(logits):
    s, t = logits
    assert kd_loss(s, t, reduction="mean") == pytest.approx(kd_loss(s, t).item() / 5)


def test_zero_when_student_equals_teacher(logits):
    s, _ = logits
    assert kd_loss(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd_loss(s, s + 7.0).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_gradient_identity(logits, T):
    s, t = logits
    s = s.clone().requires_grad_(True)
    kd_loss(s, t, T).backward()
    expected = (F.softmax(s / T, 1) - F.softmax(t / T, 1)) / T * T**2 / s.shape[0]
    torch.testing.assert_close(s.grad, expected.detach())


def test_leading_dims_are_kept(logits):
    s, t = logits
    stacked = kd_loss(torch.stack([s, t]), torch.stack([t, s]))
    assert stacked.shape == (2,)
    assert stacked[0].item() == pytest.approx(kd_loss(s, t).item())
    assert kd_loss(s, t, reduction="none").shape == (16,)


def test_errors(logits):
    s, t = logits
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(s, t[:, :4])
    with pytest.raises(ValueError, match="reduction must be one of"):
        kd_loss(s, t, reduction="sum")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(s, t, temperature=0)


def test_class_dimension_can_lead(logits):
    s, t = logits
    runs_s, runs_t = torch.stack([s, t]), torch.stack([t, s])  # (runs, batch, classes)
    lead_s, lead_t = runs_s.permute(2, 0, 1), runs_t.permute(2, 0, 1)  # (classes, runs, batch)
    for red in ("batchmean", "mean", "none"):
        torch.testing.assert_close(kd_loss(lead_s, lead_t, 2.0, red, dim=0),
                                   kd_loss(runs_s, runs_t, 2.0, red))
