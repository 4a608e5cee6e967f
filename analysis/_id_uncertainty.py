"""Subsampling uncertainty for the intrinsic-dimension estimators (private).

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
the estimator's bias (TwoNN and MLE read low for d above about 5).

For the kNN estimators the neighbours of a subsample are not those of the full set;
they are taken exactly from the full set's neighbour lists (the first neighbours that
belong to the subsample), which were searched long enough for that, and searched
again only for the few points whose lists run out.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from analysis.errors import DataError, InvalidInputError
from analysis.neighbors import search


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

    Subclasses store ``n_subsamples``, ``subsample_fraction``, ``ci_level`` and
    ``seed`` in ``__init__`` (keyword only) and call ``_set_interval`` in ``fit``.
    """

    n_subsamples: int
    subsample_fraction: float
    ci_level: float
    seed: int
    dimension_: float
    reason_: str | None
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

    def _check_subsampling(self) -> None:
        check_int(self.n_subsamples, "n_subsamples", 0)
        check_int(self.seed, "seed", None)
        check_open_unit(self.subsample_fraction, "subsample_fraction")
        check_open_unit(self.ci_level, "ci_level")
        if self.n_subsamples == 1:
            raise InvalidInputError(
                "n_subsamples=1 cannot give a spread: pass 0 (no interval) or >= 2"
            )

    def _set_interval(
        self,
        theta_hat: float,
        estimate_on: Callable[[torch.Tensor], float],
        n: int,
        n_min: int,
        device: torch.device,
    ) -> None:
        """Set ``ci_``, ``se_``, ``subsample_dimensions_`` and ``ci_reason_``."""
        self.ci_: tuple[float, float] = (math.nan, math.nan)
        self.se_ = math.nan
        self.subsample_dimensions_: list[float] = []
        self.ci_reason_: str | None = None
        m = round(self.subsample_fraction * n)
        if self.n_subsamples == 0:
            self.ci_reason_ = "no interval: n_subsamples=0"
            return
        if not math.isfinite(theta_hat):
            self.ci_reason_ = "no interval: the estimate is not finite"
            return
        if m < n_min or m >= n:
            self.ci_reason_ = (
                f"no interval: a subsample of {m} of {n} points is outside "
                f"[{n_min}, {n - 1}]; pass more points or another subsample_fraction"
            )
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


def check_open_unit(value: object, what: str, *, closed_low: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (0.0 <= v < 1.0 if closed_low else 0.0 < v < 1.0):
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise InvalidInputError(f"{what} must be a number in {interval}, got {value!r}")
    return v


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
