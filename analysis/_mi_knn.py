"""k-nearest-neighbour mutual-information estimators (private; public through
``analysis.mutual_information``): KSG for two continuous variables and Ross's
estimator for a continuous and a discrete one."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.special import digamma

from analysis.neighbors import search

# Bytes of one (chunk, N) float64 block of max-norm distances, for the neighbour
# search and the counts. Small blocks are read back while still in cache: counting
# at N=20000 took 3.0 s with 8 MB blocks, 4.2 s with 32 MB, 7.0 s with 128 MB (one
# thread); the search 5.7 s with 8 MB against 7.2 s with knn's default 256 MB.
_BLOCK_BYTES = 8 * 2**20
# Widest space (joint for KSG, X for Ross) searched with a KD-tree instead of the
# exact blockwise scan, on the CPU. Both give the same distances and counts (the
# max-norm of float64 differences is exact either way); the tree wins at low width:
# at N=5000 it took 0.06 s against 0.62 s for the search at D=1 and 0.30 s against
# 1.07 s at D=10 (5+5), and lost at D=50 (one thread, busy machine).
TREE_MAX_DIM = 16
# Largest (N, N) float64 matrix of X's distances that KSG keeps for later calls (an
# MIMemo): at N=2000 it is 32 MB and saves half the scan's distances for every
# layer of an analysis and every subsample of its interval.
DX_KEEP_BYTES = 64 * 2**20


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
    X: torch.Tensor,
    Y: torch.Tensor,
    k: int,
    chunk_size: int | None = None,
    dx: torch.Tensor | None = None,
) -> float:
    """KSG estimator 1 (Kraskov, Stoegbauer & Grassberger 2004, eq. 8) in nats.

    ``eps_i`` is the max-norm distance from ``z_i = (x_i, y_i)`` to its ``k``-th
    nearest neighbour in the joint space; ``n_x(i)`` (``n_y(i)``) counts the other
    points whose marginal max-norm distance is strictly below ``eps_i``;
    ``I = psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>``. ``X`` (N, Dx) and
    ``Y`` (N, Dy) float64; rows of the joint space distinct (``eps_i > 0``).

    On the CPU with ``Dx + Dy <= TREE_MAX_DIM`` the search and the counts go
    through KD-trees; otherwise one blockwise scan computes the marginal distances
    of a block of rows once and takes the joint ones as their maximum
    (``||z_i - z_j|| = max(||x_i - x_j||, ||y_i - y_j||)``), so that ``eps``, ``n_x``
    and ``n_y`` come from the same two blocks. Same values either way. ``dx``: the
    ``(N, N)`` max-norm distances of ``X``'s rows (``scans_x``), read instead of
    computed by the scan.
    """
    N = X.shape[0]
    if _use_tree(X, X.shape[1] + Y.shape[1]):
        n_x, n_y = _ksg_counts_tree(X, Y, k)
    else:
        n_x, n_y = _ksg_counts_scan(X, Y, k, _chunk(N, chunk_size), dx)
    mean_x = float(digamma(n_x.to(torch.float64) + 1).mean())
    mean_y = float(digamma(n_y.to(torch.float64) + 1).mean())
    return _psi(k) + _psi(N) - mean_x - mean_y


def _use_tree(A: torch.Tensor, width: int) -> bool:
    return A.device.type == "cpu" and width <= TREE_MAX_DIM


def scans_x(X: torch.Tensor, Y: torch.Tensor) -> bool:
    """Whether ``ksg(X, Y)`` scans the distances of ``X``'s rows (no KD-tree), and
    their ``(N, N)`` matrix is small enough to keep (``DX_KEEP_BYTES``)."""
    small = 8 * X.shape[0] ** 2 <= DX_KEEP_BYTES
    return small and not _use_tree(X, X.shape[1] + Y.shape[1])


def max_norm_distances(A: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` float64 max-norm distances of the rows of ``A`` (N, D); the same
    values as the scan's blocks (each pair's distance is exact)."""
    A64 = A.to(torch.float64)
    return torch.cdist(A64, A64, p=math.inf)


