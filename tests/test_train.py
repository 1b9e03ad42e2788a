import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cmkd.experiments import mvd_sweeps
from cmkd.params import from_mapping
from cmkd.train import (
    init_linear_batched,
    linear_logits,
    seed_for,
    select_device,
    train_linear_batched,
)


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
    acc = (linear_logits(w, b, x).argmax(-1) == y).float().mean()
    assert acc > 0.97


def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_seed_for_is_stable_and_distinct():
    assert seed_for(0, 1, 2) == seed_for(0, 1, 2)
    assert len({seed_for(0, s, r) for s in range(5) for r in range(5)}) == 25


SMALL = dict(seed=3, n_runs=2, epochs=30, lr=0.1, n_train=50, n_test=80, rho=0.5,
             loss_scale=2.0, temperature=1.0, kl_reduction="batchmean", gammas=[0.0, 1.0],
             alphas=[0.0, 0.8], device="cpu")


def test_two_runs_give_identical_numbers():
    cfg = from_mapping(mvd_sweeps.Config, SMALL)
    a, b = mvd_sweeps.run(cfg), mvd_sweeps.run(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 8 and set(a.sweep) == {"gamma", "alpha"}
    np.testing.assert_allclose(a.gain, a.kd_acc - a.nokd_acc)


def test_seed_changes_the_numbers():
    a = mvd_sweeps.run(from_mapping(mvd_sweeps.Config, SMALL))
    b = mvd_sweeps.run(from_mapping(mvd_sweeps.Config, dict(SMALL, seed=4)))
    assert not a.kd_acc.equals(b.kd_acc)


def test_a_run_does_not_depend_on_what_it_is_batched_with():
    """Data, initialisation and training of a run are keyed by (seed, setting, run) alone."""
    alone = mvd_sweeps.run(from_mapping(mvd_sweeps.Config,
                                        dict(SMALL, gammas=[0.43], alphas=[0.5], n_runs=1)))
    many = mvd_sweeps.run(from_mapping(mvd_sweeps.Config,
                                       dict(SMALL, gammas=[0.0, 0.43], alphas=[0.5, 0.8])))
    keys = ["sweep", "gamma", "alpha", "run"]
    merged = alone.merge(many, on=keys, suffixes=("", "_many"))
    assert len(merged) == 2
    for m in mvd_sweeps.METRICS:
        np.testing.assert_allclose(merged[m], merged[f"{m}_many"])


def test_claims_detect_a_planted_trend():
    rows = [{"sweep": "gamma", "gamma": gm, "alpha": (1 - gm) / 2, "beta": (1 - gm) / 2, "run": r,
             "teacher_acc": 70.0 + r, "nokd_acc": 60.0, "kd_acc": 60.0 + 4 * gm + 0.1 * r,
             "gain": 4 * gm + 0.1 * r} for gm in (0, 0.5, 1) for r in range(4)]
    rows += [{"sweep": "alpha", "gamma": 1 - al, "alpha": al, "beta": 0.0, "run": r,
              "teacher_acc": 60.0 + 20 * al + r, "nokd_acc": 60.0, "kd_acc": 63.0 - 2 * al + r,
              "gain": 3.0 - 2 * al + r} for al in (0, 0.5, 0.8) for r in range(4)]
    c = mvd_sweeps.claims(pd.DataFrame(rows)).set_index("claim").held
    assert c["KD's gain over no-KD rises with gamma"]
    assert c["teacher accuracy rises with alpha"]
    assert c["KD's gain over no-KD does not rise with alpha"]
    flat = pd.DataFrame(rows).assign(gain=lambda d: np.where(d.sweep == "gamma", -d.gamma, d.gain))
    held = mvd_sweeps.claims(flat).set_index("claim").held
    assert not held["KD's gain over no-KD rises with gamma"]
