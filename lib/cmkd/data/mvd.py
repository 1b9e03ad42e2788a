"""The modality Venn diagram (MVD) synthetic Gaussian data of MFH (ICLR 2023).

Appendix B.2, Eq. (27): a latent vector of decisive features ``x* ~ N(0, I_d)`` decides the label
``y = 1[<delta, x*> > 0]`` with ``delta ~ N(0, I_d)``.  Modality a (``x^a``, ``dim_a`` channels)
observes the decisive features indexed by ``J1``; modality b (``x^b``, ``dim_b`` channels) those
indexed by ``J2``.  Every other channel is fresh ``N(0, 1)`` noise.  Decisive features observed by
neither modality act as label noise (the paper's Fig. 2 and Fig. 3 settings have them).

K classes (:func:`generate_multiclass`): the MVD decision rule of MFH Eq. (3),
``y = argmax(W x*)`` with a decision matrix ``W ~ N(0, I)`` of shape (K, d); with K = 2 this is
the binary rule with ``delta = W[1] - W[0]`` (the binary generator is kept as it is).

L binary labels (:func:`generate_multilabel`): ``y_l = 1[<w_l, x*> > 0]`` with ``W ~ N(0, I)``
of shape (L, d), a multi-hot target for multi-label tasks (the offline stand-in of MM-IMDB's
genres, notebook 04's Table 7).

The ground truth follows the paper's definitions over the observed decisive features:
``alpha = 1 - |J2| / |J1 u J2|``, ``beta = 1 - |J1| / |J1 u J2|``,
``gamma = |J1 n J2| / |J1 u J2|``, so ``alpha + beta + gamma = 1``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "MVDSpec",
    "MVDData",
    "generate",
    "generate_multiclass",
    "generate_multilabel",
    "vary_gamma_spec",
    "vary_alpha_spec",
    "table2_spec",
    "gamma_to_overlap",
    "alpha_to_extra",
    "layout_spec",
    "VARY_GAMMA_DECISIVE",
    "VARY_ALPHA_DECISIVE_B",
    "load",
]

#: Fig. 2 setting: each modality observes this many decisive features (d = 20 in total).
VARY_GAMMA_DECISIVE = 10
#: Fig. 2 setting: channel counts of x^a and x^b.
VARY_GAMMA_DIMS = (25, 50)
#: Fig. 3 setting: x^b observes this many decisive features; x^a observes them plus ``extra``.
VARY_ALPHA_DECISIVE_B = 10
#: Fig. 3 setting: channel counts of x^a and x^b (and the number of latent decisive features).
VARY_ALPHA_DIMS = (50, 50)


@dataclass(frozen=True)
class MVDSpec:
    """Which latent decisive features each modality observes, and where.

    Parameters
    ----------
    d_star : int
        Number of latent decisive features (the length of ``x*`` and of ``delta``).
    dim_a, dim_b : int
        Number of channels of ``x^a`` and ``x^b``.
    J1, J2 : tuple of int
        Indices into ``x*`` observed by modality a and modality b.
    pos_a, pos_b : tuple of int
        Channel of ``x^a`` (``x^b``) that holds each entry of ``J1`` (``J2``), in the same order.
    """

    d_star: int
    dim_a: int
    dim_b: int
    J1: tuple[int, ...]
    J2: tuple[int, ...]
    pos_a: tuple[int, ...]
    pos_b: tuple[int, ...]
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for label, idx, pos, dim in (("J1", self.J1, self.pos_a, self.dim_a),
                                     ("J2", self.J2, self.pos_b, self.dim_b)):
            if len(idx) != len(pos):
                raise ValueError(f"{label} has {len(idx)} entries but its positions have "
                                 f"{len(pos)}")
            if len(set(idx)) != len(idx) or len(set(pos)) != len(pos):
                raise ValueError(f"{label} and its positions must not repeat an index")
            if any(not 0 <= j < self.d_star for j in idx):
                raise ValueError(f"{label} indices must lie in [0, d_star={self.d_star})")
            if any(not 0 <= p < dim for p in pos):
                raise ValueError(f"{label} positions must lie in [0, {dim}) "
                                 "(the modality's channels)")
        if not set(self.J1) | set(self.J2):
            raise ValueError("at least one modality must observe a decisive feature")

    @property
    def shared(self) -> tuple[int, ...]:
        """Indices into ``x*`` of the modality-general decisive features (``J1 n J2``)."""
        return tuple(sorted(set(self.J1) & set(self.J2)))

    @property
    def union(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.J1) | set(self.J2)))

    @property
    def gamma(self) -> float:
        return len(self.shared) / len(self.union)

    @property
    def alpha(self) -> float:
        return 1.0 - len(self.J2) / len(self.union)

    @property
    def beta(self) -> float:
        return 1.0 - len(self.J1) / len(self.union)

    def channels(self, modality: str, kind: str) -> np.ndarray:
        """Channel positions of one modality by kind.

        Parameters
        ----------
        modality : {'a', 'b'}
        kind : {'general', 'specific', 'decisive', 'noise'}
            'general': holds a modality-general decisive feature; 'specific': a decisive feature
            the other modality does not observe; 'decisive': both; 'noise': neither.
        """
        if modality not in ("a", "b"):
            raise ValueError(f"modality must be 'a' or 'b', got {modality!r}")
        idx, pos, dim = ((self.J1, self.pos_a, self.dim_a) if modality == "a"
                         else (self.J2, self.pos_b, self.dim_b))
        shared = set(self.shared)
        if kind == "general":
            out = [p for j, p in zip(idx, pos) if j in shared]
        elif kind == "specific":
            out = [p for j, p in zip(idx, pos) if j not in shared]
        elif kind == "decisive":
            out = list(pos)
        elif kind == "noise":
            out = sorted(set(range(dim)) - set(pos))
        else:
            raise ValueError(
                f"kind must be one of 'general', 'specific', 'decisive', 'noise', got {kind!r}")
        return np.array(sorted(out), dtype=np.int64)


@dataclass(frozen=True)
class MVDData:
    """One draw of MVD data.

    Attributes
    ----------
    xa : (n, dim_a) float32 array
    xb : (n, dim_b) float32 array
    y : (n,) int64 array of labels in {0, 1}
    x_star : (n, d_star) float32 array of latent decisive features
    delta : (d_star,) float64 array, the separating hyperplane; for K-class data
        (:func:`generate_multiclass`) the (K, d_star) decision matrix W
    spec : MVDSpec, with the ground truth (alpha, beta, gamma, index sets)
    """

    xa: np.ndarray
    xb: np.ndarray
    y: np.ndarray
    x_star: np.ndarray
    delta: np.ndarray
    spec: MVDSpec


def _draw(spec: MVDSpec, n: int, rng: np.random.Generator, delta: np.ndarray,
          label: Callable[[np.ndarray], np.ndarray]) -> MVDData:
    """Draw x* (n, d_star), then the noise channels of x^a and x^b, and place the observed
    decisive features in them; ``label`` maps x* to the (n,) labels.  Both generators share it,
    so their draws come from ``rng`` in the same order."""
    x_star = rng.standard_normal((n, spec.d_star))
    y = label(x_star)
    xa = rng.standard_normal((n, spec.dim_a))
    xb = rng.standard_normal((n, spec.dim_b))
    xa[:, list(spec.pos_a)] = x_star[:, list(spec.J1)]
    xb[:, list(spec.pos_b)] = x_star[:, list(spec.J2)]
    return MVDData(xa.astype(np.float32), xb.astype(np.float32), y,
                   x_star.astype(np.float32), delta, spec)


def generate(spec: MVDSpec, n: int, rng: np.random.Generator,
             delta: np.ndarray | None = None) -> MVDData:
    """Draw ``n`` samples of MVD data (MFH Eq. 27).

    Parameters
    ----------
    spec : MVDSpec
    n : int
        Number of samples.
    rng : numpy.random.Generator
        Source of every random draw.
    delta : (d_star,) array, optional
        The separating hyperplane; drawn from ``N(0, I)`` when omitted.  Pass the training
        draw's ``delta`` to make a test set of the same task.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    if delta is None:
        delta = rng.standard_normal(spec.d_star)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.shape != (spec.d_star,):
        raise ValueError(f"delta must have shape ({spec.d_star},), got {delta.shape}")
    return _draw(spec, n, rng, delta, lambda x_star: (x_star @ delta > 0).astype(np.int64))


