"""Intrinsic-dimension estimators of a point cloud (one layer's activations).

Four estimators with the scikit-learn contract (``__init__`` stores keyword
parameters, ``fit(X)`` validates, computes, sets trailing-underscore results and
returns ``self``; randomness only from ``seed``):

- ``TwoNN`` (Facco et al. 2017) and ``MLE`` (Levina & Bickel 2005 with MacKay &
  Ghahramani's averaging): nonlinear, from nearest-neighbour distances.
- ``PCADimension`` (``"pca90"``, Ansuini et al. 2019) and ``ParticipationRatio``:
  linear, from the covariance eigenvalues.

Every estimator sets ``dimension_`` (float, ``nan`` with ``reason_`` when it cannot
be measured), ``ci_`` (a subsampling interval, described below),
``se_``, ``n_samples_`` and ``n_duplicates_``. ``estimate_id`` runs one of them by
name and returns an ``analysis.types.MetricValue``.

Identical rows (frequent after a ReLU) have no neighbour distance to measure: the kNN
estimators count them (``n_duplicates_``: points whose nearest neighbour is at
distance 0) and estimate on the distinct rows (``n_unique_``), each group of
identical rows counting once.

The interval ``ci_`` (a delete-d jackknife, Shao & Wu 1989): ``n_subsamples`` seeded
subsamples of ``m = round(subsample_fraction * n)`` of the ``n`` (distinct) rows,
drawn WITHOUT replacement (a bootstrap would duplicate points, i.e. zero neighbour
distances); each is estimated afresh (the kNN estimators find each subsample's own
neighbours, taken exactly from longer full-set neighbour lists). With ``s^2`` the
sample variance of the subsample estimates,
``se_ = sqrt(m / (n - m) * s^2)`` and ``ci_ = dimension_ -+ t_{B-1,(1+ci_level)/2}
* se_`` (Student quantile, ``B = n_subsamples``). It measures sampling variability,
not bias (TwoNN and MLE read low for d above about 5). Checked on 60 independent
noiseless samples (N=2000, d = 2, 5, 10): for TwoNN and MLE ``se_`` was 0.95-1.4
times the actual s.d. of the estimate and the 95% intervals covered the mean
estimate 93-100% of the time; for the participation ratio ``se_`` is about twice
the actual s.d. (conservative).

Parameters, their defaults and ranges are those of the estimator's model in
``contract.estimators`` (``TwoNNParams``, ``MLEParams``, ``PCAParams``,
``ParticipationRatioParams``); ``fit`` checks them there. Small samples: below the
estimator's ``min_samples`` (or what its parameters need, such as MLE's ``k + 1``,
whichever is larger; for the kNN estimators counted in distinct rows) the estimate
is ``nan`` with ``reason_``; below ``low_samples`` it stands with the flag
``"low_samples"`` in ``flags_``. A subsample under the minimum gives no interval.
An intrinsic dimension lies in ``[0, D]`` (``D`` the number of columns): the
estimate and its interval are clipped to it; when any of the three was, the flag
``"clipped"`` is set and ``unclipped_`` keeps the raw values (``None`` otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from analysis._id_knn import _KNNEstimator
from analysis._id_linear import ParticipationRatio, PCADimension
from analysis._id_uncertainty import (
    SubsampledEstimator,
    checked_params,
    shared_work,
)
from analysis.errors import InvalidInputError
from analysis.types import MetricValue
from contract.estimators import ID_METHODS, MLEParams, TwoNNParams

__all__ = [
    "ID_ESTIMATORS",
    "MLE",
    "PCADimension",
    "ParticipationRatio",
    "TwoNN",
    "estimate_id",
    "shared_fits",
]


_TWONN, _MLE = TwoNNParams(), MLEParams()  # the defaults


class TwoNN(_KNNEstimator):
    """TwoNN intrinsic dimension (Facco, d'Errico, Rodriguez & Laio 2017).

    For each point, ``mu = r2 / r1`` (second over first nearest-neighbour distance)
    follows a Pareto law of shape ``d``, so ``-log(1 - F(mu)) = d log(mu)``. With
    the ``N`` ratios sorted, ``F`` is estimated as ``i / N`` for the ``i``-th; the
    largest ``discard_fraction`` of them are dropped (``int(N (1 - discard_fraction))``
    kept, at most ``N - 1`` since ``F = 1`` has no logarithm) and ``d`` is the slope
    of the least-squares line through the origin. This is the convention of
    ``skdim.id.TwoNN(discard_fraction=...)`` (scikit-dimension 0.5); on the same
    points the two agree to 1e-10 or better.

    Parameters
    ----------
    discard_fraction : fraction of the largest ratios discarded, in [0, 1).
    n_subsamples : number of random subsamples behind ``ci_`` (0: no interval).
    subsample_fraction : subsample size as a fraction of the distinct rows, in (0, 1).
    ci_level : coverage of the interval, in (0, 1).
    seed : seed of the subsample draws, the only randomness.

    Attributes
    ----------
    dimension_ : float, the estimate (``nan`` with ``reason_`` if it cannot be made).
    ci_ : (low, high), the interval described in the module docstring;
        ``se_`` its standard error, ``ci_reason_`` why it is ``nan`` if it is.
    mu_ : float64 tensor ``(n_unique_,)``, the ratios ``r2 / r1`` of distinct rows.
    n_samples_, n_unique_, n_duplicates_ : rows given, distinct rows, rows with an
        identical other row (dropped from the estimate, which uses distinct rows).
    subsample_dimensions_ : the subsample estimates behind ``ci_``.

    Example
    -------
    >>> from analysis.manifolds import make_manifold
    >>> X = make_manifold("sphere", n=2000, d=2, D=64, seed=0)  # (2000, 64)
    >>> est = TwoNN().fit(X)
    >>> round(est.dimension_)
    2
    """

    name = "twonn"

    def __init__(
        self,
        *,
        discard_fraction: float = _TWONN.discard_fraction,
        n_subsamples: int = _TWONN.n_subsamples,
        subsample_fraction: float = _TWONN.subsample_fraction,
        ci_level: float = _TWONN.ci_level,
        seed: int = 0,
    ) -> None:
        self.discard_fraction = discard_fraction
        self.n_subsamples = n_subsamples
        self.subsample_fraction = subsample_fraction
        self.ci_level = ci_level
        self.seed = seed

    def _n_neighbors(self) -> int:
        return 2

    def _min_samples(self) -> int:
        n = 3
        while min(int(n * (1 - self.discard_fraction)), n - 1) < 2:
            n += 1
        return n

    def _estimate(self, dist: torch.Tensor, store: bool) -> tuple[float, str | None]:
        r1, r2 = dist[:, 0], dist[:, 1]  # float64
        mu = r2[r1 > 0] / r1[r1 > 0]  # r1 > 0 on distinct rows; kept as a guard
        if store:
            self.mu_ = mu
        N = mu.numel()
        n_keep = min(int(N * (1 - self.discard_fraction)), N - 1)
        if n_keep < 2:
            return math.nan, f"fewer than 2 ratios left of {N}"
        x = mu.sort().values[:n_keep].log()
        F = torch.arange(1, n_keep + 1, dtype=torch.float64, device=mu.device) / N
        y = -torch.log1p(-F)
        sxx = float((x * x).sum())
        if sxx == 0:
            return math.nan, "every point has r2 == r1: the ratios carry no dimension"
        return float((x * y).sum()) / sxx, None


class MLE(_KNNEstimator):
    """Maximum-likelihood intrinsic dimension (Levina & Bickel 2005), averaged as
    MacKay & Ghahramani (2005) propose.

    With ``T_1 <= ... <= T_k`` the distances from a point to its ``k`` nearest other
    points, the local estimate is ``m_k = (k - 1) / sum_{j<k} log(T_k / T_j)``
    (``k - 2`` with ``unbiased=True``), and the global estimate is the inverse of the
    mean of the inverses, ``1 / mean(1 / m_k)``, which is less biased than the mean
    of ``m_k``. This is ``skdim.id.MLE(unbiased=False).fit(X, n_neighbors=k,
    comb="mle")`` (its defaults: ``dnoise=None, neighborhood_based=True``) of
    scikit-dimension 0.5; on the same points the two agree to 1e-10 or better.

    Parameters
    ----------
    k : number of neighbours, at least 2 (3 with ``unbiased``).
    unbiased : use ``k - 2`` instead of ``k - 1`` in the local estimate.
    n_subsamples : number of random subsamples behind ``ci_`` (0: no interval).
    subsample_fraction : subsample size as a fraction of the distinct rows, in (0, 1).
    ci_level : coverage of the interval, in (0, 1).
    seed : seed of the subsample draws, the only randomness.

    Attributes
    ----------
    dimension_, ci_, se_, n_samples_, n_unique_, n_duplicates_,
    subsample_dimensions_ : as in ``TwoNN``.
    k_ : the ``k`` used.
    dimension_pw_ : float64 tensor ``(n_unique_,)``, the local estimates ``m_k``
        (``inf`` where all ``k`` neighbours are equidistant).

    Example
    -------
    >>> from analysis.manifolds import make_manifold
    >>> X = make_manifold("linear", n=2000, d=3, D=64, seed=0)  # (2000, 64)
    >>> round(MLE(k=20).fit(X).dimension_)
    3
    """

    name = "mle"

    def __init__(
        self,
        *,
        k: int = _MLE.k,
        unbiased: bool = _MLE.unbiased,
        n_subsamples: int = _MLE.n_subsamples,
        subsample_fraction: float = _MLE.subsample_fraction,
        ci_level: float = _MLE.ci_level,
        seed: int = 0,
    ) -> None:
        self.k = k
        self.unbiased = unbiased
        self.n_subsamples = n_subsamples
        self.subsample_fraction = subsample_fraction
        self.ci_level = ci_level
        self.seed = seed

    def _check_params(self) -> None:
        super()._check_params()
        self.k_ = self.k

    def _n_neighbors(self) -> int:
        return self.k

    def _min_samples(self) -> int:
        return self.k + 1

    def _estimate(self, dist: torch.Tensor, store: bool) -> tuple[float, str | None]:
        T = dist[dist[:, 0] > 0]  # (n, k) float64; distinct rows have T_1 > 0
        kfac = self.k - 2 if self.unbiased else self.k - 1
        inv_m = (T[:, -1:] / T[:, :-1]).log().sum(dim=1) / kfac  # 1 / m_k, (n,)
        if store:
            self.dimension_pw_ = 1.0 / inv_m
        mean_inv = float(inv_m.mean()) if inv_m.numel() else 0.0
        if mean_inv == 0:
            return math.nan, "all neighbours equidistant: no dimension to measure"
        return 1.0 / mean_inv, None


_CLASSES = {c.name: c for c in (TwoNN, MLE, PCADimension, ParticipationRatio)}
# The names and their order are the contract's; a KeyError here is a contract
# estimator that the library lacks.
ID_ESTIMATORS: dict[str, type[SubsampledEstimator]] = {
    name: _CLASSES[name] for name in ID_METHODS
}


@contextmanager
def shared_fits(N: int, methods: dict[str, dict[str, Any]]) -> Iterator[None]:
    """A scope in which the estimators ``methods`` (name -> keyword parameters)
    fitted on one tensor of ``N`` rows do their common work once: one neighbour
    search, as long as the longest that the kNN estimators need (each reads its
    prefix: the same lists, except that a neighbour which float32 rounding had kept
    out of a shorter search's candidates is found), and one covariance spectrum
    per row set for the linear estimators (the same numbers). Dropped on exit.

    Example
    -------
    >>> X = torch.randn(500, 16)
    >>> methods = {"twonn": {}, "mle": {"k": 10}}
    >>> with shared_fits(len(X), methods):
    ...     rows = [estimate_id(X, m, **p) for m, p in methods.items()]
    """
    K = 0
    for method, params in methods.items():
        cls = ID_ESTIMATORS.get(method)
        if cls is None or not issubclass(cls, _KNNEstimator):
            continue
        try:
            est = cls(**checked_params("id", method, params))
        except InvalidInputError:
            continue  # the fit itself reports it
        K = max(K, est.search_length(N))
    with shared_work(K):
        yield


def estimate_id(
    X: torch.Tensor, method: str, *, seed: int = 0, **params: Any
) -> MetricValue:
    """Intrinsic dimension of the rows of ``X`` by the estimator named ``method``.

    Parameters
    ----------
    X : tensor of shape ``(N, ...)``, any real dtype, on any device (the work runs
        there); flattened to ``(N, D)``.
    method : a key of ``ID_ESTIMATORS``: ``"twonn"``, ``"mle"``, ``"pca90"``,
        ``"participation_ratio"``.
    seed : seed of the subsampling interval.
    **params : keyword parameters of the estimator class (e.g. ``k=10`` for
        ``"mle"``, ``n_subsamples=0`` for no interval), checked against its model
        in ``contract.estimators``.

    Returns
    -------
    MetricValue : ``metric="intrinsic_dimension"``, ``estimator=method``, the value
        and interval in ``[0, D]`` (``None`` when not finite or too few samples,
        with ``reason``), ``n_samples`` (rows given), ``flags`` among
        ``"low_samples"`` and ``"clipped"`` (module docstring), and ``params``: every
        parameter used, defaults included, plus ``n_duplicates`` (and ``n_unique``
        for the kNN estimators; ``unclipped``, the raw value and interval, when
        clipped).

    Raises
    ------
    InvalidInputError : unknown method or parameter, bad parameter value (the
        message names it), non-finite ``X``.

    Example
    -------
    >>> from analysis.manifolds import make_manifold
    >>> X = make_manifold("sphere", n=2000, d=2, D=64, seed=0)
    >>> mv = estimate_id(X, "twonn", seed=0)
    >>> mv.estimator, round(mv.value), mv.ci_low < mv.value < mv.ci_high
    ('twonn', 2, True)
    """
    p = checked_params("id", method, params)
    est = ID_ESTIMATORS[method](seed=seed, **p).fit(X)  # type: ignore[call-arg]
    used = est.get_params() | {"n_duplicates": est.n_duplicates_}
    if hasattr(est, "n_unique_"):
        used["n_unique"] = est.n_unique_
    if est.unclipped_ is not None:
        used["unclipped"] = est.unclipped_
    return MetricValue(
        metric="intrinsic_dimension",
        estimator=method,
        value=est.dimension_,
        ci_low=est.ci_[0],
        ci_high=est.ci_[1],
        n_samples=est.n_samples_,
        params=used,
        reason=est.reason_ or est.ci_reason_,
        flags=est.flags_,
    )
