"""The built-in small ``vit``: ``--layers auto`` captures every encoder block, and
the MLP narrowings are ``inverted`` bottlenecks on each block's own projection."""

from __future__ import annotations

import pytest
import torch

from analysis.architectures import build_model
from analysis.bottlenecks import find_bottlenecks, is_container
from analysis.capture import profile
from analysis.errors import InvalidInputError
from analysis.pipeline import analyse, select_layers


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("vit", {})  # image 32, patch 8, 4 layers, 64 / 256


def test_shapes(vit: torch.nn.Module) -> None:
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert vit.encoder.pos_embedding.shape == (1, 17, 64)  # 16 patches + class


def test_mlp_necks_are_inverted_on_each_blocks_projection(
    vit: torch.nn.Module,
) -> None:
    found = find_bottlenecks(profile(vit, torch.randn(2, 3, 32, 32)), model=vit)
    # (17 tokens, 256) -> (17, 64) -> next block's (17, 256); the last block's
    # stream never widens again (norm, head), so it is no bottleneck
    assert [b.layer for b in found] == [f"encoder.layers.{i}.mlp.fc2" for i in range(3)]
    for b in found:
        assert (b.width_in, b.width, b.width_out) == (17 * 256, 17 * 64, 17 * 256)
        assert b.kind == "channel"  # features narrowed, tokens kept
        assert b.pattern == "inverted"
        assert b.skip_connection is True  # x + mlp(ln_2(x))


def test_auto_captures_every_encoder_block(vit: torch.nn.Module) -> None:
    layers = profile(vit, torch.randn(2, 3, 32, 32))
    necks = {b.layer for b in find_bottlenecks(layers, model=vit)}
    names = select_layers(vit, layers, "auto", necks)
    assert [n for n in names if n.count(".") == 2] == [
        f"encoder.layers.{i}" for i in range(4)
    ]
    assert names[0] == "conv_proj" and names[-1] == "heads"
    assert "encoder" not in names and "encoder.ln" not in names  # container, norm
    assert is_container(vit.encoder)
    assert not is_container(vit.encoder.layers[0])  # residual adds


def test_analyse_runs_on_it(vit: torch.nn.Module) -> None:
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = analyse(vit, x, {"metrics": ["id"], "samples": 40}, device="cpu")
    captured = [layer.name for layer in result.layers]
    assert {f"encoder.layers.{i}" for i in range(4)} <= set(captured)
    assert [b.pattern for b in result.bottlenecks] == ["inverted"] * 3


def test_bad_config_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="patch_size"):
        build_model("vit", {"image_size": 30, "patch_size": 8})
