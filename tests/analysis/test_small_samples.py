"""Small samples: below an estimator's ``min_samples`` (``contract.estimators``) a row
is ``None`` with a reason, below ``low_samples`` its value stands with the flag
``"low_samples"``, and values and intervals stay in the quantity's range (an
intrinsic dimension in ``[0, D]``, mutual information at least 0, an accuracy in
``[0, 1]``). Seeds are stated in each test; the bounds are exact."""

import pytest
import torch

from analysis.intrinsic_dimension import TwoNN, estimate_id
from analysis.manifolds import make_manifold
from analysis.mutual_information import estimate_mi
from analysis.probes import probe_accuracy
from contract.estimators import ESTIMATORS, ID_METHODS, MI_METHODS, resolve_params

# InfoNCE trains a critic; a few steps are enough to check the row's shape.
QUICK = {"infonce": {"steps": 5}}


def id_data(N, seed=0):
    return make_manifold("gaussian", N, 2, 6, seed=seed)  # (N, 6)


def mi_data(method, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, 3, generator=g)
    if method == "probe":
        return X, (X[:, 0] > 0).long()
    return X, X[:, :2] + torch.randn(N, 2, generator=g)


def below_min(spec):
    """The brief's 10 rows where that is below the minimum, and one row under it."""
    return sorted({n for n in (10, spec.min_samples - 1) if n < spec.min_samples})


@pytest.mark.parametrize("method", ID_METHODS)
def test_id_below_min_samples_is_none_with_a_reason(method):
    spec = ESTIMATORS["id"][method]
    for N in below_min(spec):
        mv = estimate_id(id_data(N), method)
        assert (mv.value, mv.ci_low, mv.ci_high) == (None, None, None), N
        assert mv.reason.startswith(f"{N} samples; {method} needs at least ")
        assert mv.n_samples == N and mv.flags == []


@pytest.mark.parametrize("method", MI_METHODS)
def test_mi_below_min_samples_is_none_with_a_reason(method):
    spec = ESTIMATORS["mi"][method]
    for N in below_min(spec):
        mv = estimate_mi(*mi_data(method, N), method, **QUICK.get(method, {}))
        assert (mv.value, mv.ci_low, mv.ci_high) == (None, None, None), N
        assert mv.reason == (
            f"{N} samples; {method} needs at least {spec.min_samples} for a "
            "meaningful estimate"
        )
        assert mv.n_samples == N and mv.flags == []
        used = resolve_params("mi", method, QUICK.get(method, {}))
        assert mv.params == used | {"seed": 0}  # what would have run


def test_ten_samples_void_every_estimator_that_needs_more():
    # 10 rows: every estimator declared with min_samples > 10 gives no value (the
    # numbers once printed here: TwoNN 2.11 [-39.7, 44], KSG -0.857).
    for method in ID_METHODS:
        mv = estimate_id(id_data(10), method)
        assert (mv.value is None) == (ESTIMATORS["id"][method].min_samples > 10)
    for method in MI_METHODS:
        mv = estimate_mi(*mi_data(method, 10), method)
        assert mv.value is None and mv.reason.startswith("10 samples; ")
    X, y = mi_data("probe", 10)
    assert probe_accuracy(X, y).value is None


def test_a_parameter_minimum_above_the_declared_one_wins():
    mv = estimate_id(id_data(30), "mle", k=40)
    assert mv.value is None
    assert mv.reason == "30 samples; mle needs at least 41 with these parameters"
    mv = estimate_mi(*mi_data("ksg", 60), "ksg", k=70)
    assert mv.reason == "60 samples; ksg needs at least 71 with these parameters"


def low_N(spec):
    """150 rows where that is a low sample, else the minimum."""
    return 150 if spec.min_samples <= 150 < spec.low_samples else spec.min_samples


@pytest.mark.parametrize("method", ID_METHODS)
def test_id_low_samples_are_flagged(method):
    spec = ESTIMATORS["id"][method]
    N = max(low_N(spec), 21 if method == "mle" else 0)  # MLE's k + 1
    mv = estimate_id(id_data(N), method, n_subsamples=0)
    assert mv.value is not None and "low_samples" in mv.flags, N
    mv = estimate_id(id_data(spec.low_samples), method, n_subsamples=0)
    assert mv.value is not None and "low_samples" not in mv.flags


