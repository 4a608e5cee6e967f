"""The result document (``AnalysisResult.to_dict()``) to rows and back.

Layers, metric values and bottlenecks go to narrow tables; the other top-level
sections to JSON columns of the analysis row, and keys this version does not know
(a layer field, a metric field, a whole section such as ``similarity``) to
``extras`` columns, so that reading gives back exactly the document that was saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from service.models import AnalysisRow, BottleneckRow, LayerRow, MetricRow
from service.schemas import BottleneckPublic, LayerPublic, MetricPublic

TOP_KEYS = (
    "schema_version",
    "model",
    "dataset",
    "config",
    "layers",
    "bottlenecks",
    "provenance",
)
SECTIONS = {
    "model": "result_model",
    "dataset": "result_dataset",
    "config": "result_config",
    "provenance": "provenance",
}
# The record fields that have columns; any other field is kept in ``extras``.
LAYER_KEYS = tuple(k for k in LayerPublic.model_fields if k in LayerRow.__table__.c)
METRIC_KEYS = tuple(k for k in MetricPublic.model_fields if k in MetricRow.__table__.c)
BOTTLENECK_KEYS = tuple(
    k for k in BottleneckPublic.model_fields if k in BottleneckRow.__table__.c
)


@dataclass
class ResultRows:
    columns: dict[str, Any]  # attributes of the analysis row
    layers: list[tuple[dict[str, Any], list[dict[str, Any]]]]  # (layer, its metrics)
    bottlenecks: list[dict[str, Any]]


def split_result(result: dict[str, Any]) -> ResultRows:
    """Check the document and cut it into rows; ValueError says what is malformed."""
    if not isinstance(result, dict):
        raise ValueError(f"a result is a dict, not {type(result).__name__}")
    missing = [k for k in TOP_KEYS if k not in result]
    if missing:
        raise ValueError(f"the result lacks the sections {missing}")
    version = result["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("result.schema_version must be an integer")
    columns: dict[str, Any] = {"schema_version": version}
    for key, column in SECTIONS.items():
        if not isinstance(result[key], dict):
            raise ValueError(f"result.{key} must be an object")
        columns[column] = json_ready(result[key])
    extras = {k: json_ready(v) for k, v in result.items() if k not in TOP_KEYS}
    columns["extras"] = extras or None
    if not isinstance(result["layers"], list):
        raise ValueError("result.layers must be a list")
    if not isinstance(result["bottlenecks"], list):
        raise ValueError("result.bottlenecks must be a list")
    layers = [_layer(i, layer) for i, layer in enumerate(result["layers"])]
    bottlenecks = [_bottleneck(i, b) for i, b in enumerate(result["bottlenecks"])]
    return ResultRows(columns, layers, bottlenecks)


def document(
    analysis: AnalysisRow,
    layers: list[dict[str, Any]],
    bottlenecks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The result document, keys in the order ``AnalysisResult.to_dict`` writes."""
    doc: dict[str, Any] = {
        "schema_version": analysis.schema_version,
        "model": analysis.result_model,
        "dataset": analysis.result_dataset,
        "config": analysis.result_config,
        "layers": layers,
        "bottlenecks": bottlenecks,
        "provenance": analysis.provenance,
    }
    doc.update(analysis.extras or {})
    return doc


def layer_dict(row: LayerRow, metrics: list[MetricRow]) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in LAYER_KEYS}
    out["metrics"] = [metric_dict(m) for m in metrics]
    out.update(row.extras or {})
    return out


def metric_dict(row: MetricRow) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in METRIC_KEYS}
    out.update(row.extras or {})
    return out


def bottleneck_dict(row: BottleneckRow) -> dict[str, Any]:
    out = {k: getattr(row, k) for k in BOTTLENECK_KEYS}
    out.update(row.extras or {})
    return out


def json_ready(obj: Any) -> Any:
    """A copy that PostgreSQL's JSON and Starlette accept: non-finite floats -> None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float):
        return obj
    raise ValueError(f"{type(obj).__name__} is not JSON: pass plain data")


def _validated(
    model: Any, data: Any, where: str, columns: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record checked by its contract model: ``(column values, extras)``.

    Fields the model lacks (a newer library's) are kept as ``extras``, unchecked.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object")
    known = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        record = model.model_validate(known)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where} is malformed: {problems}") from exc
    dumped = record.model_dump()
    extras = {k: v for k, v in data.items() if k not in model.model_fields}
    extras |= {k: v for k, v in dumped.items() if k not in columns and k != "metrics"}
    return {k: getattr(record, k) for k in columns}, json_ready(extras) or None


def _layer(position: int, data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    where = f"result.layers[{position}]"
    row, extras = _validated(LayerPublic, data, where, LAYER_KEYS)
    row.update(
        position=position, projection=json_ready(row["projection"]), extras=extras
    )
    metrics = [
        _metric(i, m, f"{where}.metrics[{i}]") for i, m in enumerate(data["metrics"])
    ]
    return row, metrics


def _metric(position: int, data: Any, where: str) -> dict[str, Any]:
    row, extras = _validated(MetricPublic, data, where, METRIC_KEYS)
    bad = [k for k in ("value", "ci_low", "ci_high") if not _finite(row[k])]
    for k in bad:
        row[k] = None  # NULL with a reason, as MetricValue itself does
    if bad and row["reason"] is None:
        row["reason"] = f"non-finite {', '.join(bad)}"
    row.update(position=position, params=json_ready(row["params"]), extras=extras)
    return row


def _bottleneck(position: int, data: Any) -> dict[str, Any]:
    where = f"result.bottlenecks[{position}]"
    row, extras = _validated(BottleneckPublic, data, where, BOTTLENECK_KEYS)
    if not _finite(row["ratio"]):
        raise ValueError(f"{where}.ratio must be finite")
    row.update(position=position, extras=extras)
    return row


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)