def generate_multiclass(spec: MVDSpec, n: int, rng: np.random.Generator, classes: int,
                        weights: np.ndarray | None = None) -> MVDData:
    """Draw ``n`` samples of K-class MVD data: ``y = argmax(W x*)`` (MFH Eq. 3).

    Parameters
    ----------
    spec, n : as in :func:`generate`.
    rng : numpy.random.Generator
        Source of every random draw: W first when it is drawn, then x* and the noise channels
        of x^a and x^b in the order of :func:`generate`.
    classes : int
        Number of classes K >= 2.
    weights : (K, d_star) array, optional
        The decision matrix W; drawn from ``N(0, I)`` when omitted.  Pass the training draw's
        ``delta`` (which holds W) to make a test set of the same task.

    Returns
    -------
    MVDData with ``y`` in {0, ..., K - 1} and ``delta`` the decision matrix W.
    """
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    weights = _decision_weights(spec, n, rng, classes, weights)
    return _draw(spec, n, rng, weights,
                 lambda x_star: np.argmax(x_star @ weights.T, axis=1).astype(np.int64))


def _decision_weights(spec: MVDSpec, n: int, rng: np.random.Generator, rows: int,
                      weights: np.ndarray | None) -> np.ndarray:
    """The (rows, d_star) decision matrix W of a draw of ``n`` samples: ``weights`` checked, or
    drawn from ``rng`` first (before x* and the noise) when not given."""
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    if weights is None:
        weights = rng.standard_normal((rows, spec.d_star))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (rows, spec.d_star):
        raise ValueError(f"weights must have shape ({rows}, {spec.d_star}), got "
                         f"{weights.shape}")
    return weights


