"""attribute_bottlenecks on a seeded subset of the samples, bootstrap intervals of the
unit summaries, and the channels-last layout on the CPU.

Tolerances: attributions of one sample computed in another batch or memory layout
agree to float rounding (atol 1e-5 on values of order 1, rtol 1e-5 on summaries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import LayerConductance
from torch import nn

from analysis._attr_core import attribution_scope
from analysis._attr_methods import prepare
from analysis.attribution import attribute_bottlenecks, unit_attribution, unit_summary
from analysis.errors import InvalidInputError
from analysis.types import Bottleneck
from contract.families import AttributionSection


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).eval()


NECK = [Bottleneck("2", "", 6 * 64, 4 * 64, 5, 1.5, "channel", None)]


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def test_summary_subset_is_the_seeded_prefix_and_holds_the_maps(
    tmp_path: Path,
) -> None:
    model, x = _cnn(), torch.randn(30, 3, 8, 8)
    kw = {"n_maps": 4, "n_steps": 6, "seed": 3, "resamples": 50}
    (sub,) = attribute_bottlenecks(model, x, NECK, tmp_path / "a", n_samples=9, **kw)
    (full,) = attribute_bottlenecks(
        model, x, NECK, tmp_path / "b", n_samples="all", **kw
    )
    perm = _perm(30, 3)
    assert sub["samples"] == full["samples"] == perm[:4].sort().values.tolist()
    assert sub["summary_samples"] == 9 and full["summary_samples"] == 30
    rows = {m.metric: m for m in sub["metrics"] if m.estimator == "conductance"}
    eff = rows["attribution_effective_units"]
    assert eff.n_samples == 9 and eff.params["subset_of"] == 30
    # the subset's summary is unit_summary over the attributions of its samples
    rows_9 = perm[:9].sort().values
    expected = unit_summary(
        unit_attribution(model, "2", x[rows_9], n_steps=6), resamples=50, seed=3
    )["metrics"][0]
    assert eff.value == pytest.approx(expected.value, rel=1e-5)
    assert eff.ci_low == pytest.approx(expected.ci_low, rel=1e-5)
    assert eff.ci_high == pytest.approx(expected.ci_high, rel=1e-5)
    # the saved maps are the same with either summary subset, and equal captum's
    a = np.load(tmp_path / "a" / "2.conductance.npy")
    b = np.load(tmp_path / "b" / "2.conductance.npy")
    assert np.allclose(a, b, atol=1e-5)
    xs = x[perm[:4].sort().values]
    target = model(xs).argmax(1)
    reference = LayerConductance(model, model[2]).attribute(
        xs, target=target, n_steps=6
    )
    assert np.allclose(a, reference.detach().numpy(), atol=1e-5)


def test_fewer_summary_samples_than_maps(tmp_path: Path) -> None:
    model, x = _cnn(), torch.randn(12, 3, 8, 8)
    (r,) = attribute_bottlenecks(
        model, x, NECK, tmp_path, n_samples=2, n_maps=5, n_steps=4, resamples=20
    )
    assert len(r["samples"]) == 5 and r["summary_samples"] == 2
    assert {m.n_samples for m in r["metrics"]} == {2}
    assert np.load(tmp_path / "2.integrated_gradients.npy").shape == (5, 4, 8, 8)
    for bad in (0, -1, 2.5, "some"):
        with pytest.raises(InvalidInputError, match="n_samples"):
            attribute_bottlenecks(model, x, NECK, tmp_path, n_samples=bad)  # type: ignore[arg-type]


def test_a_target_per_sample_follows_the_subset(tmp_path: Path) -> None:
    model, x = _cnn(), torch.randn(20, 3, 8, 8)
    labels = torch.arange(20) % 5
    (r,) = attribute_bottlenecks(
        model, x, NECK, tmp_path, target=labels, n_samples=7, n_maps=3, n_steps=4
    )
    rows = _perm(20, 0)[:7]
    attr = unit_attribution(model, "2", x[rows], target=labels[rows], n_steps=4)
    expected = unit_summary(attr)["effective_units"]
    got = next(m for m in r["metrics"] if m.estimator == "conductance").value
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InvalidInputError, match="indices for 20 samples"):
        attribute_bottlenecks(model, x, NECK, tmp_path, target=labels[:5])


def test_bootstrap_intervals() -> None:
    torch.manual_seed(0)
    a = torch.rand(40, 12) * torch.linspace(0.1, 2, 12)  # (N, U)
    s = unit_summary(a, resamples=300, seed=1)
    for m in s["metrics"]:
        assert m.ci_low is not None and m.ci_high is not None
        assert m.ci_low <= m.value <= m.ci_high
    assert s["metrics"] == unit_summary(a, resamples=300, seed=1)["metrics"]
    # identical samples: every draw is the sample itself
    same = unit_summary(a[:1].repeat(5, 1), resamples=50)["metrics"][0]
    assert same.ci_low == pytest.approx(same.value)
    assert same.ci_high == pytest.approx(same.value)
    assert unit_summary(a)["metrics"][0].ci_low is None  # resamples=0: no interval
    assert unit_summary(torch.zeros(4, 3), resamples=20)["metrics"][0].ci_low is None


class _Views(nn.Module):
    """A model that flattens a feature map with ``view``: channels-last breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc(h.view(len(h), -1))


def test_images_run_channels_last_when_the_model_takes_it() -> None:
    x = torch.randn(6, 3, 8, 8)
    model = _cnn()
    with attribution_scope(model):
        assert prepare(model, x).is_contiguous(memory_format=torch.channels_last)
    views = _Views().eval()
    with attribution_scope(views):
        assert prepare(views, x).is_contiguous()
    attr = unit_attribution(views, "conv", x, n_steps=4)
    assert attr.is_contiguous() and attr.shape == (6, 4, 8, 8)
    reference = LayerConductance(views, views.conv).attribute(
        x, target=views(x).argmax(1), n_steps=4
    )
    assert torch.allclose(attr, reference, atol=1e-5)


def test_contract_section_samples() -> None:
    assert AttributionSection().samples == 48
    assert AttributionSection(samples="all").samples == "all"
    assert AttributionSection(samples=500).samples == 500
    for bad in (0, "some", 2.5, True):
        with pytest.raises(ValueError):
            AttributionSection(samples=bad)
