"""The probe family and the ``probe`` MI estimator fit the same folds once."""

import numpy as np
import pytest
import torch

from analysis import probes
from analysis.mutual_information import estimate_mi
from analysis.probes import cross_validate, probe_accuracy


def counting_fits(monkeypatch):
    calls = []
    real = probes._cross_validate

    def counted(*args):
        calls.append(args[2:])
        return real(*args)

    monkeypatch.setattr(probes, "_cross_validate", counted)
    monkeypatch.setattr(probes, "_FOLDS", probes._FoldsCache(probes._FOLDS_KEPT))
    return calls


def data(seed):
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(120, 6, generator=g)
    y = (T[:, 0] + 0.5 * torch.randn(120, generator=g) > 0).long()
    return T, y


def test_same_inputs_are_fitted_once(monkeypatch):
    calls = counting_fits(monkeypatch)
    T, y = data(0)
    feats, labels = T.double().numpy(), y.numpy()
    first = cross_validate(feats, labels, 4, seed=0)
    again = cross_validate(feats.copy(), labels.copy(), 4, seed=0)
    assert again is first and len(calls) == 1
    with pytest.raises(ValueError):  # kept results are read-only
        first.log_p_true[0] = 0.0
    # Another seed, fold count or a changed feature is a new fit.
    cross_validate(feats, labels, 4, seed=1)
    cross_validate(feats, labels, 3, seed=0)
    moved = feats.copy()
    moved[5, 2] += 1e-9
    cross_validate(moved, labels, 4, seed=0)
    assert len(calls) == 4


@pytest.mark.parametrize("n_subsamples", [0, 5])
def test_probe_family_and_mi_probe_share_the_full_sample_fit(monkeypatch, n_subsamples):
    # seed 0, 120 rows, 5 folds: the probe accuracy reads the folds that the MI
    # estimator's point estimate fitted, also after its interval's subsample fits;
    # the values equal fresh fits exactly.
    T, y = data(1)
    fresh = probe_accuracy(T, y, seed=0, cv=5)
    calls = counting_fits(monkeypatch)
    mi = estimate_mi(T, y, "probe", seed=0, cv=5, n_subsamples=n_subsamples)
    n_after_mi = len(calls)
    kept = probe_accuracy(T, y, seed=0, cv=5)
    assert len(calls) == n_after_mi == 1 + n_subsamples
    assert kept.value == fresh.value
    assert kept.params["fold_accuracies"] == fresh.params["fold_accuracies"]
    assert mi.value is not None and mi.value > 0.1
    assert np.isclose(mi.params["accuracy"], fresh.value, atol=1e-12)
