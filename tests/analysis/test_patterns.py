"""Which pattern a bottleneck is, on small models built for each one, and what
counts as a container for ``--layers auto``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from analysis.architectures import build_model
from analysis.bottlenecks import find_bottlenecks, is_container
from analysis.capture import profile
from analysis.pipeline import select_layers


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, c: int, t: int = 6) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            OrderedDict(
                expand=nn.Conv2d(c, c * t, 1),
                act1=nn.ReLU6(),
                depthwise=nn.Conv2d(c * t, c * t, 3, padding=1, groups=c * t),
                act2=nn.ReLU6(),
                project=nn.Conv2d(c * t, c, 1),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Encoder(nn.Module):
    """torchvision's ViT encoder layout: a position embedding, then a dropout, a
    ``Sequential`` of blocks and a norm, each on the previous one's output."""

    def __init__(self, blocks: list[nn.Module], width: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(*blocks)
        self.ln = nn.GroupNorm(1, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos)))


def mobilenet_like() -> nn.Sequential:
    blocks = [InvertedResidual(8) for _ in range(3)]
    return nn.Sequential(
        OrderedDict(stem=nn.Conv2d(3, 8, 3, padding=1), encoder=Encoder(blocks, 8))
    )


def test_inverted_residuals_are_inverted_on_their_projection() -> None:
    model = mobilenet_like()
    layers = profile(model, torch.randn(2, 3, 8, 8))
    found = find_bottlenecks(layers, model=model)
    assert [b.layer for b in found] == [
        "encoder.layers.0.conv.project",
        "encoder.layers.1.conv.project",
    ]
    assert {(b.pattern, b.kind, b.skip_connection) for b in found} == {
        ("inverted", "channel", True)
    }


def test_auto_enters_a_custom_encoder_holding_a_sequential() -> None:
    model = mobilenet_like()
    layers = profile(model, torch.randn(2, 3, 8, 8))
    necks = {b.layer for b in find_bottlenecks(layers, model=model)}
    names = select_layers(model, layers, "auto", necks)
    assert [n for n in names if n.count(".") == 2] == [
        "encoder.layers.0",
        "encoder.layers.1",
        "encoder.layers.2",
    ]


class NotAChain(nn.Module):
    """Children called in order, but the output is not the last child's."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) * 2


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x)


def test_what_is_a_container() -> None:
    assert is_container(nn.Sequential(nn.Linear(2, 2)))
    assert is_container(nn.ModuleList())
    assert is_container(Encoder([nn.Identity()], 4))
    assert not is_container(NotAChain())
    assert not is_container(Unused())  # every child must be called
    assert not is_container(InvertedResidual(4))  # the add comes last
    unet = build_model("unet", {"depth": 1})
    assert not is_container(unet.up1)  # conv reads cat(skip, upsample), not upsample
    resnet = build_model("resnet", {"layers": [1], "widths": [4]})
    assert not is_container(resnet.layer1[0])


def test_patterns_of_the_built_ins() -> None:
    cases = [
        ("resnet", {"layers": [1, 1], "widths": [8, 16]}, (2, 3, 32, 32), False),
        ("unet", {"base_channels": 8, "depth": 3}, (2, 1, 32, 32), True),
        ("conv_autoencoder", {"image_size": 16}, (2, 1, 16, 16), True),
        ("mlp", {"in_features": 64, "widths": [256, 16, 256]}, (2, 64), False),
    ]
    seen = {}
    for name, config, shape, reconstructs in cases:
        torch.manual_seed(0)
        model = build_model(name, config)
        found = find_bottlenecks(
            profile(model, torch.randn(shape)), model=model, reconstructs=reconstructs
        )
        seen[name] = {b.pattern for b in found}
    assert seen == {
        "resnet": {"classic"},
        "unet": {"unet_bottom"},  # its output has the input's size: not latent
        "conv_autoencoder": {"latent"},
        "mlp": {"dense"},
    }
