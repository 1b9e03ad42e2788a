"""cmkd.verdicts: the held / NOT held / undecided rule, on planted data whose answer is known,
and against independent computations of its intervals."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cmkd import verdicts as vd
from cmkd.verdicts import HELD, NOT_HELD, UNDECIDED

N = 300
SEEDS = (0, 1, 2)


def _runs(mean, spread=(-0.4, 0.1, 0.3)):
    return pd.Series([mean + s for s in spread], index=SEEDS)


def test_a_true_effect_is_held_a_null_undecided_a_negative_not_held():
    base = _runs(70.0)
    assert vd.verdict_difference(_runs(80.0, (0.2, -0.1, 0.0)), base, n_test=N).verdict == HELD
    assert vd.verdict_difference(_runs(70.0, (0.3, -0.3, 0.1)), base, n_test=N).verdict \
        == UNDECIDED
    assert vd.verdict_difference(_runs(60.0, (0.2, -0.1, 0.0)), base, n_test=N).verdict \
        == NOT_HELD
    # the mirror claim
    less = vd.verdict_difference(_runs(60.0, (0.2, -0.1, 0.0)), base, n_test=N,
                                 alternative="less")
    assert less.verdict == HELD


def test_the_paired_interval_by_hand():
    a, b = _runs(80.0, (0.5, -1.0, 0.2)), _runs(70.0)
    v = vd.verdict_difference(a, b, n_test=N)
    d = (a - b).to_numpy()
    runs = d.var(ddof=1) / 3
    pa, pb = a.mean() / 100, b.mean() / 100
    test = (pa * (1 - pa) + pb * (1 - pb)) / N * 1e4
    dof = 2 * ((runs + test) / runs) ** 2  # Welch-Satterthwaite, the test term known
    half = stats.t.ppf(0.975, dof) * math.sqrt(runs + test)
    assert v.estimate == pytest.approx(d.mean())
    assert (v.low, v.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert v.text == f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]"
    assert v.interval == v.text + " points"


def test_without_a_test_term_it_is_the_t_interval_of_the_differences():
    a, b = _runs(72.0, (0.5, -1.0, 0.2)), _runs(70.0)
    v = vd.verdict_difference(a, b)
    low, high = stats.t.interval(0.95, 2, loc=(a - b).mean(), scale=stats.sem(a - b))
    assert (v.low, v.high) == pytest.approx((low, high))


def test_a_smaller_test_set_widens_the_interval():
    a, b = _runs(75.0), _runs(70.0, (0.2, 0.0, -0.1))
    widths = [vd.verdict_difference(a, b, n_test=n) for n in (3000, 300, 30)]
    assert widths[0].high - widths[0].low < widths[1].high - widths[1].low \
        < widths[2].high - widths[2].low
    # a +5 point effect: held on 3000 items, not decided on 300
    assert [w.verdict for w in widths] == [HELD, UNDECIDED, UNDECIDED]


def test_per_item_correctness_narrows_the_unpaired_bound():
    rng = np.random.default_rng(0)
    b = (rng.random((3, N)) < 0.7).astype(float)
    a = b.copy()
    fixed = rng.random((3, N)) < 0.08  # a fixes 8% of the items b gets wrong (and nothing else)
    a[fixed] = 1.0
    acc_a, acc_b = pd.Series(100 * a.mean(1)), pd.Series(100 * b.mean(1))
    bound = vd.verdict_difference(acc_a, acc_b, n_test=N)
    paired = vd.verdict_difference(acc_a, acc_b, correct_a=a, correct_b=b)
    assert paired.estimate == bound.estimate
    assert paired.high - paired.low < (bound.high - bound.low) / 2
    assert (bound.verdict, paired.verdict) == (UNDECIDED, HELD)
    # the test term is var_j(D_j) / N of the per-item difference of mean correctness
    d = a.mean(0) - b.mean(0)
    runs = (acc_a - acc_b).var(ddof=1) / 3
    total = runs + d.var(ddof=1) / N * 1e4
    dof = 2 * (total / runs) ** 2
    assert paired.high - paired.estimate == pytest.approx(stats.t.ppf(0.975, dof)
                                                           * math.sqrt(total))
    with pytest.raises(ValueError, match="different test sets"):
        vd.verdict_difference(acc_a, acc_b, correct_a=a, correct_b=b[:, :10])


def test_one_run_uses_the_normal_quantile_and_the_test_term_alone():
    v = vd.verdict_difference([80.0], [70.0], n_test=N)
    half = 1.959964 * math.sqrt((0.8 * 0.2 + 0.7 * 0.3) / N) * 100
    assert (v.low, v.high) == pytest.approx((10 - half, 10 + half), rel=1e-5)
    nothing = vd.verdict_difference([80.0], [70.0])
    assert nothing.verdict == UNDECIDED and nothing.text == "+10.00 (no interval)"


def test_pairing_is_by_seed_and_unpaired_otherwise():
    a = pd.Series([71.0, 75.0, 79.0], index=[0, 1, 2])
    b = pd.Series([78.0, 74.0, 70.0], index=[2, 1, 0])  # the same seeds in another order
    paired = vd.verdict_difference(a, b)
    assert (paired.low, paired.high) == pytest.approx((1.0, 1.0))  # d = +1 on every seed
    assert paired.verdict == HELD
    other_seeds = vd.verdict_difference(a, b.set_axis([5, 1, 0]))
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (other_seeds.low, other_seeds.high) == pytest.approx((welch.low, welch.high))
    assert vd.verdict_difference(a, b, paired=False).verdict == UNDECIDED


def test_equivalence_and_one_sided_margins():
    v = lambda lo, hi, alt, m=1.0: vd.judge(lo, hi, alt, margin=m)  # noqa: E731
    assert v(-0.5, 0.5, "equal") == HELD
    assert v(-0.5, 1.5, "equal") == UNDECIDED
    assert v(0.2, 3.0, "equal") == NOT_HELD
    assert v(0.2, 0.6, "equal") == HELD  # significant but inside the margin: the margin decides
    assert v(-0.9, 5.0, "not_less") == HELD
    assert v(-3.0, 5.0, "not_less") == UNDECIDED
    assert v(-3.0, -0.1, "not_less") == NOT_HELD
    assert v(-5.0, 0.9, "not_greater") == HELD
    assert v(0.1, 3.0, "not_greater") == NOT_HELD
    assert vd.judge(-12.0, -10.5, "less", threshold=-10) == HELD
    assert vd.judge(-12.0, -9.5, "less", threshold=-10) == UNDECIDED
    with pytest.raises(ValueError, match="needs a margin"):
        vd.judge(0.0, 1.0, "equal")
    with pytest.raises(ValueError, match="alternative must be one of"):
        vd.judge(0.0, 1.0, "bigger")


def test_slope_verdicts():
    rng = np.random.default_rng(1)
    x = np.repeat([0.0, 0.25, 0.5, 0.75, 1.0], 6)
    noise = rng.normal(size=x.size)
    noise -= np.polyval(np.polyfit(x, noise, 1), x)  # no slope at all
    rises = vd.verdict_slope(x, 8 * x + noise, unit="points per unit gamma")
    res = stats.linregress(x, 8 * x + noise)
    half = stats.t.ppf(0.975, x.size - 2) * res.stderr
    assert (rises.low, rises.high) == pytest.approx((res.slope - half, res.slope + half))
    assert rises.verdict == HELD
    assert rises.interval.endswith(" points per unit gamma")
    assert vd.verdict_slope(x, noise).verdict == UNDECIDED
    assert vd.verdict_slope(x, -8 * x + noise).verdict == NOT_HELD
    assert vd.verdict_slope(x, noise, alternative="equal", margin=3.0).verdict == HELD
    assert vd.verdict_slope(x, 8 * x + noise, alternative="equal", margin=3.0).verdict \
        == NOT_HELD
    # fewer runs, wider interval: the same flat data no longer shows "no trend"
    few = vd.verdict_slope(x[::6][:3], noise[:3], alternative="equal", margin=3.0)
    assert few.verdict == UNDECIDED
    assert vd.verdict_slope([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).verdict == UNDECIDED


def test_bootstrap_is_deterministic_and_finds_a_planted_difference():
    rng = np.random.default_rng(2)
    flat = [np.c_[70 + rng.normal(size=10), 60 + 5 * g + rng.normal(size=10)]
            for g in range(4)]

    def spread_difference(means):
        spread = means.max(1) - means.min(1)
        return spread[:, 1] - spread[:, 0]

    one = vd.verdict_bootstrap(flat, spread_difference)
    assert one == vd.verdict_bootstrap(flat, spread_difference)
    assert one.verdict == HELD and one.low < one.estimate < one.high
    same = [np.c_[70 + rng.normal(size=10), 70 + rng.normal(size=10)] for _ in range(4)]
    assert vd.verdict_bootstrap(same, spread_difference).verdict == UNDECIDED


def _v(verdict, low=0.0, label=""):
    return vd.Verdict(0.0, low, low + 1, verdict, label=label)


def test_combine_either_and_exact():
    held, no, und = _v(HELD, 1.0, "a"), _v(NOT_HELD, -5.0, "b"), _v(UNDECIDED, -0.5, "c")
    assert vd.combine([held, held]).verdict == HELD
    assert vd.combine([held, und]).verdict == UNDECIDED
    assert vd.combine([held, und, no]).verdict == NOT_HELD
    assert vd.combine([held, und, no]).deciding is no
    assert vd.combine([held, und]).deciding is und
    assert vd.either([no, und]).verdict == UNDECIDED
    assert vd.either([no, held]).verdict == HELD
    assert vd.either([no, no]).verdict == NOT_HELD
    both = vd.combine([held, no])
    assert both.evidence == "a: +0.00 [+1.00, +2.00]; b: +0.00 [-5.00, -4.00]"
    assert both.interval == "b: +0.00 [-5.00, -4.00] points"
    nested = vd.combine([vd.either([no, held]), und])
    assert nested.verdict == UNDECIDED and [p.label for p in vd.leaves(nested)] == list("bac")
    assert vd.exact(True).verdict == HELD and vd.exact(False).interval == "exact"
    with pytest.raises(ValueError):
        vd.combine([])


def test_runs_short_of_their_plateau_leave_a_verdict_undecided():
    a, b = _runs(70.0), _runs(60.0)
    v = vd.verdict_difference(a, b, n_test=N)
    assert v.verdict == HELD
    assert vd.unless_unconverged(v, []) is v
    gated = vd.unless_unconverged(v, ["a, seed 0"])
    assert gated.verdict == UNDECIDED and (gated.low, gated.high) == (v.low, v.high)
    no = vd.verdict_difference(b, a, n_test=N)
    assert no.verdict == NOT_HELD
    assert vd.unless_unconverged(no, ["b, seed 1"]).verdict == UNDECIDED


def test_rank_at_most_two():
    better, worse, unclear = _v(NOT_HELD, -5.0), _v(HELD, 2.0), _v(UNDECIDED, -1.0)
    assert vd.rank_at_most([worse, worse, unclear], 2).verdict == HELD
    assert vd.rank_at_most([worse, better, worse], 2).verdict == HELD   # second, surely
    assert vd.rank_at_most([worse, unclear, unclear], 2).verdict == UNDECIDED
    assert vd.rank_at_most([better, better, worse], 2).verdict == NOT_HELD
    assert vd.rank_at_most([better, unclear, worse], 2).verdict == UNDECIDED
    assert vd.rank_at_most([worse, worse], 1).verdict == HELD
    assert vd.rank_at_most([better], 1).verdict == NOT_HELD
    assert vd.rank_at_most([better], 2).verdict == HELD  # two methods: second at worst


def test_claim_rows():
    row = vd.claim_row("A", "c", "e", vd.verdict_difference([80.0], [70.0], n_test=N))
    assert list(row) == vd.CLAIM_COLUMNS and row["verdict"] == HELD
    assert row["interval"].endswith(" points")
    assert list(vd.claims_frame([]).columns) == vd.CLAIM_COLUMNS
