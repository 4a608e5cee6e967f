"""Plain records shared by the analysis modules and the result schema.

They are dataclasses with JSON-ready fields (str, int, float, None, lists, dicts), so
``dataclasses.asdict`` gives what the result JSON holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MetricValue:
    """One number measured at one layer by one estimator.

    ``value``, ``ci_low`` and ``ci_high`` are ``None`` when not finite; ``reason`` then
    says why (``"all points identical"``, ``"fewer samples than k+1"``, ...).
    ``flags`` are warnings that do not void the value (an InfoNCE bound close to
    its ``ln(batch)`` ceiling, a KSG estimate on data reduced by PCA, ...).
    """

    metric: str  # "intrinsic_dimension", later "mi_input", "mi_output", ...
    estimator: str  # "twonn", "mle", "pca90", "participation_ratio", ...
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_samples: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    flags: list[str] = field(default_factory=list)  # e.g. "near_ceiling"

    def __post_init__(self) -> None:
        bad = [
            name
            for name in ("value", "ci_low", "ci_high")
            if getattr(self, name) is not None
            and not math.isfinite(getattr(self, name))
        ]
        for name in bad:
            setattr(self, name, None)
        if bad and self.reason is None:
            self.reason = f"non-finite {', '.join(bad)}"
        for name in ("value", "ci_low", "ci_high"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, float(v))


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


@dataclass
class Bottleneck:
    """A point where the representation narrows by ``factor`` and widens again later.

    ``width_in`` is the widest width before it (since the last narrowing began),
    ``width`` its own width, ``width_out`` the first width after it that is at least
    ``factor`` times wider; ``ratio = width_in / width``. ``kind`` says how it narrows:
    ``"channel"`` (fewer channels, same spatial size), ``"spatial"`` (smaller spatial
    size, channels not fewer), ``"channel+spatial"`` or ``"dense"`` (1-d features).
    ``skip_connection`` is true when the enclosing block adds (or concatenates) its
    input back around the bottleneck, false when it does not, ``None`` when it could
    not be told (the model could not be traced by torch.fx).
    """

    layer: str
    block: str
    width_in: int
    width: int
    width_out: int
    ratio: float
    kind: str
    skip_connection: bool | None
