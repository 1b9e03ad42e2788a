"""Verdicts on the papers' claims: *held*, *NOT held* or *undecided*, from a 95% interval.

Every notebook's ``claims(df)`` scores its claims with this one rule, and REPORT.md shows the
interval behind each verdict (:mod:`cmkd.reporting`).

The rule
--------
A claim is a statement about an *effect*: a difference of accuracies, a slope, a margin.  From
the runs we build a 95% confidence interval for the effect, and the verdict depends only on
where that interval lies:

========================  =========================================  ===========================
claim (``alternative``)   held when the interval ...                 NOT held when it ...
========================  =========================================  ===========================
``greater`` (effect > t)  lies above t (low > t)                     lies below t (high < t)
``less`` (effect < t)     lies below t (high < t)                    lies above t (low > t)
``equal`` (no effect)     lies inside (t - margin, t + margin)       excludes t (either side)
``not_less`` (>= t)       lies above t - margin (low > t - margin)   lies below t (high < t)
``not_greater`` (<= t)    lies below t + margin (high < t + margin)  lies above t (low > t)
========================  =========================================  ===========================

and *undecided* otherwise.  ``t`` is the claim's threshold (0 unless the claim names one, e.g.
"loses more than 10 points": ``less`` than -10).  Claims that something does *not* happen ("no
trend", "does not rise", "at least as good as", "no better than") need an equivalence margin,
the size of effect the claim treats as nothing; the claim states it, and its evidence says so.
Such a claim is tested first for being held: an effect that is significant but smaller than the
margin (say a slope of +0.3 [+0.1, +0.5] for "does not rise", margin 2) is held, because the
margin says what size counts.  The interval is two-sided 95%, so a one-sided verdict errs
towards "held" (or "NOT held") with probability at most 2.5% when the truth is at the boundary.
No correction is made for the number of claims or parts.

**Accuracy differences** (:func:`verdict_difference`): a and b are one value per seed or run
(percent).  Paired by seed when both have the same seeds (pandas Series indexed by seed, or
arrays of equal length with ``paired=True``): d_i = a_i - b_i, estimate mean(d), run variance
var(d) / n with n - 1 degrees of freedom.  Unpaired otherwise: mean(a) - mean(b), Welch's variance
and degrees of freedom (with one run on one side, the other side's variance stands for both).
When every run is scored on *the same* test set of N items (``n_test``: notebook 06's datasets),
the spread over seeds misses the test set's own sampling error, so a test term is added:

- with per-item correctness (``correct_a``, ``correct_b``: 0/1 arrays, runs x N, or N), the
  paired variance of the per-item difference of the mean correctness, var_j(D_j) / N;
- otherwise the conservative unpaired binomial bound (p_a (1 - p_a) + p_b (1 - p_b)) / N, with
  p the mean accuracies as fractions (it ignores the positive correlation of two methods'
  errors on the same items, so it is wider than the paired one).

interval = estimate +/- q * sqrt(var_runs + v_test), q the 0.975 quantile of Student's t with
Welch-Satterthwaite degrees of freedom in which the test term counts as known (n - 1 without a
test term, the normal quantile when the test term dominates); with a single run, the normal
quantile and the test term alone.  When each run draws its *own* test set (the MVD notebooks 01,
02 and 08), leave ``n_test`` None: the spread over runs already holds the test-sampling error,
and adding it again would count it twice.  One run and no test term: no interval (undecided).

**Slopes** (:func:`verdict_slope`): least squares of y on x (one point per run, so the residuals
hold both the run-to-run and the test-sampling spread), interval slope +/- t(0.975, n - 2) *
stderr (scipy's ``linregress``).

**Other statistics** (:func:`verdict_bootstrap`, e.g. the range of a curve's means): a seeded
percentile bootstrap that resamples runs within each setting (2000 resamples, seed 0:
deterministic and fast).  With few runs per setting (under about 10) its interval is too
narrow: it cannot see beyond the spread of the runs it has.

**Exact checks** (:func:`exact`): a theorem's inequality checked on every draw is not a noisy
measurement; its verdict is held or NOT held, and its interval reads "exact".

**Compound claims** ("in every column", "each ... helps"): each part is scored, then
:func:`combine` gives held if every part is held, NOT held if any part is NOT held, undecided
otherwise; :func:`either` (one of two variants) the mirror: held if any part is held, NOT held if
all are.  **Ranks** (:func:`rank_at_most`, "best or second"): from the differences between the
method and each competitor (``greater``), rank <= k is held when at most k - 1 competitors are not
significantly worse (every other one is, so at most k - 1 can be ahead), NOT held when at least
k competitors are significantly better, undecided otherwise.  A compound's interval is that of
its *deciding* part (:attr:`Compound.deciding`); its evidence lists every part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

HELD, NOT_HELD, UNDECIDED = "held", "NOT held", "undecided"
VERDICTS = (HELD, NOT_HELD, UNDECIDED)
ALTERNATIVES = ("greater", "less", "equal", "not_less", "not_greater")
LEVEL = 0.95
#: the columns of every notebook's claims table
CLAIM_COLUMNS = ["artefact", "claim", "evidence", "interval", "verdict"]


# ----------------------------------------------------------------------------- one effect
@dataclass(frozen=True)
class Verdict:
    """One effect: its estimate, 95% interval [low, high] and verdict.

    ``label`` names the part (e.g. 'avdigits Visual, C2KD - KD'), ``unit`` the effect's unit
    ('points', 'points per unit gamma'), ``fmt`` how numbers print; ``note`` replaces the
    interval for an exact check."""

    estimate: float
    low: float
    high: float
    verdict: str
    alternative: str = "greater"
    threshold: float = 0.0
    margin: float | None = None
    label: str = ""
    unit: str = "points"
    fmt: str = "+.2f"
    note: str = ""

    @property
    def text(self) -> str:
        """'+1.23 [-1.80, +4.26]' (or the note of an exact check)."""
        if self.note:
            return self.note
        est = "nan" if math.isnan(self.estimate) else format(self.estimate, self.fmt)
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{est} (no interval)"
        return f"{est} [{format(self.low, self.fmt)}, {format(self.high, self.fmt)}]"

    @property
    def interval(self) -> str:
        """The text with its unit, as a claims table's ``interval`` column shows it."""
        return self.text if self.note or not self.unit else f"{self.text} {self.unit}"

    @property
    def part(self) -> str:
        """'label: text', as a compound claim's evidence lists its parts."""
        return f"{self.label}: {self.text}" if self.label else self.text

    @property
    def slack(self) -> float:
        """How far the interval clears the boundary of 'held' (positive: held)."""
        if self.note:
            return math.inf if self.verdict == HELD else -math.inf
        lo, hi, t, m = self.low, self.high, self.threshold, self.margin or 0.0
        out = {"greater": lo - t, "less": t - hi, "equal": min(t + m - hi, lo - t + m),
               "not_less": lo - t + m, "not_greater": t + m - hi}[self.alternative]
        return -math.inf if math.isnan(out) else out

    @property
    def deciding(self) -> Verdict:
        return self


