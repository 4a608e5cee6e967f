"""The KSG and Ross estimators give the same value on every path: KD-tree (low
width, CPU), one blockwise scan of the marginal distances, and the reference
written out from the neighbour search and the counts of the definition."""

import math

import pytest
import torch
from torch.special import digamma

from analysis import _mi_knn
from analysis._mi_knn import count_within, ksg, ross
from analysis.neighbors import search


def psi(x):
    return float(digamma(torch.tensor(float(x), dtype=torch.float64)))


def reference_ksg(X, Y, k):
    """Eq. 8 of Kraskov et al. 2004, straight from the definition."""
    N = X.shape[0]
    eps = search(torch.cat([X, Y], 1), k, metric="chebyshev")[0][:, -1]
    n_x = count_within(X, eps, strict=True).double()
    n_y = count_within(Y, eps, strict=True).double()
    return psi(k) + psi(N) - float(digamma(n_x + 1).mean() + digamma(n_y + 1).mean())


def correlated(n, dx, dy, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, dx, generator=g, dtype=torch.float64)
    Y = 0.7 * X[:, :1].expand(n, dy) + torch.randn(n, dy, generator=g).double()
    return X, Y


@pytest.mark.parametrize("tree_max_dim", [0, 64])  # scan everywhere, tree everywhere
@pytest.mark.parametrize(("dx", "dy"), [(1, 1), (3, 2), (8, 8)])
def test_ksg_paths_equal_the_definition(monkeypatch, tree_max_dim, dx, dy):
    # seed 0, N = 400, k = 3: every path finds the same neighbours and counts, so
    # the values agree to rounding of the digamma means (1e-12).
    monkeypatch.setattr(_mi_knn, "TREE_MAX_DIM", tree_max_dim)
    X, Y = correlated(400, dx, dy, 0)
    want = reference_ksg(X, Y, 3)
    assert ksg(X, Y, 3) == pytest.approx(want, abs=1e-12)
    assert ksg(X, Y, 3, chunk_size=37) == pytest.approx(want, abs=1e-12)
    assert want > 0.05  # correlated: a count error would move it visibly


def test_ksg_counts_ties_strictly_on_both_paths(monkeypatch):
    # Integer grid points: many distances equal eps exactly, so "< eps" against
    # "<= eps" changes the counts; both paths must count strictly.
    g = torch.Generator().manual_seed(1)
    X = torch.randint(0, 6, (300, 2), generator=g).double()
    Y = X[:, :1] + torch.randint(0, 3, (300, 1), generator=g).double()
    X = X + 1e-3 * torch.arange(300, dtype=torch.float64)[:, None]  # distinct rows
    want = reference_ksg(X, Y, 3)
    got = []
    for tree_max_dim in (0, 64):
        monkeypatch.setattr(_mi_knn, "TREE_MAX_DIM", tree_max_dim)
        got.append(ksg(X, Y, 3))
    assert got == pytest.approx([want, want], abs=1e-12)


@pytest.mark.parametrize("dx", [1, 4])
def test_ross_paths_agree(monkeypatch, dx):
    # seed 2, N = 500, 4 classes and one single-member class left out.
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (500,), generator=g)
    labels[0] = 9
    X = labels[:, None].double() + torch.randn(500, dx, generator=g).double()
    values = []
    for tree_max_dim in (0, 64):
        monkeypatch.setattr(_mi_knn, "TREE_MAX_DIM", tree_max_dim)
        values.append(ross(X, labels, 3))
    (v_scan, out_scan), (v_tree, out_tree) = values
    assert out_scan == out_tree == 1
    assert v_tree == pytest.approx(v_scan, abs=1e-12)
    assert 0.3 < v_scan < math.log(4)
