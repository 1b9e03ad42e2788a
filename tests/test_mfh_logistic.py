"""cmkd.mfh.logistic: the hand-written batched logistic regressions against nn.Linear trained
with torch.optim.SGD and autograd, run by run; cmkd.models.batched's initialisation."""

import pytest
import torch
import torch.nn.functional as F

from cmkd.mfh.logistic import accuracy_batched, train_linear_batched
from cmkd.models.batched import init_linear_batched, linear_logits


def _reference(x, y, w0, b0, epochs, lr, teacher=None, rho=0.5, scale=1.0, T=1.0, red="batchmean"):
    """One nn.Linear trained with torch.optim.SGD and autograd: the independent reference."""
    model = torch.nn.Linear(x.shape[1], w0.shape[1]).double()
    with torch.no_grad():
        model.weight.copy_(w0.T)
        model.bias.copy_(b0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        out = model(x)
        loss = F.cross_entropy(out, y)
        if teacher is not None:
            kd = F.kl_div(F.log_softmax(out / T, 1), F.softmax(teacher / T, 1), reduction=red)
            loss = scale * (rho * loss + (1 - rho) * kd * T * T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.weight.detach().T, model.bias.detach()


@pytest.mark.filterwarnings("ignore:reduction. .mean.")
@pytest.mark.parametrize("kd", [None, dict(rho=0.3, scale=2.0, T=1.0, red="batchmean"),
                                dict(rho=0.5, scale=1.0, T=3.0, red="mean")])
def test_batched_closed_form_matches_autograd_per_run(kd):
    g = torch.Generator().manual_seed(0)
    runs, n, classes = 3, 40, 3
    dims = [5, 7, 4]  # different widths: zero-padded to 7 in the batch
    xs = [torch.randn(n, d, generator=g, dtype=torch.float64) for d in dims]
    y = torch.randint(0, classes, (runs, n), generator=g)
    teacher = torch.randn(runs, n, classes, generator=g, dtype=torch.float64) if kd else None
    w0, b0 = init_linear_batched(dims, 7, classes, [11, 12, 13])
    w0, b0 = w0.double(), b0.double()
    x = torch.zeros(runs, n, 7, dtype=torch.float64)
    for r, xr in enumerate(xs):
        x[r, :, : dims[r]] = xr
    opts = {} if kd is None else dict(teacher_logits=teacher, rho=kd["rho"],
                                      loss_scale=kd["scale"], temperature=kd["T"],
                                      kl_reduction=kd["red"])
    w, b = train_linear_batched(x, y, w0, b0, epochs=25, lr=0.3, **opts)
    for r, d in enumerate(dims):
        ref_kd = {} if kd is None else dict(teacher=teacher[r], rho=kd["rho"], scale=kd["scale"],
                                            T=kd["T"], red=kd["red"])
        wr, br = _reference(xs[r], y[r], w0[r, :d], b0[r], 25, 0.3, **ref_kd)
        torch.testing.assert_close(w[r, :d], wr, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(b[r], br, rtol=1e-9, atol=1e-10)
        assert torch.all(w[r, d:] == 0)  # padded channels never move


def test_init_matches_nn_linear_bounds():
    w, b = init_linear_batched([4, 100], 100, 2, [0, 1])
    assert w[0, :4].abs().max() <= 0.5 and torch.all(w[0, 4:] == 0)
    assert w[1].abs().max() <= 0.1 and w[1].abs().max() > 0.09
    w2, _ = init_linear_batched([4, 100], 100, 2, [0, 1])
    assert torch.equal(w, w2)


def test_training_learns_a_separable_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 200, 3, generator=g)
    y = (x[..., 0] > 0).long()
    w, b = train_linear_batched(x, y, *init_linear_batched([3, 3], 3, 2, [0, 1]), epochs=300,
                                lr=0.5)
    acc = accuracy_batched(linear_logits(w, b, x), y)
    assert acc.shape == (2,)
    torch.testing.assert_close(acc, (linear_logits(w, b, x).argmax(-1) == y).float().mean(-1))
    assert acc.min() > 0.97


def test_shape_and_option_errors():
    x, y = torch.zeros(2, 5, 3), torch.zeros(2, 5, dtype=torch.long)
    w, b = init_linear_batched([3, 3], 3, 2, [0, 1])
    with pytest.raises(ValueError, match=r"expected x \(R, n, D\) and y \(R, n\)"):
        train_linear_batched(x[0], y, w, b, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match=r"expected weight \(R, D, C\)"):
        train_linear_batched(x, y, w[:1], b, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match=r"teacher_logits must have shape"):
        train_linear_batched(x, y, w, b, epochs=1, lr=0.1, teacher_logits=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"rho must lie in \[0, 1\]"):
        train_linear_batched(x, y, w, b, epochs=1, lr=0.1, teacher_logits=torch.zeros(2, 5, 2),
                             rho=1.5)
    with pytest.raises(ValueError, match="kl_reduction must be"):
        train_linear_batched(x, y, w, b, epochs=1, lr=0.1, teacher_logits=torch.zeros(2, 5, 2),
                             kl_reduction="sum")