def generate_multilabel(spec: MVDSpec, n: int, rng: np.random.Generator, labels: int,
                        weights: np.ndarray | None = None) -> MVDData:
    """Draw ``n`` samples with ``labels`` binary labels: ``y_l = 1[<w_l, x*> > 0]``.

    As :func:`generate_multiclass` (W drawn first when not given, then x* and the noise
    channels), with ``y`` of shape (n, labels) in {0, 1} and ``delta`` the (labels, d_star)
    matrix W.  Each label is MFH Eq. (27)'s binary rule with its own hyperplane; every label
    reads the same decisive features, so the modality-general share gamma is the spec's.
    """
    if labels < 1:
        raise ValueError(f"labels must be >= 1, got {labels}")
    weights = _decision_weights(spec, n, rng, labels, weights)
    return _draw(spec, n, rng, weights,
                 lambda x_star: (x_star @ weights.T > 0).astype(np.int64))


def vary_gamma_spec(overlap: int) -> MVDSpec:
    """The Fig. 2 setting: d = 20 latent decisive features, x^a 25-d, x^b 50-d.

    x^b observes x*[0:10] in its channels 0..9; x^a observes x*[10 - o : 20 - o] in its channels
    10 - o .. 19 - o, so the two share ``o = overlap`` features and ``gamma = o / (20 - o)``.
    """
    k = VARY_GAMMA_DECISIVE
    if not 0 <= overlap <= k:
        raise ValueError(f"overlap must lie in [0, {k}], got {overlap}")
    j1 = tuple(range(k - overlap, 2 * k - overlap))
    j2 = tuple(range(k))
    dim_a, dim_b = VARY_GAMMA_DIMS
    return MVDSpec(2 * k, dim_a, dim_b, j1, j2, j1, j2, name=f"vary_gamma(overlap={overlap})")


def vary_alpha_spec(extra: int) -> MVDSpec:
    """The Fig. 3 setting: x^a and x^b 50-d, d = 50 latent decisive features.

    x^b observes x*[0:10]; x^a observes x*[0 : 10 + extra] (same channels), so beta = 0,
    ``alpha = extra / (extra + 10)`` and ``gamma = 1 - alpha``.
    """
    k = VARY_ALPHA_DECISIVE_B
    dim_a, dim_b = VARY_ALPHA_DIMS
    if not 0 <= extra <= dim_a - k:
        raise ValueError(f"extra must lie in [0, {dim_a - k}], got {extra}")
    j1 = tuple(range(k + extra))
    j2 = tuple(range(k))
    return MVDSpec(dim_a, dim_a, dim_b, j1, j2, j1, j2, name=f"vary_alpha(extra={extra})")


