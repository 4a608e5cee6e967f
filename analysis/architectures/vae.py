"""Variational autoencoder (Kingma & Welling 2014), MLP or convolutional.

``encoder`` maps the input to features, two heads read them: ``logvar`` (the
log-variance of the Gaussian posterior q(z|x)) and ``mu`` (its mean). In training
the decoder reads ``z = mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, I)`` (the
reparameterisation); in eval it reads ``mu`` itself, so the analysis sees the
mean head as the latent bottleneck (``pattern: latent``). The mean head runs last
so that, of the two equally narrow heads, the bottleneck scan keeps it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import VAEConfig


class VAE(nn.Module):
    """Input ``(B, C, S, S)`` or flattened ``(B, C*S*S)``; the output (the
    reconstruction's mean) has the input's shape.

    ``kind="mlp"``: ``encoder`` = flatten, ``fc{i}`` + ``act{i}`` per entry of
    ``hidden``; ``decoder`` mirrors it and ends on a ``Linear`` to ``C*S*S``.
    ``kind="conv"``: ``encoder`` = a stride-2 3x3 conv + ReLU per entry of
    ``hidden`` (channels), then flatten; ``decoder`` = ``fc``, ``unflatten`` and
    stride-2 transposed convs back to ``C`` channels.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder, features = _encoder(cfg)
        self.logvar = nn.Linear(features, cfg.latent_dim)
        self.mu = nn.Linear(features, cfg.latent_dim)
        self.decoder = _decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z|x), each ``(B, latent_dim)``."""
        cfg = self.config
        h = self.encoder(
            x.reshape(x.shape[0], cfg.in_channels, cfg.image_size, cfg.image_size)
        )
        logvar = self.logvar(h)
        return self.mu(h), logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction's mean ``(B, C, S, S)`` for codes ``(B, latent_dim)``."""
        cfg = self.config
        out = self.decoder(z)
        return out.reshape(z.shape[0], cfg.in_channels, cfg.image_size, cfg.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(x)
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z).reshape(x.shape)


def _encoder(cfg: VAEConfig) -> tuple[nn.Sequential, int]:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if cfg.kind == "mlp":
        layers["flatten"] = nn.Flatten()
        prev = cfg.in_channels * cfg.image_size**2
        for i, width in enumerate(cfg.hidden):
            layers[f"fc{i}"] = nn.Linear(prev, width)
            layers[f"act{i}"] = nn.ReLU()
            prev = width
        return nn.Sequential(layers), prev
    prev = cfg.in_channels
    for i, ch in enumerate(cfg.hidden):
        layers[f"conv{i}"] = nn.Conv2d(prev, ch, 3, stride=2, padding=1)
        layers[f"act{i}"] = nn.ReLU()
        prev = ch
    layers["flatten"] = nn.Flatten()
    side = cfg.image_size // 2 ** len(cfg.hidden)
    return nn.Sequential(layers), prev * side * side


def _decoder(cfg: VAEConfig) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if cfg.kind == "mlp":
        prev = cfg.latent_dim
        for i, width in enumerate(reversed(cfg.hidden)):
            layers[f"fc{i}"] = nn.Linear(prev, width)
            layers[f"act{i}"] = nn.ReLU()
            prev = width
        layers["out"] = nn.Linear(prev, cfg.in_channels * cfg.image_size**2)
        return nn.Sequential(layers)
    c = cfg.hidden
    side = cfg.image_size // 2 ** len(c)
    layers["fc"] = nn.Linear(cfg.latent_dim, c[-1] * side * side)
    layers["act"] = nn.ReLU()
    layers["unflatten"] = nn.Unflatten(1, (c[-1], side, side))
    outs = [*reversed(c[:-1]), cfg.in_channels]
    for i, (ch_in, ch_out) in enumerate(zip(reversed(c), outs, strict=True)):
        layers[f"deconv{i}"] = nn.ConvTranspose2d(
            ch_in, ch_out, 3, stride=2, padding=1, output_padding=1
        )
        if i < len(c) - 1:
            layers[f"act{i}"] = nn.ReLU()
    return nn.Sequential(layers)


@register_architecture("vae")
def build_vae(config: dict[str, Any]) -> VAE:
    """Build a :class:`VAE`.

    Config keys (defaults):

    - ``kind`` ("mlp"): ``"mlp"`` or ``"conv"``.
    - ``in_channels`` (1), ``image_size`` (8): the input is ``(C, S, S)`` or its
      flattening; for ``"conv"`` a multiple of ``2**len(hidden)``.
    - ``hidden`` ([128]): ``"mlp"``: encoder widths (the decoder mirrors them);
      ``"conv"``: channels of the stride-2 convolutions.
    - ``latent_dim`` (8): width of ``mu`` and ``logvar``.
    """
    return VAE(parse_config("vae", VAEConfig, config))
