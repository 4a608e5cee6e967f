"""Skip connections: what the identity carries, against known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis import analyse, build_model
from analysis.bottlenecks import find_bottlenecks
from analysis.capture import profile
from analysis.skips import find_join, skip_statistics

RESNET = {
    "layers": [2, 1],
    "widths": [8, 16],
    "stem_width": 8,
    "small_input": True,
    "in_channels": 1,
    "num_classes": 10,
}


class Residual(nn.Module):
    """``x + up(down(x))``: a 4-wide neck inside a 16-wide residual branch."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Linear(16, 4, bias=False)
        self.up = nn.Linear(4, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


def _scaled_identity_net(c: float, basis: torch.Tensor) -> nn.Module:
    """Inputs in the span of ``basis`` (4, 16, orthonormal rows): the branch is
    ``c * x`` exactly, so the identity share is 1 / (1 + c^2), cosine 1."""
    stem = nn.Linear(16, 16, bias=False)
    block = Residual()
    with torch.no_grad():
        stem.weight.copy_(torch.eye(16))
        block.down.weight.copy_(basis)  # (4, 16): x -> z
        block.up.weight.copy_(c * basis.T)  # (16, 4): z -> c x
    return nn.Sequential(stem, block)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet", RESNET).eval()


def test_the_identity_share_of_a_scaled_identity_branch() -> None:
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 4, generator=gen))[0].T  # (4, 16)
    x = torch.randn(64, 4, generator=gen) @ basis  # (64, 16) in the span
    net = _scaled_identity_net(0.5, basis)
    (neck,) = find_bottlenecks(profile(net, x[:2]), model=net)
    assert (neck.layer, neck.skip_connection) == ("1.down", True)
    join = find_join(net, neck.layer, neck.block)
    assert join is not None and (join.block, join.kind) == ("1", "add")
    stats = skip_statistics(net, x, join, batch_size=16, seed=0)
    assert stats.share == pytest.approx(torch.full((64,), 0.8), abs=1e-6)
    assert stats.cosine == pytest.approx(torch.ones(64), abs=1e-6)
    assert stats.cka_input_output == pytest.approx(1.0, abs=1e-9)
    assert stats.cka_input_branch == pytest.approx(1.0, abs=1e-9)


def test_a_zeroed_branch_gives_share_one_and_cka_one() -> None:
    net = _resnet()
    block = net.layer1[1]  # no downsample: the identity is the block input
    with torch.no_grad():
        block.bn3.weight.zero_()
        block.bn3.bias.zero_()
    x = torch.randn(48, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    cfg = {"samples": 48, "batch_size": 16, "metrics": ["skips"]}
    result = analyse(net, x, cfg, device="cpu")
    by_layer = {entry["layer"]: entry for entry in result.sections["skips"]}
    assert set(by_layer) == {"layer1.1.conv2", "layer2.0.conv2"}
    zeroed = {m["metric"]: m for m in by_layer["layer1.1.conv2"]["metrics"]}
    assert by_layer["layer1.1.conv2"]["block"] == "layer1.1"
    share = zeroed["skip_identity_share"]
    assert share["value"] == pytest.approx(1.0, abs=1e-12)
    assert share["ci_low"] == pytest.approx(1.0, abs=1e-12)
    assert zeroed["cka_block_input_output"]["value"] == pytest.approx(1.0, abs=1e-9)
    branch = zeroed["cka_block_input_branch"]
    assert branch["value"] is None and "branch is constant" in branch["reason"]
    live = {m["metric"]: m for m in by_layer["layer2.0.conv2"]["metrics"]}
    assert 0.0 < live["skip_identity_share"]["value"] < 1.0
    assert -1.0 <= live["skip_cosine"]["value"] <= 1.0
    assert not any(m._forward_pre_hooks for m in net.modules())


def test_a_bottleneck_without_skip_has_no_entry() -> None:
    torch.manual_seed(0)
    net = build_model("mlp", {"in_features": 16, "widths": [32, 4, 32]})
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    result = analyse(net, x, {"samples": 40, "metrics": ["skips"]}, device="cpu")
    assert [b.skip_connection for b in result.bottlenecks] == [False]
    assert result.sections["skips"] == []


def test_a_unet_joins_by_concatenation_around_its_bottom() -> None:
    torch.manual_seed(0)
    net = build_model("unet", {"base_channels": 4, "depth": 2})
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    result = analyse(net, x, {"samples": 16, "metrics": ["skips"]}, device="cpu")
    (entry,) = result.sections["skips"]
    assert entry["join"] == "cat" and entry["block"] == ""
    rows = {m["metric"]: m for m in entry["metrics"]}
    assert 0.0 < rows["skip_identity_share"]["value"] < 1.0
    assert rows["skip_cosine"]["reason"] == "a concatenation"
