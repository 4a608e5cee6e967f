"""Small U-Net (Ronneberger et al. 2015) with concatenated skip connections.

Each down step halves H and W and doubles the channels, so the flattened width
``C*H*W`` halves: ``bottom`` has the most channels but is the narrowest part.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import UNetConfig


class DoubleConv(nn.Sequential):
    """``conv1, act1, conv2, act2``: two 3x3 convs that keep H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(c_in, c_out, 3, padding=1),
                act1=nn.ReLU(),
                conv2=nn.Conv2d(c_out, c_out, 3, padding=1),
                act2=nn.ReLU(),
            )
        )


class Down(nn.Sequential):
    """``pool`` (2x2 max, halves H and W), then ``conv`` (a :class:`DoubleConv`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            OrderedDict(pool=nn.MaxPool2d(2), conv=DoubleConv(c_in, c_out))
        )


class Up(nn.Module):
    """``upsample`` (2x2 transposed conv, halves channels), concatenation with the
    skip from the matching down step, then ``conv`` (a :class:`DoubleConv`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)  # (B, c_out, 2H, 2W)
        return self.conv(torch.cat([skip, x], dim=1))  # (B, 2*c_out, 2H, 2W) in


class UNet(nn.Module):
    """``down1`` (full size) ... ``down{depth}``, ``bottom``, ``up1`` (deepest) ...
    ``up{depth}``, ``head`` (1x1 conv).

    Input ``(B, in_channels, H, W)`` with H and W multiples of ``2**depth``; output
    ``(B, out_channels, H, W)``. ``down{i}`` outputs ``base * 2**(i-1)`` channels at
    ``H / 2**(i-1)``; ``bottom`` outputs ``base * 2**depth`` at ``H / 2**depth``.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        chans = [cfg.base_channels * 2**i for i in range(cfg.depth + 1)]
        self.down1: nn.Module = DoubleConv(cfg.in_channels, chans[0])
        for i in range(1, cfg.depth):
            self.add_module(f"down{i + 1}", Down(chans[i - 1], chans[i]))
        self.bottom = Down(chans[-2], chans[-1])
        for i in range(cfg.depth):
            c = chans[cfg.depth - i]
            self.add_module(f"up{i + 1}", Up(c, c // 2))
        self.head = nn.Conv2d(chans[0], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.config.depth
        skips = []
        for i in range(depth):
            x = getattr(self, f"down{i + 1}")(x)
            skips.append(x)
        x = self.bottom(x)
        for i in range(depth):
            x = getattr(self, f"up{i + 1}")(x, skips[depth - 1 - i])
        return self.head(x)


@register_architecture("unet")
def build_unet(config: dict[str, Any]) -> UNet:
    """Build a :class:`UNet`.

    Config keys (defaults):

    - ``in_channels`` (1): input image channels.
    - ``out_channels`` (1): output channels (per-pixel prediction).
    - ``base_channels`` (16): channels of ``down1``; doubled at each down step.
    - ``depth`` (3): number of down (and up) steps; H and W must be multiples of
      ``2**depth``.
    """
    return UNet(parse_config("unet", UNetConfig, config))