def _ksg_counts_scan(
    X: torch.Tensor, Y: torch.Tensor, k: int, step: int, dx_all: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    N = X.shape[0]
    X64, Y64 = X.to(torch.float64), Y.to(torch.float64)  # (N, Dx), (N, Dy)
    n_x = torch.empty(N, dtype=torch.int64, device=X.device)
    n_y = torch.empty(N, dtype=torch.int64, device=X.device)
    for s in range(0, N, step):
        e = min(s + step, N)
        rows = torch.arange(s, e, device=X.device)
        dx = (  # (c, N)
            torch.cdist(X64[s:e], X64, p=math.inf) if dx_all is None else dx_all[s:e]
        ).clone()
        dy = torch.cdist(Y64[s:e], Y64, p=math.inf)  # (c, N)
        dx[rows - s, rows] = math.inf  # not one's own neighbour
        dy[rows - s, rows] = math.inf
        dz = torch.maximum(dx, dy)  # (c, N) joint max-norm
        eps = dz.topk(k, dim=1, largest=False).values[:, -1:]  # (c, 1)
        n_x[s:e] = (dx < eps).sum(dim=1, dtype=torch.int32)
        n_y[s:e] = (dy < eps).sum(dim=1, dtype=torch.int32)
    return n_x, n_y


def _ksg_counts_tree(
    X: torch.Tensor, Y: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.neighbors import KDTree

    x = X.to(torch.float64).numpy()  # (N, Dx)
    y = Y.to(torch.float64).numpy()  # (N, Dy)
    z = np.concatenate([x, y], axis=1)  # (N, Dx + Dy)
    # k + 1: the point itself comes back at distance 0; the (k+1)-th distance of
    # all points is the k-th of the others whatever the order of ties.
    eps = KDTree(z, metric="chebyshev").query(z, k=k + 1)[0][:, -1]  # (N,)
    below = np.nextafter(eps, 0.0)  # d <= below  <=>  d < eps
    return _count_tree(x, below), _count_tree(y, below)


def _count_tree(a: np.ndarray, radius: np.ndarray) -> torch.Tensor:
    """Other rows of ``a`` within ``radius`` (``<=``) of each row, by a KD-tree."""
    from sklearn.neighbors import KDTree

    counts = KDTree(a, metric="chebyshev").query_radius(a, radius, count_only=True)
    return torch.from_numpy(counts.astype(np.int64) - 1)  # minus the point itself


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
    tree = _use_tree(X, X.shape[1])
    for c in range(classes.numel()):
        members = (inverse == c).nonzero().squeeze(1)
        n_c = members.numel()
        if n_c < 2:
            continue
        k_c = min(k, n_c - 1)
        d[members] = _kth_distance(X[members], k_c, tree, _chunk(n_c, chunk_size))
        k_i[members] = k_c
        N_c[members] = n_c
    if tree:
        m = _count_tree(X.to(torch.float64).numpy(), d.numpy()).to(torch.float64)
    else:
        m = count_within(X, d, strict=False, chunk_size=chunk_size).to(torch.float64)
    value = (
        _psi(N)
        - float(digamma(N_c).mean())
        + float(digamma(k_i).mean())
        - float(digamma(m).mean())
    )
    return value, n_out


def _kth_distance(A: torch.Tensor, k: int, tree: bool, chunk: int) -> torch.Tensor:
    """Max-norm distance of every row of ``A`` to its ``k``-th nearest other row."""
    if tree:
        from sklearn.neighbors import KDTree

        a = A.to(torch.float64).numpy()  # (n, D)
        dist = KDTree(a, metric="chebyshev").query(a, k=k + 1)[0][:, -1]
        return torch.from_numpy(np.ascontiguousarray(dist))
    return search(A, k, metric="chebyshev", chunk_size=chunk)[0][:, -1]


def _psi(x: float) -> float:
    return float(digamma(torch.tensor(float(x), dtype=torch.float64)))
