"""Subsampling uncertainty for the intrinsic-dimension estimators (private), and
what the ID, MI and probe estimators share with it: parameter checks, minimum sample
counts and the ``low_samples`` flag from ``contract.estimators``, and clipping to a
quantity's range.

The interval is a delete-d jackknife (Shao & Wu 1989, Ann. Statist. 17(3)): ``B``
seeded random subsamples of ``m`` of the ``n`` points, drawn WITHOUT replacement
(a bootstrap with replacement duplicates points, which gives zero neighbour
distances and biases kNN estimators). With ``theta_b`` the subsample estimates and
``s^2`` their sample variance,

    se = sqrt(m / (n - m) * s^2),
    CI = theta_hat -+ t_{B-1, (1 + level) / 2} * se,

centred on the full-sample estimate ``theta_hat``. The factor ``m / (n - m)`` is the
finite-population correction (for a mean over half-samples it is 1: the spread of
half-sample means is the standard error of the full mean); the Student quantile
accounts for the few subsamples. The interval covers sampling variability only, not
the estimator's bias (TwoNN and MLE read low for d above about 5). A subsample
smaller than the estimator's minimum sample count gives no interval.

For the kNN estimators the neighbours of a subsample are not those of the full set;
they are taken exactly from the full set's neighbour lists (the first neighbours that
belong to the subsample), which were searched long enough for that, and searched
again only for the few points whose lists run out.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

import torch

from analysis._memo import TensorMemo
from analysis.errors import DataError, InvalidInputError
from analysis.neighbors import search
from contract.errors import ContractError
from contract.estimators import estimator, resolve_params

T = TypeVar("T")


class _Shared:
    """What estimators fitted on the same tensor share within ``shared_work``."""

    def __init__(self, knn_length: int) -> None:
        self.knn_length = knn_length
        self.memo = TensorMemo()

    @property
    def held(self) -> dict[tuple, tuple[torch.Tensor, Any]]:
        return self.memo.kept


_SCOPE: ContextVar[_Shared | None] = ContextVar("id_shared_work", default=None)


@contextmanager
def shared_work(knn_length: int = 0) -> Iterator[None]:
    """Within it, ID estimators fitted on the same tensor compute the work they
    have in common once: the neighbour search of TwoNN and MLE (searched
    ``knn_length`` long at least, so that every estimator's shorter list is its
    prefix) and the covariance spectra of the linear estimators (full set and each
    seeded subsample). Everything held is dropped on exit; outside it, nothing is
    kept."""
    token = _SCOPE.set(_Shared(knn_length))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def shared_knn_length(K: int) -> int:
    """The neighbour-list length to search for a need of ``K``: the scope's, if
    longer (``shared`` then serves the prefix)."""
    scope = _SCOPE.get()
    return K if scope is None else max(K, scope.knn_length)


def shared(X: torch.Tensor, what: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, or what it gave for the same ``what`` on the same data of
    ``X`` earlier in the ``shared_work`` scope (a :class:`TensorMemo` that holds
    every entry until the scope ends)."""
    scope = _SCOPE.get()
    return compute() if scope is None else scope.memo.get(X, what, compute)