@pytest.mark.parametrize("method", MI_METHODS)
def test_mi_low_samples_are_flagged(method):
    spec = ESTIMATORS["mi"][method]
    quick = {"n_subsamples": 0, **QUICK.get(method, {})}
    mv = estimate_mi(*mi_data(method, low_N(spec)), method, **quick)
    assert mv.value is not None and "low_samples" in mv.flags
    mv = estimate_mi(*mi_data(method, spec.low_samples), method, **quick)
    assert mv.value is not None and "low_samples" not in mv.flags


def test_probe_accuracy_follows_the_probe_counts():
    X, y = mi_data("probe", 19)
    mv = probe_accuracy(X, y)
    assert mv.value is None and mv.reason.startswith("19 samples; probe needs")
    X, y = mi_data("probe", 150)
    assert "low_samples" in probe_accuracy(X, y).flags


def test_twonn_interval_on_a_tiny_sample_stays_in_0_to_D():
    # 40 points of a 2-d Gaussian in D=3 (the smallest N whose half-samples reach
    # TwoNN's 20), seeds 0-9: the raw jackknife interval went below 0 (seed 3:
    # -0.05) and the raw estimate above D (seed 1: 3.45); both are clipped.
    raw_lows, raw_values = [], []
    for seed in range(10):
        X = make_manifold("gaussian", 40, 2, 3, seed=seed)
        mv = estimate_id(X, "twonn")
        assert 0.0 <= mv.ci_low <= mv.value <= mv.ci_high <= 3.0, seed
        raw = mv.params.get("unclipped")
        assert (raw is not None) == ("clipped" in mv.flags)
        if raw is not None:
            raw_lows.append(raw["ci_low"])
            raw_values.append(raw["value"])
    assert min(raw_lows) < 0 and max(raw_values) > 3  # the clipping was exercised
    est = TwoNN(seed=0).fit(make_manifold("gaussian", 40, 2, 3, seed=1))
    assert est.dimension_ == 3.0 and est.unclipped_["value"] > 3.0


def test_no_interval_from_subsamples_under_the_minimum():
    # 30 rows: half-samples of 15 are under TwoNN's 20 (and under KSG's 50 at 90).
    mv = estimate_id(id_data(30), "twonn")
    assert mv.value is not None and mv.ci_low is None
    assert mv.reason.startswith("no interval: a subsample of 15 of 30 rows is under")
    mv = estimate_mi(*mi_data("ksg", 90), "ksg")
    assert mv.value is not None and mv.ci_low is None and "under" in mv.reason


def test_no_interval_from_fewer_than_two_valid_subsamples():
    # 60 rows with a class of 2 (seed 0): a half-sample without both of them cannot
    # be probed; with seed 0 only one of the 5 could.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (60,), generator=g)
    T = torch.randn(60, 4, generator=g)
    T[:, 0] += 3 * y
    y[:2] = 2
    mv = estimate_mi(T, y, "probe", seed=0)
    assert mv.value is not None and mv.ci_low is None and mv.ci_high is None
    assert mv.reason == "no interval: < 2 finite subsample estimates"


def test_mi_and_its_interval_are_never_negative():
    # Independent X (100, 2), Y (100, 2), seeds 0-9: the raw KSG estimate was
    # negative for 5 seeds (down to -0.13) and every raw interval reached below 0.
    raw_values = []
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
        mv = estimate_mi(x, y, "ksg")
        assert 0.0 <= mv.ci_low <= mv.value <= mv.ci_high, seed
        assert "clipped" in mv.flags and mv.params["unclipped"]["ci_low"] < 0
        raw_values.append(mv.params["unclipped"]["value"])
        assert mv.value == max(0.0, raw_values[-1])
    assert min(raw_values) < 0  # the clipping of values was exercised


def test_probe_accuracy_interval_stays_in_0_to_1():
    # 40 rows, two classes 3 s.d. apart, seeds 0-2: fold accuracies near 1 put the
    # raw upper end above 1 (1.02-1.09).
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (40,), generator=g)
        T = torch.randn(40, 4, generator=g)
        T[:, 0] += 3.0 * y
        mv = probe_accuracy(T, y, seed=seed)
        assert 0.0 <= mv.ci_low <= mv.value <= mv.ci_high <= 1.0
        assert "clipped" in mv.flags and mv.params["unclipped"]["ci_high"] > 1.0
