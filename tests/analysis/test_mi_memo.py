"""``MIMemo``: what is computed from one tensor alone is reused, never stale, and the
values are those of calls without a memo."""

import pytest
import torch

import analysis._mi_common as common
from analysis._mi_common import MIMemo, pca_reduce
from analysis.errors import DataError
from analysis.mutual_information import estimate_mi
from analysis.probes import probe_accuracy

# Small shapes that still take every PCA path (widths above max_dim).
PARAMS = {
    "ksg": {"max_dim": 4, "n_subsamples": 2},
    "gaussian": {"max_dim": 8, "n_subsamples": 2},
    "binning": {"n_bins": 4, "n_subsamples": 2},
    "probe": {"max_dim": 8, "cv": 3, "n_subsamples": 2},
}


def layer_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(160, 24, generator=g)
    T = torch.relu(X @ torch.randn(24, 40, generator=g))  # (160, 40)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()  # 3 classes
    return X, T, y


def counting_pca(monkeypatch):
    calls = []
    real = common.pca_reduce

    def counted(A, q, seed):
        calls.append((tuple(A.shape), q))
        return real(A, q, seed)

    monkeypatch.setattr(common, "pca_reduce", counted)
    return calls


# KSG at max_dim 10 scans a 20-wide joint space and keeps X's distances.
@pytest.mark.parametrize(
    ("method", "params"),
    [(m, PARAMS[m]) for m in ("ksg", "gaussian", "binning")]
    + [("ksg", PARAMS["ksg"] | {"max_dim": 10})],
)
def test_input_side_values_equal_without_memo(method, params):
    X, T, _ = layer_data()
    plain = estimate_mi(X, T, method, seed=3, **params)
    memo = MIMemo()
    first = estimate_mi(X, T, method, seed=3, memo=memo, **params)
    other = estimate_mi(X, T.flip(1), method, seed=3, memo=memo, **params)
    again = estimate_mi(X, T, method, seed=3, memo=memo, **params)
    assert first == plain and again == plain
    assert other == estimate_mi(X, T.flip(1), method, seed=3, **params)


@pytest.mark.parametrize("method", ["ksg", "binning", "probe"])
def test_label_side_values_equal_without_memo(method):
    _, T, y = layer_data()
    plain = estimate_mi(T, y, method, seed=3, **PARAMS[method])
    memo = MIMemo()
    assert estimate_mi(T, y, method, seed=3, memo=memo, **PARAMS[method]) == plain


def test_one_pca_per_tensor_width_and_seed(monkeypatch):
    calls = counting_pca(monkeypatch)
    X, T, y = layer_data()
    memo = MIMemo()
    for _ in range(2):  # a second layer on the same input X
        estimate_mi(X, T.clone(), "gaussian", memo=memo, **PARAMS["gaussian"])
    # X reduced once, each of the two layers once
    assert sorted(calls) == [((160, 24), 8), ((160, 40), 8), ((160, 40), 8)]
    calls.clear()
    estimate_mi(X, T, "gaussian", memo=memo, **PARAMS["gaussian"] | {"max_dim": 4})
    probe_accuracy(T, y, cv=3, max_dim=4, memo=memo)
    estimate_mi(T, y, "probe", memo=memo, **PARAMS["probe"] | {"max_dim": 4})
    # the probes read the gaussian's PCA of T
    assert sorted(calls) == [((160, 24), 4), ((160, 40), 4)]


def test_an_in_place_change_is_not_read_stale(monkeypatch):
    calls = counting_pca(monkeypatch)
    X, T, _ = layer_data()
    memo = MIMemo()
    before = estimate_mi(X, T, "gaussian", memo=memo, **PARAMS["gaussian"])
    T.mul_(2.0).add_(torch.linspace(0, 1, 40))  # same storage, new version
    after = estimate_mi(X, T, "gaussian", memo=memo, **PARAMS["gaussian"])
    assert len(calls) == 3  # X once, T before and after the change
    assert after == estimate_mi(X, T, "gaussian", **PARAMS["gaussian"])
    assert after.value != before.value


def test_the_memo_keeps_its_last_entries():
    memo = MIMemo(size=2)
    tensors = [torch.zeros(3) for _ in range(3)]
    for i, A in enumerate(tensors):
        memo.get(A, ("n",), lambda i=i: i)
    assert memo.get(tensors[2], ("n",), lambda: -1) == 2
    assert memo.get(tensors[0], ("n",), lambda: -1) == -1  # dropped first


def test_pca_axes_have_a_fixed_sign():
    # The largest loading of every axis is positive: the same output whatever the
    # sign LAPACK picked, so sign-sensitive uses (a critic's training) reproduce.
    g = torch.Generator().manual_seed(1)
    A = torch.randn(200, 30, generator=g, dtype=torch.float64)
    P = pca_reduce(A, 5, seed=0)  # (200, 5)
    V = torch.linalg.lstsq(A - A.mean(0), P).solution  # (30, 5) the axes
    top = V.abs().argmax(dim=0)
    assert bool((V[top, torch.arange(5)] > 0).all())


def test_a_tensor_is_checked_once_and_again_after_a_change():
    X, T, _ = layer_data()
    memo = MIMemo()
    estimate_mi(X, T, "binning", memo=memo, **PARAMS["binning"])
    T[0, 0] = float("nan")  # in place: a new version, checked again
    with pytest.raises(DataError, match="NaN"):
        estimate_mi(X, T, "binning", memo=memo, **PARAMS["binning"])
