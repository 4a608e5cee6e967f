"""k-nearest-neighbour mutual-information estimators (private; public through
``analysis.mutual_information``): KSG for two continuous variables and Ross's
estimator for a continuous and a discrete one."""

from __future__ import annotations

import math

import torch
from torch.special import digamma

from analysis.neighbors import search

# Bytes of one (chunk, N) float64 block of max-norm distances, for the neighbour
# search and the counts. Small blocks are read back while still in cache: counting
# at N=20000 took 3.0 s with 8 MB blocks, 4.2 s with 32 MB, 7.0 s with 128 MB (one
# thread); the search 5.7 s with 8 MB against 7.2 s with knn's default 256 MB.
_BLOCK_BYTES = 8 * 2**20


def _chunk(N: int, chunk_size: int | None) -> int:
    return min(N, chunk_size or max(1, _BLOCK_BYTES // (8 * N)))


def count_within(
    A: torch.Tensor,
    radius: torch.Tensor,
    *,
    strict: bool,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """For every row ``i`` of ``A`` (N, D), the number of OTHER rows ``j`` with
    ``||a_i - a_j||_inf < radius_i`` (``<=`` unless ``strict``), int64 ``(N,)``.

    Holds one ``(chunk, N)`` float64 block of distances at a time."""
    N = A.shape[0]
    A64 = A.to(torch.float64)  # (N, D)
    out = torch.empty(N, dtype=torch.int64, device=A.device)
    step = _chunk(N, chunk_size)
    for s in range(0, N, step):
        e = min(s + step, N)
        rows = torch.arange(s, e, device=A.device)
        block = torch.cdist(A64[s:e], A64, p=math.inf)  # (c, N)
        block[rows - s, rows] = math.inf  # not one's own neighbour
        r = radius[s:e, None]
        out[s:e] = (block < r if strict else block <= r).sum(dim=1, dtype=torch.int32)
    return out


def ksg(
    X: torch.Tensor, Y: torch.Tensor, k: int, chunk_size: int | None = None
) -> float:
    """KSG estimator 1 (Kraskov, Stoegbauer & Grassberger 2004, eq. 8) in nats.

    ``eps_i`` is the max-norm distance from ``z_i = (x_i, y_i)`` to its ``k``-th
    nearest neighbour in the joint space; ``n_x(i)`` (``n_y(i)``) counts the other
    points whose marginal max-norm distance is strictly below ``eps_i``;
    ``I = psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>``. ``X`` (N, Dx) and
    ``Y`` (N, Dy) float64; rows of the joint space distinct (``eps_i > 0``).
    """
    N = X.shape[0]
    Z = torch.cat([X, Y], dim=1)  # (N, Dx + Dy)
    chunk = _chunk(N, chunk_size)
    eps = search(Z, k, metric="chebyshev", chunk_size=chunk)[0][:, -1]  # (N,)
    n_x = count_within(X, eps, strict=True, chunk_size=chunk_size)
    n_y = count_within(Y, eps, strict=True, chunk_size=chunk_size)
    mean_x = float(digamma(n_x.to(torch.float64) + 1).mean())
    mean_y = float(digamma(n_y.to(torch.float64) + 1).mean())
    return _psi(k) + _psi(N) - mean_x - mean_y


def ross(
    X: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int | None = None
) -> tuple[float, int]:
    """Mixed discrete-continuous estimator of Ross (2014, PLoS ONE 9(2): e87357,
    eq. 2) in nats, and the number of points left out.

    For point ``i`` of class ``c`` (``N_c`` points), ``d_i`` is the max-norm
    distance to its ``k_c``-th nearest neighbour within its class, with
    ``k_c = min(k, N_c - 1)`` (as scikit-learn's ``mutual_info_classif`` does), and
    ``m_i`` counts the other points of any class within ``d_i`` (``<=``, so
    ``m_i >= k_c``). ``I = psi(N) - <psi(N_c)> + <psi(k_c)> - <psi(m_i)>`` over the
    points of classes with at least 2 members; points of single-member classes are
    left out (and out of ``N``). ``X`` (N, Dx) float64, ``labels`` (N,) int64.
    """
    classes, inverse, counts = torch.unique(
        labels, return_inverse=True, return_counts=True
    )
    keep = counts[inverse] >= 2  # (N,)
    n_out = int((~keep).sum())
    X, inverse = X[keep], inverse[keep]
    N = X.shape[0]
    if N == 0:
        return math.nan, n_out
    d = torch.empty(N, dtype=torch.float64, device=X.device)
    k_i = torch.empty(N, dtype=torch.float64, device=X.device)
    N_c = torch.empty(N, dtype=torch.float64, device=X.device)
    for c in range(classes.numel()):
        members = (inverse == c).nonzero().squeeze(1)
        n_c = members.numel()
        if n_c < 2:
            continue
        k_c = min(k, n_c - 1)
        chunk = _chunk(n_c, chunk_size)
        dist = search(X[members], k_c, metric="chebyshev", chunk_size=chunk)[0]
        d[members] = dist[:, -1]
        k_i[members] = k_c
        N_c[members] = n_c
    m = count_within(X, d, strict=False, chunk_size=chunk_size).to(torch.float64)
    value = (
        _psi(N)
        - float(digamma(N_c).mean())
        + float(digamma(k_i).mean())
        - float(digamma(m).mean())
    )
    return value, n_out


def _psi(x: float) -> float:
    return float(digamma(torch.tensor(float(x), dtype=torch.float64)))