def judge(low: float, high: float, alternative: str = "greater", threshold: float = 0.0,
          margin: float | None = None) -> str:
    """The verdict of an interval [low, high] on a claim (see the module's table)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    needs_margin = alternative in ("equal", "not_less", "not_greater")
    if needs_margin and (margin is None or margin < 0):
        raise ValueError(f"a {alternative!r} claim needs a margin >= 0, got {margin!r}")
    if math.isnan(low) or math.isnan(high):
        return UNDECIDED
    t, m = threshold, margin
    if alternative == "greater":
        held, contradicted = low > t, high < t
    elif alternative == "less":
        held, contradicted = high < t, low > t
    elif alternative == "equal":
        held, contradicted = t - m < low and high < t + m, low > t or high < t
    elif alternative == "not_less":
        held, contradicted = low > t - m, high < t
    else:
        held, contradicted = high < t + m, low > t
    return HELD if held else NOT_HELD if contradicted else UNDECIDED


def _verdict(estimate, half, *, alternative, threshold, margin, **kw) -> Verdict:
    low, high = estimate - half, estimate + half
    return Verdict(float(estimate), float(low), float(high),
                   judge(low, high, alternative, threshold, margin), alternative, threshold,
                   margin, **kw)


def _values(x) -> pd.Series:
    s = x if isinstance(x, pd.Series) else pd.Series(np.asarray(x, dtype=float).ravel())
    return s.astype(float).dropna()


def _test_variance(mean_a: float, mean_b: float, n_test: int | None, correct_a, correct_b
                   ) -> float:
    """Test-sampling variance (points^2) of the difference of two mean accuracies scored on one
    test set: paired from per-item correctness when given, else the binomial bound."""
    if correct_a is not None and correct_b is not None:
        ca = np.atleast_2d(np.asarray(correct_a, dtype=float)).mean(0)
        cb = np.atleast_2d(np.asarray(correct_b, dtype=float)).mean(0)
        if ca.shape != cb.shape:
            raise ValueError(f"per-item correctness of a and b cover different test sets "
                             f"({ca.size} and {cb.size} items)")
        if ca.size < 2:
            raise ValueError("per-item correctness needs at least 2 test items")
        return float(np.var(ca - cb, ddof=1) / ca.size * 100**2)
    if n_test is None:
        return 0.0
    if n_test < 1:
        raise ValueError(f"n_test must be >= 1, got {n_test}")
    pa, pb = np.clip([mean_a / 100, mean_b / 100], 0, 1)
    return float((pa * (1 - pa) + pb * (1 - pb)) / n_test * 100**2)


def verdict_difference(a, b, *, alternative: str = "greater", threshold: float = 0.0,
                       margin: float | None = None, n_test: int | None = None,
                       paired: bool = True, correct_a=None, correct_b=None, label: str = "",
                       unit: str = "points", fmt: str = "+.2f") -> Verdict:
    """The verdict on mean(a) - mean(b) (accuracies in percent, one per seed or run).

    Parameters
    ----------
    a, b : values per seed or run; pandas Series indexed by seed pair on the seed (when both
        hold the same seeds), arrays pair by position (when of equal length); NaN is dropped.
    alternative, threshold, margin : the claim (see the module's table).
    n_test : items of the one test set every run of a and b is scored on; None when each run
        draws its own test set (its spread then holds the test-sampling error already).
    paired : False compares a and b as independent samples.
    correct_a, correct_b : 0/1 correctness per test item (runs x N, or N): a paired test term
        instead of the binomial bound.
    label, unit, fmt : how the part prints.
    """
    a, b = _values(a), _values(b)
    kw = dict(alternative=alternative, threshold=threshold, margin=margin, label=label,
              unit=unit, fmt=fmt)
    if a.empty or b.empty:
        return _verdict(math.nan, math.nan, **kw)
    same = (a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index))
    if paired and same:
        d = (a - b.reindex(a.index)).to_numpy()
        estimate, n = d.mean(), len(d)
        var_runs, dof = (d.var(ddof=1) / n, n - 1) if n > 1 else (math.nan, 0)
    else:
        estimate = a.mean() - b.mean()
        na, nb = len(a), len(b)
        va = a.var(ddof=1) if na > 1 else math.nan
        vb = b.var(ddof=1) if nb > 1 else math.nan
        if na > 1 and nb > 1:
            ua, ub = va / na, vb / nb
            var_runs = ua + ub
            dof = var_runs**2 / (ua**2 / (na - 1) + ub**2 / (nb - 1)) if var_runs > 0 else math.inf
        elif na > 1 or nb > 1:  # one run on one side: the other side's spread stands for both
            s2, n_other = (va, na) if na > 1 else (vb, nb)
            var_runs, dof = s2 * (1 / na + 1 / nb), n_other - 1
        else:
            var_runs, dof = math.nan, 0
    v_test = _test_variance(a.mean(), b.mean(), n_test, correct_a, correct_b)
    if math.isnan(var_runs):  # a single run: the test term alone, normal quantile
        if v_test <= 0:
            return _verdict(estimate, math.inf, **kw)
        return _verdict(estimate, stats.norm.ppf(0.5 + LEVEL / 2) * math.sqrt(v_test), **kw)
    total = var_runs + v_test
    # Welch-Satterthwaite with the test term known: dof grows as the test term dominates
    eff = math.inf if var_runs == 0 else dof * (total / var_runs) ** 2
    q = stats.norm.ppf(0.5 + LEVEL / 2) if math.isinf(eff) else stats.t.ppf(0.5 + LEVEL / 2, eff)
    return _verdict(estimate, q * math.sqrt(total), **kw)


def verdict_slope(x, y, *, alternative: str = "greater", threshold: float = 0.0,
                  margin: float | None = None, label: str = "", unit: str = "",
                  fmt: str = "+.2f") -> Verdict:
    """The verdict on the least-squares slope of y on x: slope +/- t(0.975, n - 2) * stderr."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    kw = dict(alternative=alternative, threshold=threshold, margin=margin, label=label,
              unit=unit, fmt=fmt)
    if len(x) < 3 or len(np.unique(x)) < 2:
        return _verdict(math.nan, math.nan, **kw)
    res = stats.linregress(x, y)
    return _verdict(res.slope, stats.t.ppf(0.5 + LEVEL / 2, len(x) - 2) * res.stderr, **kw)


