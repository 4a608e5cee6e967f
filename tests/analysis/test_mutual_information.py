"""Mutual-information estimators against closed forms and against scikit-learn.

Closed forms: ``-0.5 ln(1 - rho^2)`` for a bivariate Gaussian, ``0.5 (logdet Sxx +
logdet Syy - logdet S)`` for multivariate ones, ``D/2 ln(1 + var / sigma^2)`` for a
Gaussian seen through Gaussian noise, and ``h(mixture) - h(component)`` (numerical
integration) for a two-class Gaussian mixture. Seeds and tolerances are stated in
each test; interval computations are switched off (``n_subsamples=0``) where a test
does not look at them.
"""

import json
import math

import numpy as np
import pytest
import torch

from analysis._mi_common import pca_reduce, subseed
from analysis._mi_knn import count_within
from analysis._mi_methods import N_MIN, PREPARE
from analysis._mi_plugin import ledoit_wolf
from analysis.errors import DataError, InvalidInputError
from analysis.mutual_information import MI_ESTIMATORS, estimate_mi
from contract.errors import ContractError
from contract.estimators import MI_METHODS, resolve_params

FAST = {"n_subsamples": 0}


def as_dict(mv):
    """A result row as a plain dict (a dataclass or a pydantic model)."""
    if hasattr(mv, "model_dump"):
        return mv.model_dump()
    import dataclasses

    return dataclasses.asdict(mv)


def raw(mv):
    """The value before clipping at 0."""
    return mv.params.get("unclipped", {"value": mv.value})["value"]


def gaussian_pair(n, cov, dx, seed, exact_moments=False):
    """``n`` rows of N(0, cov) split into ``(X (n, dx), Y (n, D - dx))``, float64.

    ``exact_moments``: the rows are re-mixed so that their sample covariance equals
    ``cov``, which removes the sample's own error in the correlations (at N=2000 and
    rho=0.9 it alone moves the true sample MI by about 0.02 nats s.d.) and leaves
    the estimator's error."""
    g = torch.Generator().manual_seed(seed)
    D = cov.shape[0]
    Z = torch.randn(n, D, generator=g, dtype=torch.float64)
    if exact_moments:
        Z = Z - Z.mean(dim=0)
        L = torch.linalg.cholesky(Z.T @ Z / (n - 1))
        Z = torch.linalg.solve_triangular(L, Z.T, upper=False).T  # sample cov = I
    Z = Z @ torch.linalg.cholesky(cov).T  # (n, D)
    return Z[:, :dx], Z[:, dx:]


def bivariate(rho):
    return torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)


def gaussian_mixture_mi(mu, var):
    """``I(X; Y)`` for Y uniform on {0, 1} and X | Y ~ N(+-mu, var), by integration."""
    s = math.sqrt(var)
    x = np.linspace(-mu - 14 * s, mu + 14 * s, 400_001)
    c = 1.0 / math.sqrt(2 * math.pi * var)
    p = (
        0.5
        * c
        * (np.exp(-((x - mu) ** 2) / (2 * var)) + np.exp(-((x + mu) ** 2) / (2 * var)))
    )
    h_mix = -np.trapezoid(p * np.log(np.maximum(p, 1e-300)), x)
    return h_mix - 0.5 * math.log(2 * math.pi * math.e * var)


def two_class_mixture(n, mu, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (2.0 * y - 1.0).unsqueeze(1) * mu + torch.randn(n, 1, generator=g)
    return x.double(), y


# --- ksg ----------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ksg_bivariate_gaussian(rho):
    # N=2000, k=3, exact-moment samples of seeds 0-3: over 12 seeds the error had
    # s.d. 0.013-0.017 nats and mean +0.004 / +0.005 / +0.016 (rho 0 / 0.5 / 0.9);
    # the mean of 4 seeds is held to 0.03.
    true = -0.5 * math.log(1 - rho**2)
    values = [
        estimate_mi(*gaussian_pair(2000, bivariate(rho), 1, s, True), "ksg", **FAST)
        for s in range(4)
    ]
    assert abs(np.mean([v.value for v in values]) - true) < 0.03
    assert values[0].params["variant"] == "ksg1"


def test_ksg_independent_is_near_zero():
    # Independent plain samples X (2000, 2), Y (2000, 3): over seeds 0-9 the raw
    # estimate had mean +0.003 and s.d. 0.016 (one at -0.035); the mean of seeds 0-3
    # is held to |I| < 0.03, and each single one to 0.05. Values are clipped at 0.
    rows = []
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 3, generator=g)
        rows.append(estimate_mi(x, y, "ksg", **FAST))
    values = [raw(mv) for mv in rows]
    assert abs(np.mean(values)) < 0.03
    assert max(map(abs, values)) < 0.05
    assert all(mv.value == max(0.0, raw(mv)) for mv in rows)