def table2_spec(xs1: int, xs2: int, dim: int = 50) -> MVDSpec:
    """The Table 2 setting of the official gauss/main_modify_gamma.py (both modalities ``dim``-d).

    ``d = xs1 + xs2`` latent decisive features, all observed by x^a in its channels 0 .. d - 1;
    x^b observes the first ``xs2`` of them in its channels 0 .. xs2 - 1.  So the ``xs2`` shared
    channels are x^a's channels 0 .. xs2 - 1, beta = 0, ``alpha = xs1 / (xs1 + xs2)`` and
    ``gamma = xs2 / (xs1 + xs2)``.  The official script uses the all-ones hyperplane (pass
    ``delta=np.ones(spec.d_star)`` to :func:`generate`).
    """
    if xs1 < 0 or xs2 < 1 or xs1 + xs2 > dim:
        raise ValueError(f"need xs1 >= 0, xs2 >= 1 and xs1 + xs2 <= dim = {dim}, got xs1 = {xs1}, "
                         f"xs2 = {xs2}")
    j1 = tuple(range(xs1 + xs2))
    j2 = tuple(range(xs2))
    return MVDSpec(xs1 + xs2, dim, dim, j1, j2, j1, j2, name=f"table2(xs1={xs1}, xs2={xs2})")


def _nearest(target: float, candidates: dict[int, float], what: str, tol: float) -> int:
    best = min(candidates, key=lambda c: abs(candidates[c] - target))
    if abs(candidates[best] - target) > tol:
        reachable = ", ".join(f"{v:.2f}" for v in candidates.values())
        raise ValueError(f"{what} = {target} is not reachable in this setting; reachable values "
                         f"(to within {tol}): {reachable}")
    return best


def gamma_to_overlap(gamma: float, tol: float = 0.01) -> int:
    """Number of shared decisive features giving ``gamma`` in the Fig. 2 setting."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    k = VARY_GAMMA_DECISIVE
    return _nearest(gamma, {o: o / (2 * k - o) for o in range(k + 1)}, "gamma", tol)


def alpha_to_extra(alpha: float, tol: float = 0.01) -> int:
    """Number of extra decisive features of x^a giving ``alpha`` in the Fig. 3 setting."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    k = VARY_ALPHA_DECISIVE_B
    dim_a = VARY_ALPHA_DIMS[0]
    return _nearest(alpha, {e: e / (e + k) for e in range(dim_a - k + 1)}, "alpha", tol)


# ----------------------------------------------------------------------------- as a dataset
SPLITS = ("train", "val", "test")


#: ``half`` option: the whole training split, or its first or second half (MFH Table 7 trains
#: the teachers on one half and the student on the other)
HALVES = ("all", "first", "second")


#: the generator stream of the Fig. 3 layout (``extra`` set): a spawn key of its own, so its
#: draws never coincide with a Fig. 2 draw of the same numbers
ALPHA_STREAM = (3,)


def layout_spec(overlap: int, extra: int | None) -> MVDSpec:
    """The spec of the ``mvd`` dataset: MFH Fig. 2 (:func:`vary_gamma_spec` of ``overlap``) when
    ``extra`` is None, else Fig. 3 (:func:`vary_alpha_spec` of ``extra``)."""
    return vary_gamma_spec(overlap) if extra is None else vary_alpha_spec(extra)


@functools.lru_cache(maxsize=64)
def _fig2_draws(overlap: int, classes: int, n_train: int, n_val: int, n_test: int, seed: int,
                run: int, multilabel: int = 0, extra: int | None = None
                ) -> dict[str, MVDData]:
    if extra is not None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, extra, run, multilabel],
                                                           spawn_key=ALPHA_STREAM))
        if multilabel:
            def draw(spec, n, rng, weights=None):
                return generate_multilabel(spec, n, rng, multilabel, weights)
        else:
            def draw(spec, n, rng, weights=None):
                return generate_multiclass(spec, n, rng, classes, weights)
    elif multilabel:
        rng = np.random.default_rng(np.random.SeedSequence([seed, overlap, run, multilabel]))

        def draw(spec, n, rng, weights=None):
            return generate_multilabel(spec, n, rng, multilabel, weights)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, overlap, run]))

        def draw(spec, n, rng, weights=None):
            return generate_multiclass(spec, n, rng, classes, weights)
    spec = layout_spec(overlap, extra)
    train = draw(spec, n_train, rng)
    test = draw(spec, n_test, rng, train.delta)
    out = {"train": train, "test": test}
    if n_val:
        out["val"] = draw(spec, n_val, rng, train.delta)
    return out


