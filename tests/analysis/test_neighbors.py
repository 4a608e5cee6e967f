"""Chunked kNN against brute force (float64 differences, full sort)."""

import math

import pytest
import torch

from analysis.errors import InvalidInputError
from analysis.neighbors import _smallest, _smallest_in_columns, knn

P = {"euclidean": 2.0, "chebyshev": math.inf}


def brute(X: torch.Tensor, k: int, metric: str, rows: int = 1000):
    X64 = X.double()
    out_d, out_i = [], []
    for s in range(0, len(X), rows):
        # Differences, not the Gram form: float64 cdist with mm is not exact enough.
        Dm = torch.cdist(
            X64[s : s + rows],
            X64,
            p=P[metric],
            compute_mode="donot_use_mm_for_euclid_dist",
        )
        r = torch.arange(Dm.shape[0])
        Dm[r, r + s] = math.inf
        d, i = Dm.sort(dim=1, stable=True)  # ties by lower index
        out_d.append(d[:, :k])
        out_i.append(i[:, :k])
    return torch.cat(out_d), torch.cat(out_i)


def pair_dist(X, idx, metric):
    X64 = X.double()
    diff = X64[idx] - X64.unsqueeze(1)  # (N, k, D)
    if metric == "euclidean":
        return diff.norm(dim=2)
    return diff.abs().amax(dim=2)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("chunk_size", [3, 17, None])
def test_equals_brute_force(metric, chunk_size):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(203, 9, generator=g)
    d, i = knn(X, 6, metric=metric, chunk_size=chunk_size)
    bd, bi = brute(X, 6, metric)
    assert d.dtype == torch.float64 and i.dtype == torch.int64
    assert d.shape == i.shape == (203, 6)
    torch.testing.assert_close(d, bd, rtol=1e-12, atol=0)
    assert torch.equal(i, bi)  # continuous data: no ties


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
def test_duplicated_rows_count_at_distance_zero(metric):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(120, 5, generator=g)
    X[40:52] = X[3]  # 13 identical rows
    X[60:62] = X[7]  # 3 identical rows
    d, i = knn(X, 4, metric=metric, chunk_size=25)
    bd, _ = brute(X, 4, metric)
    torch.testing.assert_close(d, bd, rtol=1e-12, atol=0)
    # Among ties the indices may differ from brute force; they must be consistent.
    torch.testing.assert_close(pair_dist(X, i, metric), d, rtol=1e-12, atol=0)
    assert not (i == torch.arange(120).unsqueeze(1)).any()  # never itself
    assert int((d[:, 0] == 0).sum()) == 13 + 3
    assert ((d[:, 0] == 0) == (bd[:, 0] == 0)).all()


def test_far_from_origin_and_near_duplicates_stay_exact():
    # ReLU-like data: a large common offset and neighbours 1e-4 apart. The Gram
    # form in float32 alone would be off by ~1e-7 * 1e6; centring plus the float64
    # recheck gives the exact distances.
    g = torch.Generator().manual_seed(2)
    base = torch.rand(300, 16, generator=g, dtype=torch.float64) * 10 + 1000
    X = torch.cat([base, base[:100] + 1e-4]).to(torch.float32)
    d, i = knn(X, 3)
    bd, _ = brute(X, 3, "euclidean")
    torch.testing.assert_close(d, bd, rtol=1e-12, atol=0)
    torch.testing.assert_close(pair_dist(X, i, "euclidean"), d, rtol=1e-12, atol=0)


@pytest.mark.parametrize("N", [3008, 3001])  # a whole number of blocks, and a tail
def test_two_stage_selection_keeps_the_smallest_values(N):
    g = torch.Generator().manual_seed(4)
    for S in (
        torch.randn(30, N, generator=g),
        torch.randint(0, 4, (30, N), generator=g).float(),  # ties everywhere
    ):
        S[:, -1] = -10.0  # the smallest entry sits in the tail when N % 32 != 0
        cols = _smallest(S, 6)
        assert cols.shape == (30, 6) and (cols.sort(1).values.diff(1) > 0).all()
        got = S.gather(1, cols).sort(dim=1).values
        want = S.topk(6, dim=1, largest=False).values.sort(dim=1).values
        assert torch.equal(got, want)


def test_two_stage_selection_along_columns():
    g = torch.Generator().manual_seed(6)
    S = torch.randn(3001, 40, generator=g)
    S[-1] = -10.0  # in the tail rows
    for n in (6, 30):  # blocks, then the transposed fallback
        rows = _smallest_in_columns(S, n)
        assert rows.shape == (40, n)
        got = S.T.gather(1, rows).sort(dim=1).values
        want = S.T.topk(n, dim=1, largest=False).values.sort(dim=1).values
        assert torch.equal(got, want)


def test_tiles_with_every_selection_path_equal_brute_force():
    # Tiles of 3200 (two-stage selection along rows and columns) and a last tile of
    # 600 (plain topk), with duplicated rows across tiles.
    g = torch.Generator().manual_seed(7)
    X = torch.randn(7000, 4, generator=g)
    X[6990:] = X[5]
    d, i = knn(X, 2, chunk_size=3200)
    bd, bi = brute(X, 2, "euclidean")
    torch.testing.assert_close(d, bd, rtol=1e-12, atol=0)
    torch.testing.assert_close(pair_dist(X, i, "euclidean"), d, rtol=1e-12, atol=0)
    distinct = bd[:, 1] > bd[:, 0]
    assert torch.equal(i[distinct, 0], bi[distinct, 0])


def test_long_rows_equal_brute_force():
    # N large enough for the two-stage selection (>= 16 * 6 blocks of 32).
    g = torch.Generator().manual_seed(5)
    X = torch.randn(3001, 6, generator=g)
    d, i = knn(X, 2)
    bd, bi = brute(X, 2, "euclidean")
    torch.testing.assert_close(d, bd, rtol=1e-12, atol=0)
    assert torch.equal(i, bi)


def test_doc_example_and_other_dtypes():
    d, i = knn(torch.tensor([[0.0], [1.0], [3.0]]), 1)
    assert d.squeeze(1).tolist() == [1.0, 1.0, 2.0]
    assert i.squeeze(1).tolist() == [1, 0, 1]
    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    for X_in in (X, X.to(torch.float16)):
        d, _ = knn(X_in, 49)  # k = N - 1: every other row
        torch.testing.assert_close(
            d, brute(X_in, 49, "euclidean")[0], rtol=1e-12, atol=0
        )


@pytest.mark.parametrize(
    ("X", "k", "kwargs", "message"),
    [
        (torch.zeros(10), 1, {}, "2-d tensor"),
        (torch.zeros(10, 2), 10, {}, "N - 1 = 9"),
        (torch.zeros(10, 2), 0, {}, "1 <= k"),
        (torch.zeros(10, 2), 1, {"metric": "cosine"}, "choose one of"),
        (torch.zeros(10, 2), 1, {"chunk_size": 0}, "chunk_size"),
        (torch.tensor([[0.0, 1.0], [math.nan, 0.0]]), 1, {}, "NaN"),
    ],
)
def test_bad_input(X, k, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        knn(X, k, **kwargs)