def test_ksg_equals_scikit_learn_in_one_dimension():
    # In 1-d every norm is the max-norm: our KSG is sklearn's _compute_mi_cc, and our
    # mixed estimator its _compute_mi_cd (up to sklearn's 1e-10 jitter).
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    x, y = gaussian_pair(1000, bivariate(0.6), 1, seed=1)
    ours = estimate_mi(x, y, "ksg", **FAST).value
    ref = mutual_info_regression(x.numpy(), y.numpy().ravel(), n_neighbors=3)[0]
    assert ours == pytest.approx(ref, abs=1e-9)
    x, labels = two_class_mixture(1000, 1.0, seed=2)
    ours = estimate_mi(x, labels, "ksg", k=4, **FAST).value
    ref = mutual_info_classif(x.numpy(), labels.numpy(), n_neighbors=4)[0]
    assert ours == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_ross_mixed_estimator_matches_integration(mu):
    # Y uniform on {0, 1}, X | Y ~ N(+-mu, 1), N=4000, seed 3. Over 6 seeds the error
    # was within 0.015 nats; tolerance 0.03.
    x, y = two_class_mixture(4000, mu, seed=3)
    mv = estimate_mi(x, y, "ksg", **FAST)
    assert mv.params["variant"] == "ross2014_mixed"
    assert mv.params["noise_model"].startswith("none: Y discrete")
    assert mv.value == pytest.approx(gaussian_mixture_mi(mu, 1.0), abs=0.03)


def test_ksg_reduces_wide_sides_by_pca():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 40, generator=g)
    y = x[:, :3] + 0.5 * torch.randn(500, 3, generator=g)
    mv = estimate_mi(x, y, "ksg", max_dim=8, **FAST)
    assert mv.flags == ["pca_reduced"]
    assert (mv.params["pca_x"], mv.params["pca_y"], mv.params["max_dim"]) == (
        8,
        None,
        8,
    )
    assert mv.value > 0.1


def test_ksg_jitters_identical_rows():
    # Half the rows repeat the other half (as after a ReLU that zeroes a layer).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g).repeat(2, 1)
    mv = estimate_mi(x, x[:, :1] + 0.0, "ksg", **FAST)
    assert "jittered" in mv.flags and mv.params["jitter"] == 1e-10
    assert math.isfinite(mv.value)


def test_count_within_does_not_depend_on_the_chunk():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(101, 3, generator=g, dtype=torch.float64)
    r = torch.rand(101, generator=g, dtype=torch.float64)
    brute = torch.cdist(A, A, p=math.inf)
    brute.fill_diagonal_(math.inf)
    for strict in (True, False):
        want = (brute < r[:, None] if strict else brute <= r[:, None]).sum(dim=1)
        for chunk in (None, 1, 7, 101):
            got = count_within(A, r, strict=strict, chunk_size=chunk)
            assert torch.equal(got, want)


# --- gaussian -----------------------------------------------------------------------


def known_cross_covariance():
    """A 6 x 6 covariance (Dx = Dy = 3) with correlated marginals and cross terms."""
    Sxx = torch.tensor([[1.0, 0.3, 0.1], [0.3, 2.0, -0.2], [0.1, -0.2, 0.5]])
    Syy = torch.tensor([[1.5, -0.4, 0.0], [-0.4, 1.0, 0.2], [0.0, 0.2, 0.8]])
    Sxy = torch.tensor([[0.6, 0.1, 0.0], [0.2, -0.7, 0.3], [0.0, 0.1, 0.3]])
    cov = torch.cat([torch.cat([Sxx, Sxy], 1), torch.cat([Sxy.T, Syy], 1)]).double()
    true = 0.5 * float(
        torch.logdet(cov[:3, :3]) + torch.logdet(cov[3:, 3:]) - torch.logdet(cov)
    )
    return cov, true


def test_gaussian_is_exact_on_exact_moments():
    cov, true = known_cross_covariance()
    x, y = gaussian_pair(5000, cov, 3, seed=0, exact_moments=True)
    mv = estimate_mi(x, y, "gaussian", **FAST)  # "auto": no shrinkage at p/N small
    assert mv.value == pytest.approx(true, abs=1e-9)
    assert mv.params["shrinkage_intensity"] == 0.0
    # Ledoit-Wolf at N=5000 (intensity 0.004) lowers the value by 0.018 nats.
    mv = estimate_mi(x, y, "gaussian", shrinkage="ledoit_wolf", **FAST)
    assert true - 0.03 < mv.value < true
    assert 0 < mv.params["shrinkage_intensity"] < 0.01


