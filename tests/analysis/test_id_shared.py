"""ID estimators inside ``shared_fits``: the same results as alone, common work once."""

import pytest
import torch

import analysis._id_knn as id_knn
import analysis._id_linear as id_linear
from analysis._id_uncertainty import _SCOPE, shared
from analysis.intrinsic_dimension import estimate_id, shared_fits
from analysis.manifolds import make_manifold

METHODS = ("twonn", "mle", "pca90", "participation_ratio")


def _data() -> torch.Tensor:
    X = torch.relu(make_manifold("sphere", n=600, d=3, D=32, seed=0))  # (600, 32)
    X[500:] = X[:100]  # identical rows, merged by the kNN estimators
    return X


def _count(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize(
    "params", [{}, {"mle": {"k": 5}, "twonn": {"n_subsamples": 0}}]
)
def test_same_results_as_alone(params):
    X = _data()
    methods = {m: params.get(m, {}) for m in METHODS}
    alone = [estimate_id(X, m, seed=3, **p) for m, p in methods.items()]
    with shared_fits(len(X), methods):
        together = [estimate_id(X, m, seed=3, **p) for m, p in methods.items()]
    # Seeded, same data, no float32 near-ties here: equal to the last bit.
    assert together == alone


def test_one_search_and_one_spectrum_per_row_set(monkeypatch):
    X = _data()
    searches = _count(monkeypatch, id_knn, "_distinct_neighbors")
    spectra = _count(monkeypatch, id_linear, "_spectrum")
    with shared_fits(len(X), {m: {} for m in METHODS}):
        for m in METHODS:
            estimate_id(X, m, seed=0)
    assert len(searches) == 1  # TwoNN and MLE, full set and intervals
    assert len(spectra) == 1 + 10  # full set and the 10 default subsamples


def test_nothing_kept_outside_the_scope(monkeypatch):
    X = _data()
    spectra = _count(monkeypatch, id_linear, "_spectrum")
    with shared_fits(len(X), {"pca90": {}}):
        estimate_id(X, "pca90", n_subsamples=0)
        scope = _SCOPE.get()
        assert scope is not None and len(scope.held) == 1
    assert _SCOPE.get() is None
    estimate_id(X, "pca90", n_subsamples=0)
    estimate_id(X, "participation_ratio", n_subsamples=0)
    assert len(spectra) == 3  # no sharing without a scope


def test_an_in_place_change_is_not_served_stale():
    X = torch.randn(50, 4)
    with shared_fits(len(X), {}):
        first = shared(X, "sum", lambda: float(X.sum()))
        X.add_(1.0)
        second = shared(X, "sum", lambda: float(X.sum()))
        view = shared(X.view(50, 4), "sum", lambda: -1.0)
    assert second == pytest.approx(first + 200.0, rel=1e-5)
    assert view == second  # a view of the same data is the same data


def test_unknown_or_bad_methods_are_left_to_the_fit():
    X = _data()
    with shared_fits(len(X), {"nope": {}, "mle": {"k": -1}, "twonn": {}}):
        assert estimate_id(X, "twonn").value == estimate_id(X, "twonn").value


def test_subsample_spectra_from_the_full_gram_equal_their_own() -> None:
    # N <= D: each subsample's centred Gram matrix is read from the full set's
    # (H K[s, s] H); against a product of the subsample's own rows the
    # eigenvalues agree to float32 product rounding
    gen = torch.Generator().manual_seed(2)
    X = torch.relu(
        torch.randn(300, 12, generator=gen) @ torch.randn(12, 500, generator=gen)
    )
    X += 0.01 * torch.randn(300, 500, generator=gen)  # (300, 500), a ReLU offset
    members = torch.randperm(300, generator=gen)[:150].sort().values
    K = id_linear._centred_gram(X)
    from_full = id_linear._spectrum(id_linear._subset_gram(K, members), 150)
    own = id_linear.covariance_eigenvalues(X[members])
    top = float(own[0])
    assert (from_full - own).abs().max() <= 1e-6 * top
    for method in ("pca90", "participation_ratio"):
        row = estimate_id(X, method, seed=0)
        assert row.ci_low <= row.value <= row.ci_high
