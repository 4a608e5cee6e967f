"""The analysis result and its JSON form.

The JSON is the contract shared by the CLI (``--out``), the REST API
(``GET /v1/analyses/{id}/results``) and the reporting pipeline. ``SCHEMA_VERSION``
changes whenever a field changes meaning or disappears; new metrics only add rows to
``layers[*].metrics``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig
from analysis.types import Bottleneck, MetricValue

SCHEMA_VERSION = 1


@dataclass
class LayerResult:
    """One captured layer with its metrics (see ``analysis.types.LayerInfo``)."""

    name: str
    index: int
    module: str
    shape: list[int]
    width: int
    is_bottleneck: bool
    projected_to: int | None
    projection: dict[str, Any] | None = None
    metrics: list[MetricValue] = field(default_factory=list)

    def metric(self, metric: str, estimator: str) -> MetricValue | None:
        """The first metric row with this metric and estimator, if any."""
        for m in self.metrics:
            if m.metric == metric and m.estimator == estimator:
                return m
        return None


@dataclass
class AnalysisResult:
    """Everything one analysis measured, with what it needs to be reproduced."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    config: AnalysisConfig
    layers: list[LayerResult]
    bottlenecks: list[Bottleneck]
    provenance: dict[str, Any]
    similarity: dict[str, Any] | None = None  # CKA: {"layers", "matrix", ...}
    attribution: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def layer(self, name: str) -> LayerResult:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "schema_version": self.schema_version,
                "model": self.model,
                "dataset": self.dataset,
                "config": self.config.to_dict(),
                "layers": [asdict(layer) for layer in self.layers],
                "bottlenecks": [asdict(b) for b in self.bottlenecks],
                "provenance": self.provenance,
                # Sections of later metric families come after the core ones.
                "similarity": self.similarity,
                "attribution": self.attribution,
            }
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically: a reader never sees half a file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisResult:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"result schema_version {data.get('schema_version')!r} is not "
                f"{SCHEMA_VERSION}; re-run the analysis with this bottlelens"
            )
        layers = [
            LayerResult(
                **{k: v for k, v in layer.items() if k != "metrics"},
                metrics=[MetricValue(**m) for m in layer["metrics"]],
            )
            for layer in data["layers"]
        ]
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            config=AnalysisConfig.from_dict(data["config"]),
            layers=layers,
            bottlenecks=[Bottleneck(**b) for b in data["bottlenecks"]],
            similarity=data.get("similarity"),
            attribution=data.get("attribution") or [],
            provenance=data["provenance"],
        )

    @classmethod
    def from_json(cls, text: str) -> AnalysisResult:
        return cls.from_dict(json.loads(text))


def _clean(obj: Any) -> Any:
    """JSON-ready copy: tuples to lists, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