def test_gaussian_shrinks_when_wide_or_singular():
    # 40 rows of 3 + 3 columns with a duplicated column: the sample covariance is
    # singular, so "auto" shrinks and the value stays finite.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = torch.cat([x[:, :1], x[:, :1], torch.randn(40, 1, generator=g)], dim=1)
    mv = estimate_mi(x, y, "gaussian", **FAST)
    assert mv.params["shrinkage_intensity"] > 0 and math.isfinite(mv.value)
    none = estimate_mi(x, y, "gaussian", shrinkage="none", **FAST)
    assert none.value is None and none.reason.startswith("singular covariance")


def test_gaussian_on_a_plain_sample():
    # N=50000, seed 1: sampling s.d. about 0.004 nats here; tolerance 0.01.
    cov, true = known_cross_covariance()
    x, y = gaussian_pair(50_000, cov, 3, seed=1)
    assert estimate_mi(x, y, "gaussian", **FAST).value == pytest.approx(true, abs=0.01)


def test_ledoit_wolf_equals_scikit_learn():
    from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf

    g = torch.Generator().manual_seed(0)
    Z = torch.randn(40, 12, generator=g, dtype=torch.float64) @ torch.randn(
        12, 12, generator=g, dtype=torch.float64
    )
    S, delta = ledoit_wolf(Z)
    S_ref, delta_ref = sk_ledoit_wolf(Z.numpy())
    assert delta == pytest.approx(delta_ref, rel=1e-10)
    np.testing.assert_allclose(S.numpy(), S_ref, rtol=1e-10, atol=1e-12)


def test_gaussian_refuses_class_labels():
    x, y = two_class_mixture(100, 1.0, seed=0)
    with pytest.raises(InvalidInputError, match="continuous Y"):
        estimate_mi(x, y, "gaussian")


# --- binning ------------------------------------------------------------------------


def test_binning_of_a_discrete_representation_is_its_entropy():
    # I(X; T) = H(T) for distinct inputs and a deterministic T with 4 levels per unit.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 5, generator=g)
    T = torch.randint(0, 4, (1000, 2), generator=g).float()
    mv = estimate_mi(x, T, "binning", **FAST)
    _, counts = torch.unique(T, dim=0, return_counts=True)
    p = counts.double() / 1000
    assert mv.value == pytest.approx(float(-(p * p.log()).sum()), abs=1e-12)
    assert mv.params["binned"] == "Y" and mv.params["n_bins"] == 30
    assert "30 bins per unit" in mv.params["noise_model"]


def test_binning_with_labels_bins_the_representation():
    # I(T; Y) with T determining Y equals H(Y); T independent of Y is near 0.
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (2000,), generator=g)
    T = y.float().unsqueeze(1) + 0.1 * torch.rand(2000, 1, generator=g)
    mv = estimate_mi(T, y, "binning", **FAST)
    assert mv.params["binned"] == "X"
    assert mv.value == pytest.approx(mv.params["h_other"], abs=1e-12)  # H(Y)
    noise = torch.rand(2000, 1, generator=g)
    assert estimate_mi(noise, y, "binning", n_bins=4, **FAST).value < 0.01


def test_binning_flags_a_value_at_the_sample_ceiling():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g)
    mv = estimate_mi(x, torch.tanh(x), "binning", **FAST)  # nearly a cell per row
    assert 0.95 * math.log(500) <= mv.value <= math.log(500)
    assert "near_ceiling" in mv.flags


def test_binning_range_and_side_options():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    T = torch.stack(
        [torch.rand(400, generator=g), 100 * torch.rand(400, generator=g)], 1
    )
    unit = estimate_mi(x, T, "binning", n_bins=3, **FAST).value
    layer = estimate_mi(x, T, "binning", n_bins=3, bin_range="layer", **FAST).value
    assert layer < unit  # the small unit falls in one bin of the layer's range
    y = torch.randint(0, 2, (400,), generator=g)
    with pytest.raises(InvalidInputError, match="binned='Y'"):
        estimate_mi(x, y, "binning", binned="Y")


# --- noisy --------------------------------------------------------------------------


