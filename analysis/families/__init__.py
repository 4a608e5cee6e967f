"""The metric families, one module each, registered once; the pipeline loops here.

A family implements :class:`Family`: ``layer_rows`` measures one captured layer
(``id``, ``mi``, ``probe``), ``section`` measures across layers and returns the
family's result section (``cka``, ``attribution``). What a family needs (labels,
gradients, an artifacts folder, a minimum sample count) and its config section are
declared in ``contract.families``; a family registered here without a declaration
there, or declared without an implementation, is an error at import.

A new family: its declaration in ``contract.families``, its module here (with
``@register``), its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.config import AnalysisConfig
from analysis.types import Bottleneck, LayerInfo, MetricValue
from contract.families import FAMILIES, FamilySpec

__all__ = ["REGISTRY", "Context", "Family", "register"]


@dataclass
class Context:
    """What every family may read: the run's samples, model and captures.

    ``xs`` (n, ...) on the model's device; ``ys`` (n,) or ``None``;
    ``activations``: layer name -> (n, stored width) from the one shared capture;
    ``auto_layers``: the names ``layers="auto"`` selects (for families that look
    at blocks and stages only); ``layers``: the result's layer records, filled as
    the per-layer families run; ``cache``: per-run values a family computes once;
    ``sections``: the result sections computed so far (a family's ``after`` ones);
    ``data_x`` / ``data_y``: the whole dataset where it was given, not only the
    run's samples (``capacity`` scores a split of its rows), else ``None``.
    """

    model: nn.Module
    xs: torch.Tensor
    ys: torch.Tensor | None
    config: AnalysisConfig
    layer_infos: list[LayerInfo]
    activations: dict[str, torch.Tensor]
    bottlenecks: list[Bottleneck]
    auto_layers: set[str]
    artifacts_dir: Path | None
    layers: list[Any] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    data_x: torch.Tensor | None = None
    data_y: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return len(self.xs)

    def section(self, family: str) -> Any:
        return self.config.section(family)


class Family:
    """A metric family. Override ``layer_rows`` or ``section`` (or both)."""

    name: str = ""

    @property
    def spec(self) -> FamilySpec:
        return FAMILIES[self.name]

    def check(
        self, config: AnalysisConfig, ys: torch.Tensor | None, output: Any
    ) -> None:
        """Refuse, before any long work, what this family cannot do with these
        labels and this model output (``output``: the dry run's, 2 samples)."""

    def layer_rows(
        self, ctx: Context, info: LayerInfo, acts: torch.Tensor
    ) -> list[MetricValue]:
        """Rows of one layer; ``acts`` (n, stored width)."""
        return []

    def void_rows(self, ctx: Context, reason: str) -> list[MetricValue]:
        """The rows ``layer_rows`` would give, ``null`` with ``reason``: what a
        layer keeps of this family when it fails there."""
        return []

    def section(self, ctx: Context) -> Any:
        """The family's result section (``spec.section``), or ``None``."""
        return None

    def void_section(self, reason: str) -> Any:
        """The section when the family failed: says why, holds no numbers."""
        return {"reason": reason}


REGISTRY: dict[str, Family] = {}


def register(cls: type[Family]) -> type[Family]:
    """Register a family implementation under its declared name (once)."""
    if cls.name not in FAMILIES:
        raise ValueError(f"family {cls.name!r} is not declared in contract.families")
    if cls.name in REGISTRY:
        raise ValueError(f"family {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def void(
    metric: str, estimator: str, n: int, reason: str, params: dict | None = None
) -> MetricValue:
    """A ``null`` row with its reason."""
    return MetricValue(
        metric, estimator, None, n_samples=n, params=dict(params or {}), reason=reason
    )


# The families register themselves on import.
from analysis.families import (  # noqa: E402, F401
    attribution,
    capacity,
    cka,
    id,
    latent,
    mi,
    necks,
    probe,
    receptive_field,
    skips,
)

_missing = set(FAMILIES) - set(REGISTRY)
if _missing:  # pragma: no cover - caught by the import in every test
    raise ImportError(f"declared families without an implementation: {_missing}")
