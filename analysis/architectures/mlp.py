"""Multi-layer perceptron; a narrow entry in ``widths`` is a dense bottleneck."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import MLPConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


class MLP(nn.Sequential):
    """``flatten, fc0, act0, fc1, act1, ..., head``: Linear layers with one
    activation module per layer and a Linear ``head`` without activation.

    Input ``(B, in_features)`` or ``(B, ...)`` with ``in_features`` elements per
    sample (flattened first); output ``(B, out_features)``.
    """

    def __init__(self, cfg: MLPConfig) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = cfg.in_features
        for i, w in enumerate(cfg.widths):
            layers[f"fc{i}"] = nn.Linear(width, w)
            layers[f"act{i}"] = _ACTIVATIONS[cfg.activation]()
            width = w
        layers["head"] = nn.Linear(width, cfg.out_features)
        super().__init__(layers)
        self.config = cfg


@register_architecture("mlp")
def build_mlp(config: dict[str, Any]) -> MLP:
    """Build an :class:`MLP`.

    Config keys (defaults):

    - ``in_features`` (64): features per sample after flattening.
    - ``widths`` ([256, 16, 256]): hidden widths; a narrow entry is a bottleneck.
    - ``out_features`` (10): width of the ``head``.
    - ``activation`` ("relu"): ``"relu"``, ``"tanh"`` or ``"gelu"``.
    """
    return MLP(parse_config("mlp", MLPConfig, config))
