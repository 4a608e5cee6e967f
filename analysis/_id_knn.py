"""What TwoNN and MLE share (private; public through
``analysis.intrinsic_dimension``): one neighbour search per fit, identical rows
kept once, the estimate and its interval from the same neighbour lists."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from analysis._id_uncertainty import (
    SubsampledEstimator,
    as_matrix,
    n_neighbors_for_reuse,
    neighbor_dist_within,
    shared,
    shared_knn_length,
)
from analysis.neighbors import search


def _distinct(X: torch.Tensor) -> tuple[int, int]:
    """Distinct rows of ``X`` and rows with an identical other row."""
    # "+ 0.0" turns -0.0 into 0.0 so that unique() sees them as equal.
    counts = torch.unique(X + 0.0, dim=0, return_counts=True)[1]
    return counts.numel(), int(counts[counts > 1].sum())


class _KNNEstimator(SubsampledEstimator):
    """Shared ``fit`` of TwoNN and MLE: kNN once, duplicates out, estimate, CI."""

    @abstractmethod
    def _n_neighbors(self) -> int:
        """Supplied by each concrete estimator."""

    @abstractmethod
    def _min_samples(self) -> int:
        """Supplied by each concrete estimator."""

    @abstractmethod
    def _estimate(self, dist: torch.Tensor, store: bool) -> tuple[float, str | None]:
        """Supplied by each concrete estimator."""

    def search_length(self, N: int) -> int:
        """Length of the neighbour lists that ``fit`` searches on ``N`` rows."""
        k = self._n_neighbors()
        if not self.n_subsamples:
            return min(k, N - 1)
        return n_neighbors_for_reuse(k, self.subsample_fraction, N)

    def fit(self, X: Any) -> _KNNEstimator:
        self._check_params()
        X = as_matrix(X)  # (N, D)
        N, D = X.shape
        k = self._n_neighbors()
        n_min = self._start(N, self._min_samples())
        if n_min is None:
            self.n_unique_, self.n_duplicates_ = _distinct(X)
            return self
        K = self.search_length(N)
        K_s = min(N - 1, shared_knn_length(K))
        X, self.n_duplicates_, dist, idx = shared(
            X, ("knn", K_s), lambda: _distinct_neighbors(X, K_s)
        )
        n = self.n_unique_ = X.shape[0]
        if n < n_min:
            self._void(
                "all points identical"
                if n == 1
                else f"only {n} distinct points of {N}; {self.name} needs at least "
                f"{n_min}"
            )
            return self
        # An exact sorted list searched longer holds the shorter one as its prefix.
        dist, idx = dist[:, : min(K, n - 1)], idx[:, : min(K, n - 1)]
        self.dimension_, self.reason_ = self._estimate(dist[:, :k], store=True)

        def estimate_on(members: torch.Tensor) -> float:
            return self._estimate(
                neighbor_dist_within(X, dist, idx, members, k), store=False
            )[0]

        self._set_interval(self.dimension_, estimate_on, n, n_min, X.device)
        self._finish(n, D)
        return self


def _distinct_neighbors(
    X: torch.Tensor, K: int
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """``X`` (N, D) with each group of identical rows kept once (n, D), the number
    of rows that had an identical other, and the sorted ``min(K, n - 1)``-nearest
    lists ``dist, idx`` (n, .) of the distinct rows (empty when ``n == 1``)."""
    dist, idx = search(X, K)
    zero = dist[:, 0] == 0
    n_duplicates = int(zero.sum())
    if n_duplicates:
        # "+ 0.0" turns -0.0 into 0.0 so that unique() sees them as equal.
        X = torch.cat([X[~zero], torch.unique(X[zero] + 0.0, dim=0)])
        n = X.shape[0]
        if n == 1:
            return X, n_duplicates, dist[:1, :0], idx[:1, :0]
        dist, idx = search(X, min(K, n - 1))
    return X, n_duplicates, dist, idx
