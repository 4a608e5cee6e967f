"""Bottlenecks of the built-in architectures, where they are known by construction."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from analysis.architectures import build_model
from analysis.bottlenecks import find_bottlenecks, mark_bottlenecks, profile_points
from analysis.capture import profile
from analysis.errors import InvalidInputError
from analysis.types import Bottleneck, LayerInfo


def necks(
    name: str, config: dict[str, Any], shape: tuple[int, ...]
) -> list[Bottleneck]:
    torch.manual_seed(0)
    model = build_model(name, config)
    return find_bottlenecks(profile(model, torch.randn(shape)), model=model)


def test_conv_autoencoder_latent() -> None:
    (neck,) = necks("conv_autoencoder", {"latent_dim": 8}, (2, 1, 32, 32))
    assert neck.layer == "to_latent.fc"
    assert neck.block == "to_latent"
    assert (neck.width_in, neck.width, neck.width_out) == (16 * 16 * 16, 8, 32 * 8 * 8)
    assert neck.ratio == 512.0
    assert neck.kind == "dense"
    assert neck.skip_connection is False


def test_unet_bottom() -> None:
    # base 8, depth 3 on 32x32: down1 8x32x32 = 8192 ... bottom 64x4x4 = 1024
    (neck,) = necks("unet", {"base_channels": 8, "depth": 3}, (2, 1, 32, 32))
    assert neck.layer == "bottom.conv.conv2"
    assert (neck.width_in, neck.width, neck.width_out) == (8192, 1024, 2048)
    assert neck.kind == "spatial"
    assert neck.skip_connection is True  # the concatenated skips go around it


def test_every_resnet_block() -> None:
    config = {
        "layers": [2, 2],
        "widths": [16, 32],
        "stem_width": 64,
        "small_input": True,
        "num_classes": 10,
    }
    found = necks("resnet", config, (2, 3, 32, 32))
    assert [n.block for n in found] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert all(n.layer == f"{n.block}.conv2" for n in found)
    assert all(n.skip_connection is True for n in found)
    assert [n.kind for n in found] == [
        "channel",
        "channel",
        "channel+spatial",
        "channel",
    ]
    # layer2.0: 64x32x32 in, conv2 at 32x16x16 (stride 2), conv3 out at 128x16x16
    assert (found[2].width_in, found[2].width, found[2].width_out) == (
        65536,
        8192,
        32768,
    )


def test_constant_width_mlp_has_none() -> None:
    assert necks("mlp", {"in_features": 64, "widths": [64, 64, 64]}, (2, 64)) == []


def test_narrow_mlp_has_exactly_one_dense_without_skip() -> None:
    (neck,) = necks("mlp", {"in_features": 64, "widths": [256, 16, 256]}, (2, 64))
    assert neck == Bottleneck(
        layer="fc1",
        block="",
        width_in=256,
        width=16,
        width_out=256,
        ratio=16.0,
        kind="dense",
        skip_connection=False,
        pattern="dense",
    )


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(8, 64)
        self.fc1 = nn.Linear(64, 4)
        self.fc2 = nn.Linear(4, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.fc0(x))
        if h.sum() > 0:
            h = -h
        return self.fc2(h)


def test_untraceable_model_gives_unknown_skip() -> None:
    model = Branchy()
    layers = profile(model, torch.randn(2, 8))
    (neck,) = find_bottlenecks(layers, model=model)
    assert neck.layer == "fc1"
    assert neck.skip_connection is None


class DenseSkip(nn.Module):
    """A dense bottleneck with the input concatenated around it."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Linear(64, 4)
        self.up = nn.Linear(4, 64)
        self.out = nn.Linear(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([x, self.up(self.down(x))], dim=1))


def test_concatenated_skip_is_found_and_no_model_means_unknown() -> None:
    model = DenseSkip()
    # the profile starts at ``down``; feed one wide layer first via a Sequential
    seq = nn.Sequential(nn.Linear(8, 64), model)
    layers = profile(seq, torch.randn(2, 8))
    (neck,) = find_bottlenecks(layers, model=seq)
    assert (neck.layer, neck.block) == ("1.down", "1")
    assert neck.skip_connection is True
    (blind,) = find_bottlenecks(layers)
    assert blind.layer == "1.down"
    assert blind.skip_connection is None


def test_factor_controls_what_counts() -> None:
    layers = profile(
        build_model("mlp", {"in_features": 8, "widths": [64, 24, 64]}),
        torch.randn(2, 8),
    )
    assert [n.layer for n in find_bottlenecks(layers, factor=2.0)] == ["fc1"]
    assert find_bottlenecks(layers, factor=3.0) == []
    with pytest.raises(InvalidInputError):
        find_bottlenecks(layers, factor=1.0)


def test_profile_points_are_weight_layers() -> None:
    model = build_model("resnet", {"layers": [1], "widths": [4], "small_input": True})
    layers = profile(model, torch.randn(2, 3, 8, 8))
    names = [p.name for p in profile_points(layers, model)]
    assert names[:5] == [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.0.conv3",
        "layer1.0.downsample.0",
    ]
    assert names == [p.name for p in profile_points(layers)]  # by class name


def test_mark_bottlenecks() -> None:
    layers = [
        LayerInfo("a", 0, "Linear", (8,), 8, "", True),
        LayerInfo("b", 1, "Linear", (2,), 2, "", True),
    ]
    neck = Bottleneck("b", "", 8, 2, 8, 4.0, "dense", None)
    assert mark_bottlenecks(layers, [neck]) == {"b"}
    assert mark_bottlenecks(layers, []) == set()


def test_resnet_first_block_is_compared_after_the_max_pool() -> None:
    # 7x7/2 stem on 64x64: conv1 64x32x32, max-pool to 64x16x16; layer1.0.conv2 is
    # 16x16x16: fewer channels than the block's input and output, same size
    config = {"layers": [1, 1], "widths": [16, 32], "num_classes": 10}
    found = necks("resnet", config, (2, 3, 64, 64))
    assert found[0].layer == "layer1.0.conv2"
    assert found[0].width_in == 64 * 32 * 32  # the peak is still the stem
    assert found[0].kind == "channel"
    assert [n.pattern for n in found] == ["classic", "classic"]


def test_token_outputs_narrow_in_features() -> None:
    # (tokens, features) from Linear layers: 4 tokens, 32 -> 8 -> 32 features
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8), nn.Linear(8, 32))
    (neck,) = find_bottlenecks(profile(model, torch.randn(2, 4, 16)), model=model)
    assert (neck.layer, neck.kind, neck.pattern) == ("1", "channel", "classic")
    (blind,) = find_bottlenecks(profile(model, torch.randn(2, 4, 16)))
    assert blind.kind == "channel"  # read from the class name without a model
