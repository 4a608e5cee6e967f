"""Intrinsic-dimension estimators against known manifolds and against skdim.

All data come from ``make_manifold`` with the seed given in the test, N = 2000
points, D = 64, no noise unless stated.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from analysis._id_uncertainty import (
    n_neighbors_for_reuse,
    neighbor_dist_within,
    subsample_indices,
)
from analysis.errors import InvalidInputError
from analysis.intrinsic_dimension import (
    ID_ESTIMATORS,
    MLE,
    ParticipationRatio,
    PCADimension,
    TwoNN,
    estimate_id,
)
from analysis.manifolds import make_manifold
from analysis.neighbors import knn
from contract.estimators import ESTIMATORS, ID_METHODS

skdim = pytest.importorskip("skdim")

N, D = 2000, 64
FAST = {"n_subsamples": 0}

# Expected ranges on seed 0, N=2000. TwoNN and MLE are accurate at d=2 and read low
# as d grows (boundary of the cube, too few points for 10 dimensions; FACTS.md:
# d=10 reads 8-9). Over 8 seeds the s.d. is about 0.07 / 0.15 / 0.3 for TwoNN and
# 0.02 / 0.03 / 0.05 for MLE at d = 2 / 5 / 10; the ranges hold the observed bias
# plus about 3 s.d.
TWONN_RANGE = {
    ("linear", 2): (1.75, 2.25),
    ("linear", 5): (4.2, 5.3),
    ("linear", 10): (7.6, 9.6),
    ("sphere", 2): (1.75, 2.25),
    ("sphere", 5): (4.4, 5.8),
    ("sphere", 10): (8.4, 11.0),
    ("gaussian", 10): (8.6, 10.8),
    ("torus", 2): (1.75, 2.25),
    ("swiss_roll", 2): (1.75, 2.25),
}
MLE_RANGE = {
    ("linear", 2): (1.85, 2.1),
    ("linear", 5): (4.3, 5.1),
    ("linear", 10): (7.8, 9.0),
    ("sphere", 2): (1.9, 2.1),
    ("sphere", 5): (4.6, 5.2),
    ("sphere", 10): (8.6, 9.6),
    ("gaussian", 10): (8.8, 9.8),
    ("torus", 2): (1.9, 2.1),
    ("swiss_roll", 2): (1.85, 2.1),
}


@pytest.mark.parametrize(("name", "d"), list(TWONN_RANGE))
def test_twonn_and_mle_recover_d(name, d):
    X = make_manifold(name, N, d, D, seed=0)
    low, high = TWONN_RANGE[name, d]
    assert low <= TwoNN(**FAST).fit(X).dimension_ <= high
    low, high = MLE_RANGE[name, d]
    assert low <= MLE(**FAST).fit(X).dimension_ <= high


@pytest.mark.parametrize("d", [2, 5, 10])
def test_linear_estimators_on_known_spectra(d):
    # Uniform cube / isotropic Gaussian: d equal covariance eigenvalues, so PCA at
    # variance 0.9 needs ceil(0.9 d) components (9 at d=10 is on the edge: 9 or 10)
    # and at 0.999 exactly d; the participation ratio is d up to the
    # Marchenko-Pastur spread, d / (1 + d / N) (within 1%). A d-sphere fills d + 1
    # ambient directions equally.
    for name, rank in (("linear", d), ("gaussian", d), ("sphere", d + 1)):
        X = make_manifold(name, N, d, D, seed=0)
        pca = PCADimension(**FAST).fit(X).dimension_
        assert pca in {math.ceil(0.9 * rank), math.ceil(0.9 * rank) + 1}
        assert PCADimension(variance=0.999, **FAST).fit(X).dimension_ == rank
        pr = ParticipationRatio(**FAST).fit(X).dimension_
        assert abs(pr - rank / (1 + rank / N)) < 0.01 * rank


@pytest.mark.parametrize(
    ("name", "d", "noise"),
    [
        ("linear", 2, 0.0),
        ("sphere", 5, 0.0),
        ("swiss_roll", 2, 0.0),
        ("gaussian", 10, 0.01),
    ],
)
def test_twonn_and_mle_match_skdim(name, d, noise):
    X = make_manifold(name, N, d, D, noise=noise, seed=4)
    Xn = X.double().numpy()
    for f in (0.1, 0.25):
        ours = TwoNN(discard_fraction=f, **FAST).fit(X).dimension_
        ref = skdim.id.TwoNN(discard_fraction=f).fit(Xn).dimension_
        assert ours == pytest.approx(ref, rel=1e-4)
    for k, unbiased in ((20, False), (10, True)):
        ours = MLE(k=k, unbiased=unbiased, **FAST).fit(X).dimension_
        ref = skdim.id.MLE(unbiased=unbiased).fit(Xn, n_neighbors=k, comb="mle")
        assert ours == pytest.approx(ref.dimension_, rel=1e-4)


def relu_like(seed=5):
    # A ReLU of a 3-d Gaussian shifted down: many rows are exactly zero.
    X = make_manifold("gaussian", 1000, 3, 16, seed=seed)
    return torch.relu(X @ torch.ones(16, 16) / 4 - 0.5)  # (1000, 16)


def test_duplicates_are_counted_and_removed():
    X = relu_like()
    _, counts = np.unique(X.numpy(), axis=0, return_counts=True)
    in_groups = int(counts[counts > 1].sum())
    assert in_groups > 100  # the fixture does what it says
    for method in ID_ESTIMATORS:
        mv = estimate_id(X, method, n_subsamples=4)
        assert mv.value is not None and math.isfinite(mv.value), method
        assert mv.ci_low is not None and mv.ci_high is not None
    est = TwoNN(**FAST).fit(X)
    assert est.n_duplicates_ == in_groups
    assert est.n_unique_ == len(counts)
    assert estimate_id(X, "mle").params["n_duplicates"] == in_groups
    # The estimate is that of the distinct rows, i.e. skdim on np.unique(X).
    ref = skdim.id.TwoNN(discard_fraction=0.1).fit(np.unique(X.numpy(), axis=0))
    assert est.dimension_ == pytest.approx(ref.dimension_, rel=1e-4)


def test_negative_zero_is_the_same_point():
    X = make_manifold("sphere", 100, 2, 5, seed=0)
    X[10] = 0.0
    X[11] = -0.0
    est = TwoNN(**FAST).fit(X)
    assert est.n_duplicates_ == 2 and math.isfinite(est.dimension_)


@pytest.mark.parametrize("method", list(ID_ESTIMATORS))
def test_all_points_identical_give_none_and_a_reason(method):
    mv = estimate_id(torch.ones(50, 8), method)
    assert mv.value is None and mv.ci_low is None and mv.ci_high is None
    assert mv.reason == "all points identical"
    assert mv.n_samples == 50


def test_too_few_distinct_points_give_none_and_a_reason():
    X = torch.cat([torch.zeros(30, 4), torch.ones(30, 4)])  # 2 distinct rows
    mv = estimate_id(X, "twonn")
    assert mv.value is None and "only 2 distinct points" in mv.reason
    assert mv.params["n_duplicates"] == 60


@pytest.mark.parametrize(("cls", "scale"), [(TwoNN, 0.2), (MLE, 0.1)])
def test_interval_contains_estimate_and_widens_with_d(cls, scale):
    # The interval is centred on the estimate; its width follows the s.d. of the
    # estimate, which grows like d (Pareto / exponential MLE): narrow at d=2
    # (under `scale` relative), and at d=10 more than twice as wide.
    widths = {}
    for d in (2, 10):
        est = cls(seed=0).fit(make_manifold("sphere", N, d, D, seed=1))
        low, high = est.ci_
        assert low < est.dimension_ < high
        widths[d] = high - low
    assert widths[2] < scale * 2
    assert widths[10] > 2 * widths[2]


def test_interval_is_seeded():
    X = make_manifold("linear", 1500, 3, 32, seed=2)
    a, b = TwoNN(seed=11).fit(X), TwoNN(seed=11).fit(X)
    assert a.ci_ == b.ci_ and a.subsample_dimensions_ == b.subsample_dimensions_
    c = TwoNN(seed=12).fit(X)
    assert c.subsample_dimensions_ != a.subsample_dimensions_
    assert c.dimension_ == a.dimension_  # the point estimate has no randomness


@pytest.mark.parametrize(("cls", "kwargs"), [(TwoNN, {}), (MLE, {"k": 10})])
def test_subsample_estimates_equal_a_direct_fit(cls, kwargs):
    # The subsample neighbours come from the full neighbour lists; they must be the
    # subsample's own neighbours, as a fresh fit on the subsample finds them.
    X = make_manifold("sphere", 800, 3, 16, seed=3)
    est = cls(n_subsamples=3, seed=5, **kwargs).fit(X)
    for s, theta in zip(
        subsample_indices(800, 400, 3, 5, X.device), est.subsample_dimensions_
    ):
        assert cls(**FAST, **kwargs).fit(X[s]).dimension_ == pytest.approx(
            theta, rel=1e-10
        )


@pytest.mark.parametrize("K", [4, 10, 30])
def test_neighbor_reuse_falls_back_to_an_exact_search(K):
    # Subsample of half the rows, k=3. K=4: 221 of 300 rows run out (full re-search);
    # K=10: 11 do (per-row exact fallback); K=30: none (lists reused as they are).
    X = make_manifold("gaussian", 600, 4, 8, seed=4)
    dist, idx = knn(X, K)
    members = subsample_indices(600, 300, 1, 0, X.device)[0]
    got = neighbor_dist_within(X, dist, idx, members, 3)
    torch.testing.assert_close(got, knn(X[members], 3)[0], rtol=1e-12, atol=0)
    assert n_neighbors_for_reuse(3, 0.5, 600) >= 6


def test_estimate_id_record():
    X = make_manifold("sphere", 1000, 2, 10, seed=0).reshape(1000, 2, 5)  # (N, ...)
    mv = estimate_id(X, "mle", seed=3, k=10)
    assert mv.metric == "intrinsic_dimension" and mv.estimator == "mle"
    assert mv.n_samples == 1000 and mv.reason is None
    assert mv.params == {
        "k": 10,
        "unbiased": False,
        "n_subsamples": 10,
        "subsample_fraction": 0.5,
        "ci_level": 0.95,
        "seed": 3,
        "n_duplicates": 0,
        "n_unique": 1000,
    }
    flat = MLE(k=10, seed=3).fit(X.reshape(1000, 10))
    assert (mv.value, mv.ci_low, mv.ci_high) == (flat.dimension_, *flat.ci_)
    no_ci = estimate_id(X, "twonn", n_subsamples=0)
    assert no_ci.ci_low is None and "n_subsamples=0" in no_ci.reason


def test_dtypes_give_the_same_estimate():
    X = make_manifold("sphere", 1000, 3, 16, seed=6)
    ref = TwoNN(**FAST).fit(X).dimension_
    assert TwoNN(**FAST).fit(X.double()).dimension_ == pytest.approx(ref, rel=1e-12)
    half = TwoNN(**FAST).fit(X.to(torch.bfloat16)).dimension_  # coarser points
    assert half == pytest.approx(ref, rel=0.05)
    assert math.isfinite(TwoNN(**FAST).fit((X * 1000).to(torch.int32)).dimension_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_inputs_device():
    X = make_manifold("sphere", 2000, 3, 64, seed=7)
    for method in ID_ESTIMATORS:
        cpu, gpu = estimate_id(X, method), estimate_id(X.cuda(), method)
        assert gpu.value == pytest.approx(cpu.value, rel=1e-6), method


@pytest.mark.parametrize(
    ("X", "method", "params", "message"),
    [
        (torch.tensor([[0.0, 1.0], [math.nan, 2.0], [3.0, 1.0]]), "twonn", {}, "NaN"),
        (torch.randn(50, 3), "lpca", {}, "twonn, mle, pca90, participation_ratio"),
        (torch.randn(50, 3), "mle", {"K": 5}, "K: unknown key"),
        (torch.randn(50, 3), "mle", {"k": 1}, r"k: .*greater than or equal to 2"),
        (torch.randn(50, 3), "mle", {"k": 2, "unbiased": True}, "at least 3"),
        (torch.randn(50, 3), "twonn", {"discard_fraction": 1.0}, "discard_fraction"),
        (torch.randn(50, 3), "twonn", {"n_subsamples": 1}, "n_subsamples"),
        (torch.randn(50, 3), "pca90", {"variance": 0.0}, "variance"),
        (torch.randn(50, 3), "pca90", {"variance": "0.9"}, "variance"),
    ],
)
def test_bad_input_raises_invalid_input(X, method, params, message):
    with pytest.raises(InvalidInputError, match=message):
        estimate_id(X, method, **params)
    cls = ID_ESTIMATORS.get(method)
    if cls is not None and set(params) <= set(cls().get_params()):
        with pytest.raises(InvalidInputError, match=message):  # the class alike
            cls(**params).fit(X)


@pytest.mark.parametrize(
    ("N", "method", "params", "message"),
    [
        (2, "twonn", {}, "2 samples; twonn needs at least 20 for a meaningful"),
        (15, "mle", {}, "15 samples; mle needs at least 21 with these parameters"),
        (40, "mle", {"k": 40}, "40 samples; mle needs at least 41 with these"),
        (1, "pca90", {}, "1 samples; pca90 needs at least 20"),
    ],
)
def test_too_few_samples_give_none_and_a_reason(N, method, params, message):
    mv = estimate_id(torch.randn(N, 3), method, **params)
    assert mv.value is None and mv.ci_low is None and mv.ci_high is None
    assert mv.reason.startswith(message) and mv.n_samples == N


def test_defaults_are_the_contracts():
    # One source: every class's defaults are its contract model's, and the contract
    # lists exactly the library's estimators, in the same order.
    assert tuple(ID_ESTIMATORS) == ID_METHODS
    for name, cls in ID_ESTIMATORS.items():
        model = ESTIMATORS["id"][name].params()
        params = cls().get_params()
        assert params.pop("seed") == 0
        assert params == model.model_dump(), name
        assert cls.name == name


def test_duplicates_raise_no_warning():
    # skdim warns and drops them; here they are expected (ReLU) and counted.
    X = relu_like(seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TwoNN(**FAST).fit(X)
