"""Small Vision Transformer (Dosovitskiy et al. 2021) with a class token.

The module tree follows ``torchvision.models.VisionTransformer``: ``conv_proj`` cuts
the image into patches, ``encoder`` (a custom module holding the position embedding,
the blocks in a ``ModuleList`` and a final ``ln``) runs the blocks, ``heads`` reads
the class token. Each block is pre-norm: ``x + self_attention(ln_1(x))``, then
``x + mlp(ln_2(x))`` with ``mlp = fc1 (hidden -> mlp_dim), act, fc2 (mlp_dim ->
hidden)``: the residual stream is the narrow part between the MLPs' expansions.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import ViTConfig


class EncoderBlock(nn.Module):
    """Pre-norm transformer block on ``(B, tokens, hidden)``."""

    def __init__(self, hidden: int, mlp_dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(hidden, mlp_dim),
                act=nn.GELU(),
                fc2=nn.Linear(mlp_dim, hidden),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Adds the position embedding, runs ``layers`` in order, then ``ln``."""

    def __init__(self, tokens: int, cfg: ViTConfig) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, cfg.hidden_dim) * 0.02)
        self.layers = nn.ModuleList(
            EncoderBlock(cfg.hidden_dim, cfg.mlp_dim, cfg.num_heads)
            for _ in range(cfg.num_layers)
        )
        self.ln = nn.LayerNorm(cfg.hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embedding  # (B, tokens, hidden)
        for layer in self.layers:
            x = layer(x)
        return self.ln(x)


class VisionTransformer(nn.Module):
    """Input ``(B, in_channels, S, S)``, output ``(B, num_classes)``; ``tokens = (S /
    patch)**2 + 1`` (the class token first)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.hidden_dim
        self.conv_proj = nn.Conv2d(
            cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size
        )
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = Encoder((cfg.image_size // cfg.patch_size) ** 2 + 1, cfg)
        self.heads = nn.Linear(d, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)  # (B, hidden, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, patches, hidden)
        cls = self.class_token.expand(x.shape[0], -1, -1)  # (B, 1, hidden)
        x = self.encoder(torch.cat([cls, x], dim=1))  # (B, tokens, hidden)
        return self.heads(x[:, 0])  # (B, num_classes)


@register_architecture("vit")
def build_vit(config: dict[str, Any]) -> VisionTransformer:
    """Build a :class:`VisionTransformer`.

    Config keys (defaults):

    - ``in_channels`` (3), ``image_size`` (32): a multiple of ``patch_size``.
    - ``patch_size`` (8): square patches, one token each, plus the class token.
    - ``num_layers`` (4): encoder blocks.
    - ``hidden_dim`` (64): width of the residual stream; a multiple of
      ``num_heads``.
    - ``mlp_dim`` (256): hidden width of each block's MLP.
    - ``num_heads`` (4), ``num_classes`` (10).
    """
    return VisionTransformer(parse_config("vit", ViTConfig, config))
