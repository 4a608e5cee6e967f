"""Receptive fields: composition rules, mass radii, and Luo et al.'s sqrt(k) law."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis import analyse, build_model
from analysis.receptive_field import (
    effective_field,
    mass_radius,
    theoretical_fields,
)


def _stack(k: int, seed: int, channels: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(k):
        layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1)]
        layers += [nn.ReLU()]
    return nn.Sequential(*layers)


def test_composition_of_stride_dilation_pooling_and_transposed_convs() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),  # r 3, j 2
        nn.Conv2d(2, 2, 3, dilation=2, padding=2),  # r 3 + 2*2*2 = 11
        nn.MaxPool2d(2),  # r 11 + 1*2 = 13, j 4
        nn.ReLU(),  # keeps the field
        nn.ConvTranspose2d(2, 2, 2, stride=2),  # r 13, j 2
        nn.Conv2d(2, 2, (1, 3), padding=(0, 1)),  # r (13, 13 + 2*2 = 17)
    )
    fields = theoretical_fields(net, torch.zeros(1, 1, 32, 32))
    assert fields["0"].size == (3, 3) and fields["0"].jump == (2, 2)
    assert fields["1"].size == (11, 11)
    assert fields["2"].size == (13, 13) and fields["2"].jump == (4, 4)
    assert fields["3"] == fields["2"]
    assert fields["4"].size == (13, 13) and fields["4"].jump == (2, 2)
    assert fields["5"].size == (13, 17) and fields["5"].radius == 8.5


def test_a_flat_input_has_no_field() -> None:
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    assert theoretical_fields(net, torch.zeros(1, 8)) == {}


def test_mass_radius_known_answers() -> None:
    delta = torch.zeros(9, 9)
    delta[4, 4] = 1.0
    assert mass_radius(delta, 0.5) == pytest.approx(0.25)
    assert mass_radius(delta, 0.9) == pytest.approx(0.45)
    square = torch.zeros(9, 9)
    square[3:6, 3:6] = 1.0  # centre 1/9 of the mass, its ring 8/9
    assert mass_radius(square, 0.5) == pytest.approx(0.5 + (0.5 - 1 / 9) / (8 / 9))
    assert mass_radius(square, 1.0) == pytest.approx(1.5)


def test_effective_radius_grows_like_sqrt_k_and_theoretical_like_k() -> None:
    """k = 1..8 random 3x3 conv+ReLU layers (8 channels, seed 0), 16 samples of
    N(0, 1) noise at 48x48 (seed 0). Luo et al. 2016: the effective field's radius
    grows like sqrt(k); at k <= 8 the pixel grid adds about half a pixel, so the
    fitted exponent of the 50% radius is 0.60-0.61 over seeds 0-1 with and without
    ReLU (measured). Tolerance: [0.4, 0.75]. The theoretical side is exactly
    2k + 1 pixels wide, exponent 1 for its half-width (size - 1) / 2 = k."""
    x = torch.randn(16, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    effective, theoretical = [], []
    for k in range(1, 9):
        net = _stack(k, seed=0)
        last = str(2 * k - 1)
        field = theoretical_fields(net, x[:1])[last]
        assert field.size == (2 * k + 1, 2 * k + 1)
        maps, centre = effective_field(net, x, last)
        assert centre == (24, 24)
        effective.append(mass_radius(maps.mean(0), 0.5))
        theoretical.append((field.size[0] - 1) / 2)
    logk = np.log(np.arange(1, 9))
    slope = np.polyfit(logk, np.log(effective), 1)[0]
    assert 0.4 <= slope <= 0.75, effective
    assert np.polyfit(logk, np.log(theoretical), 1)[0] == pytest.approx(1.0)
    assert all(e < t + 0.5 for e, t in zip(effective, theoretical, strict=True))


def test_the_unet_bottom_sees_more_than_its_first_stage() -> None:
    torch.manual_seed(0)
    net = build_model("unet", {"base_channels": 4, "depth": 2})
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    fields = theoretical_fields(net, x[:1])
    assert fields["down1"].size == (5, 5)  # two 3x3 convs
    assert fields["bottom"].radius > 2 * fields["down1"].radius
    r90 = {
        name: mass_radius(effective_field(net, x, name)[0].mean(0), 0.9)
        for name in ("down1", "bottom")
    }
    assert r90["bottom"] > r90["down1"] + 1.0, r90


def test_no_hook_is_left_when_the_model_raises() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.head = nn.Conv2d(1, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.conv(x)
            raise RuntimeError("broken")  # before head: its field is never reached

    net = Broken()
    with pytest.raises(RuntimeError, match="broken"):
        effective_field(net, torch.zeros(2, 1, 9, 9), "head")
    with pytest.raises(RuntimeError, match="broken"):
        theoretical_fields(net, torch.zeros(1, 1, 9, 9))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert net.training  # the mode is restored


def test_the_family_gives_rows_for_feature_maps_and_a_picture(tmp_path) -> None:
    net = _stack(3, seed=0)
    x = torch.randn(20, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    cfg = {
        "samples": 20,
        "layers": "all",
        "metrics": ["receptive_field"],
        "receptive_field": {"samples": 8, "resamples": 50},
    }
    result = analyse(net, x, cfg, device="cpu", artifacts_dir=tmp_path)
    layer = result.layer("4")  # the third conv
    theory = layer.metric("receptive_field_radius", "theoretical")
    assert theory.value == 3.5 and theory.params["size"] == [7, 7]
    r50 = layer.metric("receptive_field_radius", "effective_50")
    r90 = layer.metric("receptive_field_radius", "effective_90")
    assert r50.ci_low <= r50.value <= r50.ci_high
    assert 0 < r50.value < r90.value <= 3.5
    assert r50.n_samples == 8
    picture = tmp_path / r50.params["picture"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not math.isnan(r90.value)
