"""Plain records shared by the analysis modules and the result schema.

``MetricValue`` and ``Bottleneck`` are the contract's result records
(``contract.result``): the library builds them, the service stores and serves the
same models. ``LayerInfo`` describes one captured module call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.result import BottleneckRecord as Bottleneck
from contract.result import MetricRow as MetricValue

__all__ = ["Bottleneck", "LayerInfo", "MetricValue"]


@dataclass
class LayerInfo:
    """One call of one module during a forward pass, in execution (completion) order.

    ``name`` is the module's qualified name from ``named_modules()``; the second and
    later calls of the same module in one forward get ``name#2``, ``name#3``, ...
    ``shape`` is the per-sample output shape (batch dimension dropped); ``width`` is
    its product (the flattened feature count). ``parent`` is the qualified name of the
    enclosing module ("" for a direct child of the model). ``is_leaf`` is true for a
    module without children. ``projected_to`` is the stored width when the layer was
    reduced by a random projection, else ``None``; ``projection`` then records
    ``{"kind", "seed", "width_in", "width_out", "density"...}``.
    """

    name: str
    index: int
    module: str  # class name, e.g. "Conv2d"
    shape: tuple[int, ...]
    width: int
    parent: str
    is_leaf: bool
    projected_to: int | None = None
    projection: dict[str, Any] | None = None
