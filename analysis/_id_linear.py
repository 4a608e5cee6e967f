"""Linear intrinsic-dimension estimators, from the covariance eigenvalues (private;
public through ``analysis.intrinsic_dimension``)."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch

from analysis._id_uncertainty import SubsampledEstimator, as_matrix, shared
from contract.estimators import ParticipationRatioParams, PCAParams

_PCA, _PR = PCAParams(), ParticipationRatioParams()  # the defaults

# Rows per float64 block when accumulating a D x D covariance.
_BLOCK_BYTES = 64 * 2**20


def covariance_eigenvalues(X: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the sample covariance of ``X`` (N, D), float64, descending.

    From the smaller of the ``D x D`` scatter matrix and the ``N x N`` Gram matrix of
    the centred rows (they share their nonzero eigenvalues). The rows are centred
    first (a large common offset, as after a ReLU, would otherwise cancel; an error
    ``c`` in the rounded mean only adds ``N c c^T``, about 1e-9 relative), then the
    products run in the input's precision, float32 unless it is float64, per row
    block with the blocks summed in float64: float32 products are several times
    faster on CPU and their relative error, about 1e-6 of the largest eigenvalue, is
    far below what a 90% variance count or a participation ratio can see.
    ``eigvalsh`` runs in float64. Negative rounding noise is clipped to 0.
    """
    N, D = X.shape
    if N <= D:
        return _spectrum(_centred_gram(X), N)
    dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    mean = X.mean(dim=0, dtype=torch.float64).to(dtype)  # (D,)
    M = torch.zeros(D, D, dtype=torch.float64, device=X.device)
    step = max(1, _BLOCK_BYTES // (8 * D))
    for s in range(0, N, step):
        B = X[s : s + step].to(dtype) - mean  # (b, D)
        M += (B.T @ B).to(torch.float64)
    return _spectrum(M, N)


def _centred_gram(X: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` float64 Gram matrix of the rows of ``X`` centred on their mean,
    from a product in the input's precision (see ``covariance_eigenvalues``)."""
    dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    Xc = X.to(dtype) - X.mean(dim=0, dtype=torch.float64).to(dtype)  # (N, D)
    return (Xc @ Xc.T).to(torch.float64)


def _subset_gram(K: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """The centred Gram matrix of the rows ``members`` from the centred Gram ``K``
    of all rows: ``H K[s, s] H`` with ``H = I - 1 1^T / m`` (exact algebra; float64
    here, against a float32 product of the rows: the same eigenvalues to 1e-7
    relative, no ``m x m x D`` product per subsample)."""
    Ks = K[members][:, members]  # (m, m)
    r = Ks.mean(dim=1)  # (m,)
    return Ks - r[:, None] - r[None, :] + r.mean()


def _spectrum(M: torch.Tensor, n: int) -> torch.Tensor:
    """Covariance eigenvalues, descending, from the centred Gram or scatter
    matrix ``M`` of ``n`` rows."""
    lam = torch.linalg.eigvalsh(M).flip(0).clamp_min(0.0)
    return lam / max(n - 1, 1)


class _LinearEstimator(SubsampledEstimator):
    @abstractmethod
    def _from_eigenvalues(self, lam: torch.Tensor) -> tuple[float, str | None]:
        """Supplied by each concrete estimator."""

    def _on(
        self,
        X: torch.Tensor,
        members: torch.Tensor | None = None,
        lam: torch.Tensor | None = None,
        gram: torch.Tensor | None = None,
    ) -> tuple[float, str | None]:
        """The estimate on the rows ``members`` of ``X`` (all rows when ``None``),
        from their eigenvalues ``lam`` when given, else from the full set's centred
        Gram matrix ``gram`` when given."""
        if lam is None:
            lam = _eigenvalues(X, members, gram)
        # identical rows centre to exact zeros: no variance, not even rounding
        if float(lam.sum()) == 0.0:
            return math.nan, "all points identical"
        return self._from_eigenvalues(lam)

    def fit(self, X: Any) -> _LinearEstimator:
        self._check_params()
        X = as_matrix(X)  # (N, D)
        N, D = X.shape
        self.n_duplicates_ = 0  # duplicates are ordinary points for a covariance
        # N <= D: every subsample's spectrum comes from the full set's Gram matrix
        gram = shared(X, "gram", lambda: _centred_gram(X)) if N <= D else None
        self.eigenvalues_ = _eigenvalues(X, None, gram)
        n_min = self._start(N, 2)
        if n_min is None:
            return self
        self.dimension_, self.reason_ = self._on(X, lam=self.eigenvalues_)
        self._set_interval(
            self.dimension_, lambda s: self._on(X, s, gram=gram)[0], N, n_min, X.device
        )
        self._finish(N, D)
        return self


def _eigenvalues(
    X: torch.Tensor, members: torch.Tensor | None, gram: torch.Tensor | None
) -> torch.Tensor:
    """``covariance_eigenvalues`` of the rows ``members`` of ``X`` (all when
    ``None``), from the full set's centred Gram matrix when given; computed once
    per ``shared_work`` scope for all linear estimators."""
    if members is None:
        if gram is None:
            return shared(X, ("eig", None), lambda: covariance_eigenvalues(X))
        return shared(X, ("eig", None), lambda: _spectrum(gram, len(X)))
    key = ("eig", members.cpu().numpy().tobytes())
    if gram is None:
        return shared(X, key, lambda: covariance_eigenvalues(X[members]))
    return shared(
        X, key, lambda: _spectrum(_subset_gram(gram, members), members.numel())
    )


class PCADimension(_LinearEstimator):
    """Linear dimension: the fewest principal components that explain ``variance``
    of the total variance (registered as ``"pca90"`` for ``variance=0.9``; Ansuini,
    Laio, Macke & Zoccolan 2019 compare it with TwoNN along deep networks).

    On a d-dimensional linear subspace it is d for any ``variance`` < 1; on curved
    manifolds it counts the dimensions of the enclosing linear span that hold the
    variance (a d-sphere gives d + 1 at 0.9 for small d; a Swiss roll 3).

    Parameters
    ----------
    variance : fraction of the total variance to explain, in (0, 1).
    n_subsamples, subsample_fraction, ci_level, seed : as in ``TwoNN``.

    Attributes
    ----------
    dimension_ : float (an integer count), ``nan`` with ``reason_`` when all points
        are identical.
    eigenvalues_ : float64 tensor, covariance eigenvalues, descending.
    ci_, se_, n_samples_, subsample_dimensions_ : as in ``TwoNN``;
    n_duplicates_ : 0 (duplicates are ordinary points here).

    Example
    -------
    >>> from analysis.manifolds import make_manifold
    >>> X = make_manifold("linear", n=1000, d=5, D=64, seed=0)  # (1000, 64)
    >>> PCADimension(variance=0.9).fit(X).dimension_
    5.0
    """

    name = "pca90"

    def __init__(
        self,
        *,
        variance: float = _PCA.variance,
        n_subsamples: int = _PCA.n_subsamples,
        subsample_fraction: float = _PCA.subsample_fraction,
        ci_level: float = _PCA.ci_level,
        seed: int = 0,
    ) -> None:
        self.variance = variance
        self.n_subsamples = n_subsamples
        self.subsample_fraction = subsample_fraction
        self.ci_level = ci_level
        self.seed = seed

    def _from_eigenvalues(self, lam: torch.Tensor) -> tuple[float, str | None]:
        total = float(lam.sum())
        if total == 0:
            return math.nan, "zero total variance"
        ratio = lam.cumsum(0) / total
        # 1e-12 absorbs rounding when variance is (nearly) reached exactly.
        n = int((ratio < self.variance - 1e-12).sum()) + 1
        return float(min(n, lam.numel())), None


class ParticipationRatio(_LinearEstimator):
    """Participation ratio ``(sum lambda)^2 / sum lambda^2`` of the covariance
    eigenvalues ``lambda`` (Gao, Trautmann, Yu et al. 2017; a soft count of the
    directions that carry variance, between 1 and the rank).

    It equals d for an isotropic d-dimensional distribution (``"gaussian"``,
    ``"sphere"`` in its d + 1 ambient directions gives d + 1); any anisotropy lowers it.

    Parameters
    ----------
    n_subsamples, subsample_fraction, ci_level, seed : as in ``TwoNN``.

    Attributes
    ----------
    dimension_, eigenvalues_, ci_, se_, n_samples_, n_duplicates_,
    subsample_dimensions_ : as in ``PCADimension``.

    Example
    -------
    >>> from analysis.manifolds import make_manifold
    >>> X = make_manifold("gaussian", n=5000, d=4, D=64, seed=0)  # (5000, 64)
    >>> round(ParticipationRatio().fit(X).dimension_)
    4
    """

    name = "participation_ratio"

    def __init__(
        self,
        *,
        n_subsamples: int = _PR.n_subsamples,
        subsample_fraction: float = _PR.subsample_fraction,
        ci_level: float = _PR.ci_level,
        seed: int = 0,
    ) -> None:
        self.n_subsamples = n_subsamples
        self.subsample_fraction = subsample_fraction
        self.ci_level = ci_level
        self.seed = seed

    def _from_eigenvalues(self, lam: torch.Tensor) -> tuple[float, str | None]:
        s2 = float((lam * lam).sum())
        if s2 == 0:
            return math.nan, "zero total variance"
        return float(lam.sum()) ** 2 / s2, None
