"""Exact k-nearest-neighbour search over the rows of a tensor, tiled.

The search runs on the input's device and holds one ``(chunk, chunk)`` tile
(Euclidean) or one ``(chunk, N)`` block (Chebyshev) of scores at a time, plus
``O(N)`` candidate lists: memory is ``O(N * chunk)`` on top of the input, never
``O(N^2)``.
"""

from __future__ import annotations

import math

import torch

from analysis.errors import InvalidInputError

__all__ = ["METRICS", "knn"]

METRICS: tuple[str, ...] = ("euclidean", "chebyshev")

# Bytes of one (chunk, N) block of Chebyshev distances.
_BLOCK_BYTES = 256 * 2**20
# Rows (and columns) of one square tile of Euclidean scores: 64 MB in float32. With
# N = 20000 the upper-triangle tiles are 60% of the full product, and rows of 4096
# are long enough for the two-stage selection of short candidate lists.
_TILE = 4096
# Bytes of the float64 (rows, candidates, D) operand of the exact recheck. The
# recheck is memory-bound; batched cdist on a few-MB block (no materialised
# differences) measured 1.6-3.5x faster than difference-square-sum on 32 MB blocks.
_RECHECK_BYTES = 4 * 2**20


def knn(
    X: torch.Tensor,
    k: int,
    *,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other rows of every row of ``X``.

    A point is never its own neighbour (it is excluded by index); an identical other
    row is a neighbour at distance 0.

    ``"euclidean"``: the squared distances ``||a||^2 + ||b||^2 - 2 a.b`` are
    computed in float32 by one GEMM per square tile of ``chunk_size`` rows by
    ``chunk_size`` columns, on centred data (which shrinks the cancellation error).
    The matrix is symmetric, so only tiles on and above the diagonal are computed
    (about half the product); each serves the candidate lists of its rows and of its
    columns. Every row keeps ``k`` plus a few spare candidates; their distances are
    then recomputed exactly in float64 from the differences ``a - b`` and re-sorted.
    Distances are therefore exact (an identical row gives exactly 0), and the
    neighbours are the true ones unless more than the spare candidates lie within
    float32 rounding of the k-th distance; then a neighbour may be swapped for one
    whose distance differs by float32 rounding.
    ``"chebyshev"`` (max-norm, for the KSG mutual-information estimator):
    ``torch.cdist(p=inf)`` per block of ``chunk_size`` query rows against all rows, in
    float64, exact as it is (no cancellation).

    Ties are broken by the lower index among the candidates that were rechecked.

    Parameters
    ----------
    X : tensor of shape ``(N, D)``, any real dtype, on any device; finite.
    k : number of neighbours, ``1 <= k <= N - 1``.
    metric : ``"euclidean"`` or ``"chebyshev"``.
    chunk_size : side of a square tile for ``"euclidean"`` (default 4096, a 64 MB
        float32 tile); query rows per ``(chunk_size, N)`` block for ``"chebyshev"``
        (default: the block takes about 256 MB).

    Returns
    -------
    dist : float64 tensor of shape ``(N, k)``, ascending along each row.
    idx : int64 tensor of shape ``(N, k)``, the row indices of the neighbours.

    Raises
    ------
    InvalidInputError : ``X`` not 2-d or not finite, ``k`` out of range, unknown
        metric, ``chunk_size < 1``.

    Example
    -------
    >>> X = torch.tensor([[0.0], [1.0], [3.0]])
    >>> dist, idx = knn(X, 1)
    >>> dist.squeeze(1).tolist(), idx.squeeze(1).tolist()
    ([1.0, 1.0, 2.0], [1, 0, 1])
    """
    _validate(X, k, metric, chunk_size)
    return search(X, k, metric=metric, chunk_size=chunk_size)


def search(
    X: torch.Tensor,
    k: int,
    *,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``knn`` without the argument checks, for callers that made them already."""
    N = X.shape[0]
    if metric == "euclidean":
        return _knn_euclidean(X, k, min(chunk_size or _TILE, N))
    chunk = chunk_size or max(1, _BLOCK_BYTES // (8 * N))
    return _knn_chebyshev(X, k, min(chunk, N))


def _validate(X: torch.Tensor, k: int, metric: str, chunk_size: int | None) -> None:
    if not isinstance(X, torch.Tensor) or X.ndim != 2:
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise InvalidInputError(
            f"knn needs a 2-d tensor of shape (N, D), got {shape}; "
            "flatten the sample dimensions first"
        )
    if X.is_complex():
        raise InvalidInputError("knn needs a real tensor, got a complex one")
    if metric not in METRICS:
        raise InvalidInputError(
            f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}"
        )
    N = X.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= N - 1:
        raise InvalidInputError(
            f"k must be an integer with 1 <= k <= N - 1 = {N - 1} for N = {N} rows, "
            f"got {k!r}; pass a smaller k or more rows"
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise InvalidInputError(
            f"chunk_size must be a positive integer or None, got {chunk_size!r}"
        )
    if X.is_floating_point() and not bool(torch.isfinite(X).all()):
        raise InvalidInputError(
            "X holds NaN or infinite values; remove or impute them before the "
            "neighbour search"
        )


def _n_spare(k: int) -> int:
    # Spare candidates against float32 rounding of the Gram form.
    return max(4, math.ceil(0.25 * k))


def _knn_euclidean(
    X: torch.Tensor, k: int, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    N = X.shape[0]
    n_cand = min(N - 1, k + _n_spare(k))
    # Centring leaves distances unchanged and shrinks ||a||^2 + ||b||^2, the scale
    # of the float32 cancellation error of the Gram form.
    mean = X.mean(dim=0, dtype=torch.float64)  # (D,)
    Xc = X.to(torch.float32) - mean.to(torch.float32)  # (N, D)
    sq = (Xc * Xc).sum(dim=1, keepdim=True)  # (N, 1)
    one = torch.ones_like(sq)
    # [a, ||a||^2, 1] . [-2 b, 1, ||b||^2] = ||a - b||^2, written by the GEMM itself.
    A = torch.cat([Xc, sq, one], dim=1)  # (N, D+2)
    Bt = torch.cat([-2.0 * Xc, one, sq], dim=1).T.contiguous()  # (D+2, N)
    del Xc, sq, one
    cand_d = torch.full((N, n_cand), math.inf, device=X.device)  # float32
    cand_i = torch.zeros(N, n_cand, dtype=torch.int64, device=X.device)
    buf = torch.empty(tile, tile, device=X.device)
    # The squared distances are symmetric: compute tiles (I, J) with J >= I only,
    # and let each serve the rows of I (along its rows) and of J (along its columns).
    for s in range(0, N, tile):
        e = min(s + tile, N)
        for t in range(s, N, tile):
            f = min(t + tile, N)
            G = torch.mm(A[s:e], Bt[:, t:f], out=buf[: e - s, : f - t])
            if s == t:
                G.fill_diagonal_(math.inf)  # a point is not its own neighbour
            _merge(cand_d, cand_i, s, G, t, columns=False)
            if t != s:
                _merge(cand_d, cand_i, t, G, s, columns=True)
    del buf, cand_d
    dist = torch.empty(N, k, dtype=torch.float64, device=X.device)
    idx = torch.empty(N, k, dtype=torch.int64, device=X.device)
    for s in range(0, N, tile):
        rows = torch.arange(s, min(s + tile, N), device=X.device)
        cand = cand_i[s : s + tile]
        d, j = _sort_by_dist_then_index(_exact_dist(X, rows, cand), cand)
        dist[s : s + tile] = d[:, :k]
        idx[s : s + tile] = j[:, :k]
    return dist, idx


def _merge(
    cand_d: torch.Tensor,
    cand_i: torch.Tensor,
    r0: int,
    G: torch.Tensor,
    c0: int,
    *,
    columns: bool,
) -> None:
    """Merge the smallest entries of each row of ``G`` (or of each column, without
    transposing it) into the candidate lists of rows ``r0...``; ``c0`` is the
    global index of ``G``'s first column (first row when ``columns``)."""
    n = cand_d.shape[1]
    if columns:
        pos = _smallest_in_columns(G, min(n, G.shape[0]))  # (c, n) row positions
        vals = G.T.gather(1, pos)
    else:
        pos = _smallest(G, min(n, G.shape[1]))  # (r, n) column positions
        vals = G.gather(1, pos)
    r1 = r0 + pos.shape[0]
    d = torch.cat([cand_d[r0:r1], vals], dim=1)
    i = torch.cat([cand_i[r0:r1], pos + c0], dim=1)
    keep = d.topk(n, dim=1, largest=False, sorted=False).indices
    cand_d[r0:r1] = d.gather(1, keep)
    cand_i[r0:r1] = i.gather(1, keep)


_BLOCK = 32  # columns per block of the two-stage selection


def _smallest(score: torch.Tensor, n: int) -> torch.Tensor:
    """Column indices ``(c, n)`` of the ``n`` smallest entries of each row.

    Two stages when rows are long: the ``n`` smallest entries of a row lie in the
    ``n`` blocks of 32 columns with the smallest minima (a block holding one of them
    has its minimum among the ``n`` smallest values, and each such minimum is a
    distinct entry), so a ``topk`` over the block minima and one inside those ``n``
    blocks give the same values as a ``topk`` over the row (ties may pick other,
    equal entries), 2-2.5x faster for short lists.
    """
    c, N = score.shape
    nb = N // _BLOCK
    if nb < 16 * n:
        return score.topk(n, dim=1, largest=False, sorted=False).indices
    block_min = score[:, : nb * _BLOCK].view(c, nb, _BLOCK).amin(dim=2)  # (c, nb)
    blocks = block_min.topk(n, dim=1, largest=False, sorted=False).indices
    offsets = torch.arange(_BLOCK, device=score.device)
    cols = (blocks.unsqueeze(2) * _BLOCK + offsets).reshape(c, n * _BLOCK)
    if nb * _BLOCK < N:  # the tail columns, fewer than a block, always compete
        tail = torch.arange(nb * _BLOCK, N, device=score.device).expand(c, -1)
        cols = torch.cat([cols, tail], dim=1)
    pick = score.gather(1, cols).topk(n, dim=1, largest=False, sorted=False).indices
    return cols.gather(1, pick)


def _smallest_in_columns(G: torch.Tensor, n: int) -> torch.Tensor:
    """Row indices ``(c, n)`` of the ``n`` smallest entries of each column of ``G``.

    ``_smallest`` along the other axis: the block minima are reduced over row blocks,
    which reads ``G`` once in its own (row-major) order; only the ``n`` chosen row
    blocks of each column are then read across rows.
    """
    r, c = G.shape
    nb = r // _BLOCK
    if nb < 4 * n:  # long lists: a transposed copy beats topk(dim=0) and blocks
        return G.T.contiguous().topk(n, dim=1, largest=False, sorted=False).indices
    block_min = G[: nb * _BLOCK].view(nb, _BLOCK, c).amin(dim=1)  # (nb, c)
    blocks = block_min.T.contiguous().topk(n, dim=1, largest=False, sorted=False)
    offsets = torch.arange(_BLOCK, device=G.device)
    rows = (blocks.indices.unsqueeze(2) * _BLOCK + offsets).reshape(c, n * _BLOCK)
    if nb * _BLOCK < r:
        tail = torch.arange(nb * _BLOCK, r, device=G.device).expand(c, -1)
        rows = torch.cat([rows, tail], dim=1)
    pick = G.T.gather(1, rows).topk(n, dim=1, largest=False, sorted=False).indices
    return rows.gather(1, pick)


def _exact_dist(
    X: torch.Tensor, rows: torch.Tensor, cand: torch.Tensor
) -> torch.Tensor:
    """Distances ``||x_rows[i] - x_cand[i, j]||`` in float64, from differences."""
    c, n_cand = cand.shape
    D = X.shape[1]
    step = max(1, _RECHECK_BYTES // (8 * n_cand * D))
    out = torch.empty(c, n_cand, dtype=torch.float64, device=X.device)
    # Reused buffers: a fresh multi-MB block per row costs more in page faults
    # than the arithmetic (1.5x the time at N=2000, D=4096, 80 candidates).
    gathered = torch.empty(step * n_cand, D, dtype=X.dtype, device=X.device)
    b64 = torch.empty(step, n_cand, D, dtype=torch.float64, device=X.device)
    for s in range(0, c, step):
        e = min(s + step, c)
        g = torch.index_select(
            X, 0, cand[s:e].reshape(-1), out=gathered[: (e - s) * n_cand]
        )
        b = b64[: e - s]
        b.view(-1, D).copy_(g)  # (s, n_cand, D) float64, exact
        a = X[rows[s:e]].to(torch.float64).unsqueeze(1)  # (s, 1, D)
        out[s:e] = torch.cdist(
            a, b, compute_mode="donot_use_mm_for_euclid_dist"
        ).squeeze(1)
    return out


def _sort_by_dist_then_index(
    d: torch.Tensor, j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    j, order = j.sort(dim=1)
    d = d.gather(1, order)
    d, order = d.sort(dim=1, stable=True)
    return d, j.gather(1, order)


def _knn_chebyshev(
    X: torch.Tensor, k: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    N = X.shape[0]
    # float64 differences of float32 inputs are exact; the max-norm has no
    # cancellation, so no recheck is needed.
    X64 = X.to(torch.float64)  # (N, D)
    dist = torch.empty(N, k, dtype=torch.float64, device=X.device)
    idx = torch.empty(N, k, dtype=torch.int64, device=X.device)
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        rows = torch.arange(start, stop, device=X.device)
        block = torch.cdist(X64[start:stop], X64, p=math.inf)  # (c, N)
        block[rows - start, rows] = math.inf
        d, j = block.topk(k, dim=1, largest=False, sorted=True)
        d, j = _sort_by_dist_then_index(d, j)
        dist[start:stop] = d
        idx[start:stop] = j
    return dist, idx