def verdict_bootstrap(groups: Sequence, statistic: Callable[[np.ndarray], np.ndarray], *,
                      alternative: str = "greater", threshold: float = 0.0,
                      margin: float | None = None, n_boot: int = 2000, seed: int = 0,
                      label: str = "", unit: str = "", fmt: str = "+.2f") -> Verdict:
    """The verdict on a statistic of per-setting means, by a seeded percentile bootstrap.

    Parameters
    ----------
    groups : one (runs, columns) array per setting (e.g. per gamma: teacher and student
        accuracy of each run); runs are resampled with replacement within each setting, a run's
        columns together.
    statistic : maps the settings' column means, shape (B, settings, columns), to (B,).
    n_boot, seed : resamples and the seed of their generator (deterministic).
    """
    kw = dict(alternative=alternative, threshold=threshold, margin=margin, label=label,
              unit=unit, fmt=fmt)
    arrays = [np.asarray(g, dtype=float).reshape(len(g), -1) for g in groups]
    observed = np.stack([g.mean(0) for g in arrays])[None]
    estimate = float(statistic(observed)[0])
    rng = np.random.default_rng(seed)
    means = np.stack([g[rng.integers(0, len(g), (n_boot, len(g)))].mean(1) for g in arrays],
                     axis=1)  # (B, settings, columns)
    low, high = np.quantile(statistic(means), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Verdict(estimate, float(low), float(high),
                   judge(low, high, alternative, threshold, margin), **kw)


def exact(held: bool, *, label: str = "", note: str = "exact") -> Verdict:
    """An exact check (a theorem's inequality on every draw): held or NOT held, no interval."""
    return Verdict(math.nan, math.nan, math.nan, HELD if held else NOT_HELD, label=label,
                   unit="", note=note)


def unless_unconverged(v: Verdict, unconverged: Sequence[str] = ()) -> Verdict:
    """``v``, or ``v`` made *undecided* when some of its runs had not trained to a plateau.

    A verdict on trained models needs runs at their plateau (CONVENTIONS.md, *Verdicts*): a
    difference between runs that were still learning says more about the training budget than
    about the claim.  ``unconverged`` names the runs that had not converged (the caller's test,
    e.g. "early stopping did not end it"); when it is empty ``v`` is returned as it is,
    otherwise its verdict becomes undecided and its interval is kept.
    """
    unconverged = list(unconverged)
    if not unconverged or v.verdict == UNDECIDED:
        return v
    return replace(v, verdict=UNDECIDED)


# ----------------------------------------------------------------------------- compounds
@dataclass(frozen=True)
class Compound:
    """A claim made of parts (each a :class:`Verdict` or a Compound) and the rule joining them."""

    parts: tuple
    verdict: str
    deciding: Verdict
    label: str = ""

    @property
    def text(self) -> str:
        """The deciding part's 'label: interval'."""
        return self.deciding.part

    @property
    def interval(self) -> str:
        d = self.deciding
        return f"{d.label}: {d.interval}" if d.label else d.interval

    @property
    def part(self) -> str:
        return f"{self.label}: {self.verdict}" if self.label else self.verdict

    @property
    def slack(self) -> float:
        return self.deciding.slack

    @property
    def evidence(self) -> str:
        """Every leaf part, '; '-joined."""
        return "; ".join(p.part for p in leaves(self))


def leaves(v) -> list[Verdict]:
    """The single-effect verdicts under ``v``, in order."""
    return [v] if isinstance(v, Verdict) else [x for p in v.parts for x in leaves(p)]


def _pick(parts, verdict: str, largest: bool):
    """Among the parts with ``verdict`` (all parts when none has it), the one of smallest (or
    largest) slack."""
    pool = [p for p in parts if p.verdict == verdict] or list(parts)
    return (max if largest else min)(pool, key=lambda p: p.slack)


def combine(parts: Sequence, label: str = "") -> Compound:
    """All parts must hold: held if every part is held, NOT held if any is NOT held, else
    undecided.  Deciding part: the weakest part with that verdict."""
    parts = tuple(parts)
    if not parts:
        raise ValueError("combine() needs at least one part")
    verdicts = {p.verdict for p in parts}
    verdict = (NOT_HELD if NOT_HELD in verdicts else UNDECIDED if UNDECIDED in verdicts
               else HELD)
    return Compound(parts, verdict, _pick(parts, verdict, largest=False).deciding, label)


def either(parts: Sequence, label: str = "") -> Compound:
    """One part must hold (e.g. either variant of a method): held if any part is held, NOT
    held if every part is NOT held, else undecided.  Deciding part: the strongest one."""
    parts = tuple(parts)
    if not parts:
        raise ValueError("either() needs at least one part")
    verdicts = {p.verdict for p in parts}
    verdict = (HELD if HELD in verdicts else UNDECIDED if UNDECIDED in verdicts else NOT_HELD)
    return Compound(parts, verdict, _pick(parts, verdict, largest=True).deciding, label)


def rank_at_most(differences: Sequence[Verdict], k: int, label: str = "") -> Compound:
    """Rank <= k among the competitors, from the verdicts on 'method - competitor > 0'.

    Held when at most k - 1 competitors are not significantly worse than the method; NOT held
    when at least k competitors are significantly better; undecided otherwise.  Deciding part:
    the competitor at the edge (the k-th smallest slack)."""
    parts = tuple(differences)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not all(isinstance(p, Verdict) and p.alternative == "greater" for p in parts):
        raise ValueError("rank_at_most() takes verdicts on 'method - competitor > 0'")
    if len(parts) < k:  # fewer competitors than places: the rank holds whatever the data
        return Compound(parts, HELD, exact(True, label=label or "rank",
                                           note=f"{len(parts) + 1} methods"), label)
    not_worse = sum(p.verdict != HELD for p in parts)
    better = sum(p.verdict == NOT_HELD for p in parts)
    verdict = HELD if not_worse <= k - 1 else NOT_HELD if better >= k else UNDECIDED
    edge = sorted(parts, key=lambda p: p.slack)[k - 1]
    return Compound(parts, verdict, edge.deciding, label)


# ----------------------------------------------------------------------------- claim rows
def claim_row(artefact: str, claim: str, evidence: str, verdict) -> dict:
    """One row of a claims table (:data:`CLAIM_COLUMNS`) from a Verdict or Compound."""
    if verdict.verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict.verdict!r}")
    return {"artefact": artefact, "claim": claim, "evidence": evidence,
            "interval": verdict.interval, "verdict": verdict.verdict}


def claims_frame(rows: list[dict]) -> pd.DataFrame:
    """A claims table with the columns :data:`CLAIM_COLUMNS` (empty when no claim was asked)."""
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