def checked_params(family: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``contract.estimators.resolve_params``, its error as ``InvalidInputError``
    (every problem, each naming its parameter)."""
    try:
        return resolve_params(family, name, params)
    except ContractError as exc:
        raise InvalidInputError(str(exc)) from exc


def sample_floor(family: str, name: str, own_min: int, N: int) -> tuple[int, str]:
    """The fewest rows ``name`` takes, ``max(declared min_samples, own_min)``
    (``own_min``: what the parameters need, such as MLE's ``k + 1``), and the reason
    a row with ``N`` rows below it gets."""
    declared = estimator(family, name).min_samples
    n_min = max(declared, own_min)
    why = "with these parameters" if own_min > declared else "for a meaningful estimate"
    return n_min, f"{N} samples; {name} needs at least {n_min} {why}"


def sample_flags(family: str, name: str, n_rows: int) -> list[str]:
    """``["low_samples"]`` when ``n_rows`` is below the declared ``low_samples``."""
    return ["low_samples"] if n_rows < estimator(family, name).low_samples else []


def subsample_problem(m: int, n: int, n_min: int) -> str | None:
    """Why a subsample of ``m`` of ``n`` rows gives no interval, if it does not."""
    if m < n_min:
        return (
            f"no interval: a subsample of {m} of {n} rows is under the minimum of "
            f"{n_min}; pass more rows or a larger subsample_fraction"
        )
    if m >= n:
        return (
            f"no interval: a subsample of {m} of {n} rows is the whole sample; pass "
            "a smaller subsample_fraction"
        )
    return None


def clip_to(
    value: float, ci: tuple[float, float], low: float, high: float
) -> tuple[float, tuple[float, float], dict[str, float | None] | None]:
    """``value`` and ``ci`` clipped to ``[low, high]``, and, when any of them was,
    the raw ``{"value", "ci_low", "ci_high"}`` (``None`` for a non-finite one)."""

    def clip(v: float) -> float:
        return min(max(v, low), high) if math.isfinite(v) else v

    raw = (value, *ci)
    out = tuple(clip(v) for v in raw)
    if out == raw or all(math.isnan(v) for v in raw):
        return value, ci, None
    names = ("value", "ci_low", "ci_high")
    return (
        out[0],
        (out[1], out[2]),
        {k: (v if math.isfinite(v) else None) for k, v in zip(names, raw, strict=True)},
    )


def n_neighbors_for_reuse(k: int, fraction: float, n: int) -> int:
    """Length ``K`` of the full neighbour lists so that a ``fraction`` subsample
    finds its ``k`` neighbours among them: the number of members among ``K``
    neighbours is Binomial(K, fraction), and ``K`` puts ``k`` 3 s.d. below its mean
    (about 0.1% of the rows then need the exact fallback search)."""
    K = k
    while K * fraction - 3.0 * math.sqrt(K * fraction * (1 - fraction)) < k:
        K += 1
    return min(n - 1, K)


def subsample_indices(
    n: int, m: int, n_subsamples: int, seed: int, device: torch.device
) -> list[torch.Tensor]:
    """``n_subsamples`` sorted index sets of size ``m`` of ``range(n)``, seeded."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randperm(n, generator=g)[:m].sort().values.to(device)
        for _ in range(n_subsamples)
    ]


def neighbor_dist_within(
    X: torch.Tensor,
    dist: torch.Tensor,
    idx: torch.Tensor,
    members: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """Distances ``(m, k)`` from each member to its ``k`` nearest other members.

    ``dist, idx`` are the sorted neighbour lists of all ``n`` rows of ``X``; they are
    reused where they hold at least ``k`` members, and the rest is searched exactly.
    """
    n = X.shape[0]
    m = members.numel()
    in_s = torch.zeros(n, dtype=torch.bool, device=X.device)
    in_s[members] = True
    ok = in_s[idx[members]]  # (m, K)
    # A stable sort of "not a member" moves members first, keeping distance order.
    pos = (~ok).to(torch.int8).sort(dim=1, stable=True).indices[:, :k]
    out = dist[members].gather(1, pos)  # (m, k)
    bad = (ok.sum(dim=1) < k).nonzero().squeeze(1)
    if bad.numel() > m // 10:
        return search(X[members], k)[0]
    if bad.numel():
        out[bad] = _exact_within(X, members, bad, k)
    return out


def _exact_within(
    X: torch.Tensor, members: torch.Tensor, bad: torch.Tensor, k: int
) -> torch.Tensor:
    S = X[members].to(torch.float64)  # (m, D)
    Q = S[bad]  # (b, D)
    d = torch.cdist(Q, S, compute_mode="donot_use_mm_for_euclid_dist")  # (b, m)
    d[torch.arange(bad.numel(), device=X.device), bad] = math.inf
    return d.topk(k, dim=1, largest=False, sorted=True).values


def jackknife_interval(
    theta_hat: float, thetas: list[float], n: int, m: int, level: float
) -> tuple[float, float, float]:
    """``(low, high, se)`` of the delete-d jackknife interval described above."""
    finite = [t for t in thetas if math.isfinite(t)]
    if not math.isfinite(theta_hat) or len(finite) < 2 or m >= n:
        return math.nan, math.nan, math.nan
    B = len(finite)
    mean = sum(finite) / B
    s2 = sum((t - mean) ** 2 for t in finite) / (B - 1)
    se = math.sqrt(m / (n - m) * s2)
    from scipy.special import stdtrit  # Student-t quantile; scipy comes with sklearn

    half = float(stdtrit(B - 1, (1.0 + level) / 2.0)) * se
    return theta_hat - half, theta_hat + half, se


class SubsampledEstimator(ABC):
    """Base of the ID estimators: parameters, their checks, and the interval.

    Subclasses name themselves (``name``, their key in ``contract.estimators``, whose
    parameter model holds their defaults and ranges), store ``n_subsamples``,
    ``subsample_fraction``, ``ci_level``, ``seed`` and their own parameters in
    ``__init__`` (keyword only), and call ``_set_interval`` and ``_finish`` in ``fit``.
    """

    name: ClassVar[str]
    n_subsamples: int
    subsample_fraction: float
    ci_level: float
    seed: int
    dimension_: float
    reason_: str | None
    ci_: tuple[float, float]
    se_: float
    ci_reason_: str | None
    subsample_dimensions_: list[float]
    flags_: list[str]
    unclipped_: dict[str, float | None] | None
    n_samples_: int
    n_duplicates_: int

    @abstractmethod
    def fit(self, X: Any) -> SubsampledEstimator:
        """Supplied by each concrete estimator."""

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their values (scikit-learn style)."""
        names = inspect.signature(type(self).__init__).parameters
        return {p: getattr(self, p) for p in names if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_params(self) -> None:
        """Every parameter but ``seed`` checked against the contract's model."""
        check_int(self.seed, "seed", None)
        params = {k: v for k, v in self.get_params().items() if k != "seed"}
        checked_params("id", self.name, params)

    def _start(self, N: int, own_min: int) -> int | None:
        """Start a fit on ``N`` rows: ``n_samples_``, ``flags_``, and the minimum
        sample count; ``None`` (and a void estimate with its reason) below it."""
        self.n_samples_ = N
        self.flags_ = []
        n_min, reason = sample_floor("id", self.name, own_min, N)
        if n_min > N:
            self._void(reason)
            return None
        return n_min

    def _void(self, reason: str) -> None:
        self.dimension_ = math.nan
        self.unclipped_ = None
        self.reason_ = reason
        self.ci_ = (math.nan, math.nan)
        self.se_ = math.nan
        self.subsample_dimensions_ = []
        self.ci_reason_ = None

    def _finish(self, n: int, D: int) -> None:
        """Flag a fit on ``n`` rows below ``low_samples``, and clip the estimate and
        its interval to ``[0, D]`` (an intrinsic dimension is no larger than the
        ambient width ``D``), flagged ``"clipped"`` with the raw values in
        ``unclipped_``."""
        self.flags_ += sample_flags("id", self.name, n)
        self.dimension_, self.ci_, self.unclipped_ = clip_to(
            self.dimension_, self.ci_, 0.0, float(D)
        )
        if self.unclipped_ is not None:
            self.flags_.append("clipped")

    def _set_interval(
        self,
        theta_hat: float,
        estimate_on: Callable[[torch.Tensor], float],
        n: int,
        n_min: int,
        device: torch.device,
    ) -> None:
        """Set ``ci_``, ``se_``, ``subsample_dimensions_`` and ``ci_reason_``; no
        interval when a subsample would hold fewer than ``n_min`` rows, or fewer
        than 2 subsample estimates are finite."""
        self.ci_ = (math.nan, math.nan)
        self.se_ = math.nan
        self.subsample_dimensions_ = []
        self.ci_reason_ = None
        m = round(self.subsample_fraction * n)
        if self.n_subsamples == 0:
            self.ci_reason_ = "no interval: n_subsamples=0"
            return
        if not math.isfinite(theta_hat):
            self.ci_reason_ = "no interval: the estimate is not finite"
            return
        self.ci_reason_ = subsample_problem(m, n, n_min)
        if self.ci_reason_ is not None:
            return
        members = subsample_indices(n, m, self.n_subsamples, self.seed, device)
        self.subsample_dimensions_ = [estimate_on(s) for s in members]
        low, high, self.se_ = jackknife_interval(
            theta_hat, self.subsample_dimensions_, n, m, self.ci_level
        )
        self.ci_ = (low, high)
        if not math.isfinite(self.se_):
            self.ci_reason_ = "no interval: fewer than 2 finite subsample estimates"


def check_int(value: object, what: str, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{what} must be at least {minimum}, got {value}")
    return value


def as_matrix(X: Any) -> torch.Tensor:
    """``X`` of shape ``(N, ...)`` as a finite real ``(N, D)`` tensor, same device."""
    X = torch.as_tensor(X)
    if X.ndim == 0 or X.shape[0] == 0 or X[0].numel() == 0:
        raise InvalidInputError(
            f"X must have shape (N, ...) with N >= 1 and features, got {tuple(X.shape)}"
        )
    if X.is_complex():
        raise InvalidInputError("X must be real, got a complex tensor")
    if not X.is_floating_point():
        X = X.to(torch.float32)
    X = X.reshape(X.shape[0], -1)  # (N, D)
    if not bool(torch.isfinite(X).all()):
        n_bad = int((~torch.isfinite(X)).sum())
        raise DataError(
            f"X holds {n_bad} NaN or infinite values; remove or impute them first"
        )
    return X
