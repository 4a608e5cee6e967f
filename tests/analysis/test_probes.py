"""The logistic-regression probe: separable classes, random labels, its interval,
its PCA cap and its errors. Seeds and tolerances are stated in each test."""

import numpy as np
import pytest
import torch

from analysis.errors import DataError, InvalidInputError
from analysis.mutual_information import estimate_mi
from analysis.probes import cross_validate, probe_accuracy


def classes(n, n_classes, dim, shift, seed):
    """``n`` rows of N(0, I_dim) with class ``c`` shifted by ``shift`` along unit c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    T = torch.randn(n, dim, generator=g)
    return T + shift * torch.nn.functional.one_hot(y, dim).float(), y


def test_separable_classes():
    # 10 classes 8 s.d. apart: every fold is near perfect (seed 0).
    T, y = classes(1000, 10, 32, 8.0, seed=0)
    mv = probe_accuracy(T, y)
    assert mv.metric == "probe_accuracy" and mv.estimator == "logistic_regression"
    assert mv.value > 0.97 and mv.ci_low <= mv.value <= mv.ci_high <= 1.0
    assert mv.params["chance"] == pytest.approx(
        float(np.bincount(y.numpy()).max()) / 1000
    )
    assert mv.params["cv_used"] == 5 and mv.flags == []
    mi = estimate_mi(T, y, "probe", n_subsamples=0)
    assert 0.9 * mi.params["h_y"] < mi.value <= mi.params["h_y"]
    assert mi.params["accuracy"] == pytest.approx(mv.value)  # the same folds


def test_random_labels_read_at_chance():
    # Labels independent of T (seed 1): accuracy within 0.06 of the majority share
    # (s.d. of a 1000-row accuracy near 0.1 is about 0.01), MI bound near 0.
    g = torch.Generator().manual_seed(1)
    T = torch.randn(1000, 32, generator=g)
    y = torch.randint(0, 10, (1000,), generator=g)
    mv = probe_accuracy(T, y)
    assert abs(mv.value - mv.params["chance"]) < 0.06
    mi = estimate_mi(T, y, "probe", n_subsamples=0)
    assert 0.0 <= mi.value < 0.05
    assert mi.params["cross_entropy"] > mi.params["h_y"] - 0.05


def test_probe_never_exceeds_the_label_entropy():
    for seed in range(3):
        T, y = classes(300, 3, 8, 3.0 * seed, seed)
        mv = estimate_mi(T, y, "probe", n_subsamples=0)
        assert 0.0 <= mv.value <= mv.params["h_y"]


def test_wide_layers_are_reduced_by_pca():
    T, y = classes(400, 4, 600, 6.0, seed=0)
    mv = probe_accuracy(T, y, max_dim=64)
    assert mv.flags == ["pca_reduced"]
    assert mv.params["n_components"] == 64 and mv.params["max_dim"] == 64
    assert mv.value > 0.9
    assert probe_accuracy(T, y).params["max_dim"] == 256  # None: the default cap


def test_rare_class_lowers_the_fold_count():
    T, y = classes(200, 2, 4, 4.0, seed=0)
    y[:3] = 2  # a class of 3 samples: 3 folds
    mv = probe_accuracy(T, y, cv=5)
    assert mv.params["cv_used"] == 3 and mv.params["cv"] == 5
    assert "cv_reduced" in mv.flags
    mi = estimate_mi(T, y, "probe", n_subsamples=0)
    assert mi.params["cv_used"] == 3 and "cv_reduced" in mi.flags


def test_binary_log_probabilities_are_normalised():
    T, y = classes(200, 2, 4, 1.0, seed=0)
    folds = cross_validate(T.double().numpy(), y.numpy(), 4, seed=0)
    assert np.all(folds.log_p_true <= 0) and np.all(np.isfinite(folds.log_p_true))
    assert len(folds.fold_accuracies) == 4


def test_determinism_by_seed():
    T, y = classes(300, 3, 8, 1.0, seed=0)
    a, b = probe_accuracy(T, y, seed=4), probe_accuracy(T, y, seed=4)
    assert a == b
    c = probe_accuracy(T, y, seed=5)
    assert c.params["fold_accuracies"] != a.params["fold_accuracies"]


def test_bad_inputs():
    T, y = classes(100, 2, 4, 1.0, seed=0)
    with pytest.raises(InvalidInputError, match="integer class labels"):
        probe_accuracy(T, y.float())
    with pytest.raises(InvalidInputError, match="same number of samples"):
        probe_accuracy(T, y[:-1])
    with pytest.raises(InvalidInputError, match="cv must be"):
        probe_accuracy(T, y, cv=1)
    with pytest.raises(InvalidInputError, match="max_dim"):
        probe_accuracy(T, y, max_dim=0)
    with pytest.raises(DataError, match="at least 2 classes"):
        probe_accuracy(T, torch.zeros(100, dtype=torch.int64))
    y1 = y.clone()
    y1[0] = 7
    with pytest.raises(DataError, match="at least 2"):
        probe_accuracy(T, y1)
    T[0, 0] = float("inf")
    with pytest.raises(DataError, match="NaN or infinite"):
        probe_accuracy(T, y)
