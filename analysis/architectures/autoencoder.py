"""Convolutional autoencoder: strided convs down to a small dense latent and back."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import ConvAutoencoderConfig


class ConvAutoencoder(nn.Module):
    """``encoder`` (stride-2 convs) -> ``to_latent`` (flatten, fc) -> ``from_latent``
    (fc, act, unflatten) -> ``decoder`` (stride-2 transposed convs).

    Input ``(B, C, S, S)`` or flattened ``(B, C*S*S)`` with ``C = in_channels`` and
    ``S = image_size``; the output (the reconstruction) has the input's shape.
    """

    def __init__(self, cfg: ConvAutoencoderConfig) -> None:
        super().__init__()
        self.config = cfg
        c, s = cfg.channels, cfg.image_size // 2 ** len(cfg.channels)
        encoder: OrderedDict[str, nn.Module] = OrderedDict()
        prev = cfg.in_channels
        for i, ch in enumerate(c):
            encoder[f"conv{i}"] = nn.Conv2d(prev, ch, 3, stride=2, padding=1)
            encoder[f"act{i}"] = nn.ReLU()
            prev = ch
        self.encoder = nn.Sequential(encoder)
        self.to_latent = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(), fc=nn.Linear(c[-1] * s * s, cfg.latent_dim)
            )
        )
        self.from_latent = nn.Sequential(
            OrderedDict(
                fc=nn.Linear(cfg.latent_dim, c[-1] * s * s),
                act=nn.ReLU(),
                unflatten=nn.Unflatten(1, (c[-1], s, s)),
            )
        )
        decoder: OrderedDict[str, nn.Module] = OrderedDict()
        outs = [*reversed(c[:-1]), cfg.in_channels]
        for i, (ch_in, ch_out) in enumerate(zip(reversed(c), outs, strict=True)):
            decoder[f"deconv{i}"] = nn.ConvTranspose2d(
                ch_in, ch_out, 3, stride=2, padding=1, output_padding=1
            )
            if i < len(c) - 1:
                decoder[f"act{i}"] = nn.ReLU()
        self.decoder = nn.Sequential(decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        # (B, C*S*S) or (B, C, S, S) -> (B, C, S, S)
        h = x.reshape(x.shape[0], cfg.in_channels, cfg.image_size, cfg.image_size)
        z = self.to_latent(self.encoder(h))  # (B, latent_dim)
        out = self.decoder(self.from_latent(z))  # (B, C, S, S)
        return out.reshape(x.shape)


@register_architecture("conv_autoencoder")
def build_conv_autoencoder(config: dict[str, Any]) -> ConvAutoencoder:
    """Build a :class:`ConvAutoencoder`.

    Config keys (defaults):

    - ``in_channels`` (1): image channels.
    - ``image_size`` (32): height = width; a multiple of ``2**len(channels)``.
    - ``channels`` ([16, 32]): encoder channels, one stride-2 conv each.
    - ``latent_dim`` (8): width of the dense latent (the bottleneck).
    """
    return ConvAutoencoder(
        parse_config("conv_autoencoder", ConvAutoencoderConfig, config)
    )