@pytest.mark.parametrize(("D", "sigma"), [(2, 1.0), (2, 0.5)])
def test_noisy_matches_the_gaussian_channel(D, sigma):
    # T ~ N(0, I_D): I(X; T + Z) = D/2 ln(1 + 1/sigma^2). N=2000, data seed 1, one
    # noise draw per row; over data seeds 0-7 and estimator seeds 0-1 the error was
    # within 0.044 nats (mean -0.014 to +0.012); tolerance 0.06.
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2000, D, generator=g)
    mv = estimate_mi(X, X.clone(), "noisy", sigma=sigma, **FAST)
    assert mv.value == pytest.approx(D / 2 * math.log(1 + 1 / sigma**2), abs=0.06)
    assert mv.params["sigma"] == sigma and mv.params["sigma_rule"] == "given"


def test_noisy_with_labels_matches_integration():
    # T | Y ~ N(+-1, 1): T + Z | Y ~ N(+-1, 1 + sigma^2). N=2000, seed 0;
    # over seeds 0-7 the error was within 0.028 nats; tolerance 0.04.
    x, y = two_class_mixture(2000, 1.0, seed=0)
    mv = estimate_mi(x, y, "noisy", sigma=0.5, **FAST)
    assert mv.params["noised"] == "X"
    assert mv.value == pytest.approx(gaussian_mixture_mi(1.0, 1.25), abs=0.04)


def test_noisy_vanishes_with_large_noise_and_records_the_rule():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1000, 2, generator=g)
    # sigma = 100 s.d.: over 16 data and noise seeds |I| < 0.001; held to 0.005.
    assert abs(estimate_mi(X, X.clone(), "noisy", sigma=100.0, **FAST).value) < 0.005
    T = 3.0 * X
    mv = estimate_mi(X, T, "noisy", **FAST)
    assert mv.params["sigma"] == pytest.approx(0.1 * float(T.double().std(0).mean()))
    assert mv.params["sigma_rule"] == "0.1 x the mean per-unit std of Y"
    assert mv.params["noise_model"].startswith("gaussian noise sigma=")
    with pytest.raises(DataError, match="constant"):
        estimate_mi(X, torch.ones(1000, 3), "noisy")


# --- infonce ------------------------------------------------------------------------


def test_infonce_is_capped_and_flagged_near_ln_batch():
    # X = Y (infinite MI): the bound approaches ln B and never passes it.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(600, 4, generator=g)
    for batch in (8, 64):
        mv = estimate_mi(X, X.clone(), "infonce", batch_size=batch, steps=200, **FAST)
        assert mv.value <= math.log(batch)
        assert mv.params["ceiling"] == pytest.approx(math.log(batch))
        assert "near_ceiling" in mv.flags


def test_infonce_trains_under_inference_mode():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g)
    want = estimate_mi(X, X[:, :2] + 0.0, "infonce", steps=20)
    with torch.inference_mode():
        got = estimate_mi(X * 1, X[:, :2] + 0.0, "infonce", steps=20)
    assert as_dict(got) == as_dict(want)


def test_infonce_low_mi_is_not_flagged():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(600, 3, generator=g), torch.randn(600, 3, generator=g)
    mv = estimate_mi(X, Y, "infonce", steps=100, **FAST)
    assert mv.value < 0.2 and "near_ceiling" not in mv.flags
    y = torch.randint(0, 3, (600,), generator=g)  # class labels, one-hot encoded
    assert estimate_mi(X, y, "infonce", steps=50, **FAST).value <= math.log(128)


# --- probe --------------------------------------------------------------------------


def test_probe_mi_bounds():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (600,), generator=g)
    T = torch.randn(600, 20, generator=g)
    separable = T + 8.0 * torch.nn.functional.one_hot(y, 20).float()
    mv = estimate_mi(separable, y, "probe", **FAST)
    h_y = mv.params["h_y"]
    assert 0.9 * h_y < mv.value <= h_y
    assert estimate_mi(T, y, "probe", **FAST).value < 0.05  # random labels


# --- common behaviour ---------------------------------------------------------------


def small_inputs(method):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g)
    if method == "probe":
        return X, (X[:, 0] > 0).long()
    return X, X[:, :2] + torch.randn(200, 2, generator=g)