def half_rows(n: int, half: str) -> slice:
    """The rows of a training split of ``n`` items that ``half`` keeps ('first': the first
    ``n // 2``, 'second': the rest, 'all': every row)."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    return {"all": slice(0, n), "first": slice(0, n // 2), "second": slice(n // 2, n)}[half]


def load(root=None, split: str = "train", overlap: int = 10, classes: int = 2,
         n_train: int = 200, n_val: int = 0, n_test: int = 1000, seed: int = 0, run: int = 0,
         multilabel: int = 0, half: str = "all", extra: int | None = None):
    """Registry entry ``mvd``: K-class MVD data (:func:`generate_multiclass`) in MFH Fig. 2's
    layout (:func:`vary_gamma_spec`: x^a 25-d and x^b 50-d observe 10 decisive features each,
    ``overlap`` of them shared), as a dataset whose items are {'xa', 'xb', 'label'}.
    ``extra`` (an int, default None): MFH Fig. 3's layout instead (:func:`vary_alpha_spec`:
    x^a and x^b 50-d, x^b observes 10 decisive features, x^a the same 10 plus ``extra``: beta
    0, ``alpha = extra / (extra + 10)``, gamma = 1 - alpha; ``overlap`` is then unused), drawn
    from a generator stream of its own (seed, extra, run, L).

    The draw is determined by (seed, overlap, run): one generator draws the training split,
    then the test split, then (``n_val`` > 0) a validation split, all of one task (the training
    draw's decision matrix).  ``root`` is ignored (synthetic); a split of 0 samples is empty.
    ``multilabel`` L > 0: L binary labels instead (:func:`generate_multilabel`; ``classes`` is
    then unused), 'label' a float32 (n, L) multi-hot, drawn from a generator of its own (seed,
    overlap, run, L).  ``half``: of the training split, 'all' rows, the 'first' half or the
    'second' (:func:`half_rows`; the other splits are whole).
    """
    import torch

    from cmkd.data.arrays import ArrayDataset

    if split not in SPLITS:
        raise ValueError(f"dataset 'mvd': split must be one of {SPLITS}, got {split!r}")
    for name, value, low in (("overlap", overlap, 0), ("classes", classes, 2),
                             ("n_train", n_train, 1), ("n_val", n_val, 0),
                             ("n_test", n_test, 1), ("seed", seed, 0), ("run", run, 0),
                             ("multilabel", multilabel, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"dataset 'mvd': option {name!r} must be an int >= {low}, got "
                             f"{value!r}")
    if half not in HALVES:
        raise ValueError(f"dataset 'mvd': option 'half' must be one of {HALVES}, got {half!r}")
    top = VARY_ALPHA_DIMS[0] - VARY_ALPHA_DECISIVE_B
    if extra is not None and (isinstance(extra, bool) or not isinstance(extra, int)
                              or not 0 <= extra <= top):
        raise ValueError(f"dataset 'mvd': option 'extra' must be None (Fig. 2 layout) or an int "
                         f"in [0, {top}] (Fig. 3 layout), got {extra!r}")
    draws = _fig2_draws(overlap, classes, n_train, n_val, n_test, seed, run, multilabel, extra)
    if split not in draws:  # no validation split
        spec = layout_spec(overlap, extra)
        return ArrayDataset({"xa": torch.zeros(0, spec.dim_a),
                             "xb": torch.zeros(0, spec.dim_b),
                             "label": (torch.zeros(0, multilabel) if multilabel
                                       else torch.zeros(0, dtype=torch.int64))})
    d = draws[split]
    rows = half_rows(len(d.y), half) if split == "train" else slice(None)
    label = torch.from_numpy(d.y[rows])
    return ArrayDataset({"xa": torch.from_numpy(d.xa[rows]), "xb": torch.from_numpy(d.xb[rows]),
                         "label": label.float() if multilabel else label})
