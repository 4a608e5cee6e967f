"""The analysis result and its JSON form (``contract.result.ResultDocument``).

The JSON is the contract shared by the CLI (``--out``), the REST API
(``GET /v1/analyses/{id}/results``) and the reporting pipeline. Families that add a
section besides their layer rows (``similarity``, ``attribution``, ...) keep it in
``sections`` under the key the family declares, in the families' order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig, parse_config
from analysis.types import Bottleneck
from contract.families import FAMILIES
from contract.result import SCHEMA_VERSION, ResultDocument, upgrade_result
from contract.result import LayerRecord as LayerResult

__all__ = ["SCHEMA_VERSION", "AnalysisResult", "LayerResult"]

_SECTION_ORDER = [f.section for f in FAMILIES.values() if f.section]


@dataclass
class AnalysisResult:
    """Everything one analysis measured, with what it needs to be reproduced.

    ``warnings``: what the run changed or left out (samples clipped, a family
    skipped or failed on a layer); ``sections``: the families' own sections.
    """

    model: dict[str, Any]
    dataset: dict[str, Any]
    config: AnalysisConfig
    layers: list[LayerResult]
    bottlenecks: list[Bottleneck]
    provenance: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def similarity(self) -> dict[str, Any] | None:
        """The CKA section, when the ``cka`` family ran."""
        return self.sections.get("similarity")

    @property
    def attribution(self) -> list[dict[str, Any]]:
        """The attribution entries, when the ``attribution`` family ran."""
        return self.sections.get("attribution") or []

    def layer(self, name: str) -> LayerResult:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(
            self.sections,
            key=lambda k: _SECTION_ORDER.index(k) if k in _SECTION_ORDER else 99,
        )
        return _clean(
            {
                "schema_version": self.schema_version,
                "model": self.model,
                "dataset": self.dataset,
                "config": self.config.to_dict(),
                "layers": [layer.model_dump() for layer in self.layers],
                "bottlenecks": [b.model_dump() for b in self.bottlenecks],
                "provenance": self.provenance,
                "warnings": list(self.warnings),
                # Sections of the families come after the core ones.
                **{key: self.sections[key] for key in ordered},
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
        """Read a result document of any supported schema version."""
        doc = ResultDocument.model_validate(upgrade_result(data))
        return cls(
            model=doc.model,
            dataset=doc.dataset,
            config=parse_config(doc.config),
            layers=doc.layers,
            bottlenecks=doc.bottlenecks,
            provenance=doc.provenance,
            warnings=doc.warnings,
            sections=dict(doc.model_extra or {}),
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
