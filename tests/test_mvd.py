import numpy as np
import pytest

from cmkd.data import mvd


@pytest.mark.parametrize("overlap", range(11))
def test_vary_gamma_ground_truth(overlap):
    s = mvd.vary_gamma_spec(overlap)
    assert s.alpha + s.beta + s.gamma == pytest.approx(1.0)
    assert s.gamma == pytest.approx(overlap / (20 - overlap))
    assert s.alpha == pytest.approx(s.beta) == pytest.approx((1 - s.gamma) / 2)
    assert len(s.shared) == overlap
    assert (s.dim_a, s.dim_b, len(s.J1), len(s.J2)) == (25, 50, 10, 10)


def test_paper_gamma_and_alpha_values():
    gammas = [round(mvd.vary_gamma_spec(o).gamma, 2) for o in (0, 2, 4, 6, 8, 10)]
    assert gammas == [0, 0.11, 0.25, 0.43, 0.67, 1.0]
    alphas = [round(mvd.vary_alpha_spec(e).alpha, 2) for e in (0, 10, 20, 30, 40)]
    assert alphas == [0, 0.5, 0.67, 0.75, 0.8]
    for e in (0, 10, 40):
        s = mvd.vary_alpha_spec(e)
        assert s.beta == 0 and s.alpha + s.gamma == pytest.approx(1.0)


@pytest.mark.parametrize("spec", [mvd.vary_gamma_spec(4), mvd.vary_alpha_spec(20),
                                  mvd.MVDSpec(8, 6, 7, (0, 1, 2, 5), (2, 5, 6), (5, 0, 3, 1),
                                              (6, 2, 4))])
def test_planted_channels(spec):
    d = mvd.generate(spec, 4000, np.random.default_rng(1))
    # each modality holds exactly its decisive latent features at the planted positions
    np.testing.assert_array_equal(d.xa[:, list(spec.pos_a)], d.x_star[:, list(spec.J1)])
    np.testing.assert_array_equal(d.xb[:, list(spec.pos_b)], d.x_star[:, list(spec.J2)])
    # modality-general channels carry identical values in both modalities
    ga, gb = spec.channels("a", "general"), spec.channels("b", "general")
    pos_of = {j: p for j, p in zip(spec.J2, spec.pos_b)}
    for j, p in zip(spec.J1, spec.pos_a):
        if j in spec.shared:
            np.testing.assert_array_equal(d.xa[:, p], d.xb[:, pos_of[j]])
    assert len(ga) == len(gb) == len(spec.shared)
    # labels follow Eq. (27)
    np.testing.assert_array_equal(d.y, (d.x_star.astype(np.float64) @ d.delta > 0).astype(int))
    # noise channels are independent of the label; decisive ones are not (on average)
    yc = d.y - d.y.mean()
    corr = lambda x: np.abs(np.corrcoef(x, yc)[0, 1])  # noqa: E731
    noise = [corr(d.xa[:, p]) for p in spec.channels("a", "noise")]
    assert max(noise) < 0.08
    sizes = np.abs(d.delta[list(spec.J1)])
    strongest = spec.pos_a[int(np.argmax(sizes))]
    assert corr(d.xa[:, strongest]) > 0.1
    # channel kinds partition each modality
    kinds = [set(spec.channels("a", k)) for k in ("general", "specific", "noise")]
    assert set().union(*kinds) == set(range(spec.dim_a)) and sum(map(len, kinds)) == spec.dim_a


def test_test_draw_shares_the_hyperplane():
    s = mvd.vary_gamma_spec(10)
    rng = np.random.default_rng(0)
    train = mvd.generate(s, 10, rng)
    test = mvd.generate(s, 10, rng, delta=train.delta)
    np.testing.assert_array_equal(train.delta, test.delta)
    assert not np.array_equal(train.xa, test.xa)


def test_conversions_and_errors():
    assert mvd.gamma_to_overlap(0.43) == 6 and mvd.gamma_to_overlap(1) == 10
    assert mvd.alpha_to_extra(0.67) == 20 and mvd.alpha_to_extra(0) == 0
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        mvd.gamma_to_overlap(1.5)
    with pytest.raises(ValueError, match="not reachable"):
        mvd.gamma_to_overlap(0.3)
    with pytest.raises(ValueError, match="not reachable"):
        mvd.alpha_to_extra(0.83)
    with pytest.raises(ValueError, match="positions must lie"):
        mvd.MVDSpec(4, 2, 2, (0, 1, 2), (0,), (0, 1, 2), (0,))
    with pytest.raises(ValueError, match="delta must have shape"):
        mvd.generate(mvd.vary_gamma_spec(0), 3, np.random.default_rng(0), delta=np.zeros(3))
    with pytest.raises(ValueError, match="kind must be one of"):
        mvd.vary_gamma_spec(0).channels("a", "shared")


def test_loader_extra_is_the_fig3_layout():
    """The ``mvd`` loader's ``extra`` option: x^a and x^b 50-d, x^b's 10 decisive channels are
    x^a's first 10 (the same values), x^a's next ``extra`` channels are decisive too: with
    them a linear fit separates the binary labels better than with x^b's channels alone."""
    from cmkd import data

    d = data.load("mvd", None, "train", extra=30, n_train=3000, classes=2, seed=4)
    xa, xb, y = d.tensors["xa"].numpy(), d.tensors["xb"].numpy(), d.tensors["label"].numpy()
    assert xa.shape == xb.shape == (3000, 50)
    np.testing.assert_array_equal(xa[:, :10], xb[:, :10])
    assert np.abs(xa[:, 10:] - xb[:, 10:]).max() > 0  # the rest is independent noise

    def fit_accuracy(x):  # least squares on +-1 targets, in-sample
        x1 = np.c_[x, np.ones(len(x))]
        w = np.linalg.lstsq(x1, 2.0 * y - 1, rcond=None)[0]
        return float(((x1 @ w > 0) == (y == 1)).mean())

    assert fit_accuracy(xa[:, :40]) > fit_accuracy(xa[:, :10]) + 0.1
    # its own generator stream: not the Fig. 2 draw of the same numbers, and extra moves it
    fig2 = data.load("mvd", None, "train", overlap=10, n_train=50, seed=4)
    other = data.load("mvd", None, "train", extra=20, n_train=50, seed=4)
    assert not np.allclose(data.load("mvd", None, "train", extra=10, n_train=50, seed=4)
                           .tensors["xb"].numpy(), fig2.tensors["xb"].numpy())
    assert not np.allclose(other.tensors["xb"].numpy(), d.tensors["xb"].numpy()[:50])
    empty = data.load("mvd", None, "val", extra=5)
    assert empty.tensors["xa"].shape == (0, 50)
    for bad in (-1, 41, 2.0, True):
        with pytest.raises(ValueError, match="option 'extra'"):
            data.load("mvd", None, "train", extra=bad)