@pytest.mark.parametrize("method", MI_ESTIMATORS)
def test_interval_params_and_determinism(method):
    X, Y = small_inputs(method)
    extra = {"steps": 30} if method == "infonce" else {}
    mv = estimate_mi(X, Y, method, seed=3, metric="mi_input", **extra)
    assert mv.metric == "mi_input" and mv.estimator == method and mv.n_samples == 200
    assert mv.ci_low <= mv.value <= mv.ci_high, mv
    for name in ("n_subsamples", "subsample_fraction", "ci_level", "seed", "se"):
        assert name in mv.params
    assert isinstance(mv.params["noise_model"], str) and mv.params["noise_model"]
    again = estimate_mi(X, Y, method, seed=3, metric="mi_input", **extra)
    assert as_dict(again) == as_dict(mv)
    json.dumps(as_dict(mv), allow_nan=False)  # JSON-ready, no NaN


def test_no_interval_is_explained():
    X, Y = small_inputs("ksg")
    mv = estimate_mi(X, Y, "ksg", n_subsamples=0)
    assert mv.ci_low is None and mv.ci_high is None
    assert mv.reason == "no interval: n_subsamples=0"


def test_seed_changes_the_subsamples():
    X, Y = small_inputs("ksg")
    a, b = estimate_mi(X, Y, "ksg", seed=0), estimate_mi(X, Y, "ksg", seed=1)
    assert a.value == b.value and a.ci_low != b.ci_low


def test_bad_input_errors():
    X, Y = small_inputs("ksg")
    with pytest.raises(InvalidInputError, match="ksg, gaussian, binning"):
        estimate_mi(X, Y, "mine")
    with pytest.raises(InvalidInputError, match=r"k, max_dim, standardize.*n_neigh"):
        estimate_mi(X, Y, "ksg", n_neighbors=3)
    with pytest.raises(InvalidInputError, match=r"k: .*greater than or equal to 1"):
        estimate_mi(X, Y, "ksg", k=0)
    with pytest.raises(InvalidInputError, match=r"shrinkage: .*'auto'"):
        estimate_mi(X, Y, "gaussian", shrinkage="oas")
    with pytest.raises(InvalidInputError, match=r"standardize: .*boolean"):
        estimate_mi(X, Y, "ksg", standardize=1)
    with pytest.raises(InvalidInputError, match=r"sigma: .*greater than 0"):
        estimate_mi(X, Y, "noisy", sigma=0.0)
    with pytest.raises(InvalidInputError, match="n_subsamples=1"):
        estimate_mi(X, Y, "ksg", n_subsamples=1)
    with pytest.raises(InvalidInputError, match="same number of samples"):
        estimate_mi(X, Y[:-1], "ksg")
    with pytest.raises(InvalidInputError, match="class labels"):
        estimate_mi(X, torch.zeros(200, 2, dtype=torch.int64), "ksg")
    with pytest.raises(InvalidInputError, match="integer class labels"):
        estimate_mi(X, Y, "probe")
    bad = X.clone()
    bad[3, 1] = math.nan
    with pytest.raises(DataError, match="NaN"):
        estimate_mi(bad, Y, "gaussian")
    with pytest.raises(DataError, match="at least 2 classes"):
        estimate_mi(X, torch.zeros(200, dtype=torch.int64), "probe")


def test_pca_reduce_matches_an_exact_svd():
    # Rank-5 data in 64 dims plus tiny noise: the leading 5 axes agree up to sign.
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 5, generator=g) @ torch.randn(5, 64, generator=g)
    A = (A + 1e-4 * torch.randn(300, 64, generator=g)).double()
    ours = pca_reduce(A, 5, seed=0)  # (300, 5)
    Ac = A - A.mean(0)
    ref = Ac @ torch.linalg.svd(Ac, full_matrices=False).Vh[:5].T
    np.testing.assert_allclose(ours.abs().numpy(), ref.abs().numpy(), atol=1e-6)


def test_subseeds_differ_from_the_seed():
    assert subseed(0, "noise") != subseed(0, "pca") != 0


def test_parameter_errors_are_the_librarys():
    # The contract's error is turned into the library's, message kept.
    X, Y = small_inputs("ksg")
    with pytest.raises(InvalidInputError) as info:
        estimate_mi(X, Y, "ksg", k=0, max_dim=0)
    assert not isinstance(info.value, ContractError)
    assert "k: " in str(info.value) and "max_dim: " in str(info.value)  # both


def test_defaults_are_the_contracts():
    # One source: the library's methods are the contract's, and a run records the
    # contract model's defaults as the parameters it used.
    assert MI_ESTIMATORS == MI_METHODS
    assert set(PREPARE) == set(N_MIN) == set(MI_METHODS)
    for method in ("ksg", "gaussian", "probe"):  # binning records the side it bins
        X, Y = small_inputs(method)
        used = estimate_mi(X, Y, method).params
        for name, default in resolve_params("mi", method, {}).items():
            assert used[name] == default, (method, name)
