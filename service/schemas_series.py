"""API models of model series, comparisons and the reporting export."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.architectures import architecture_names
from service.errors import InvalidInput
from service.schemas import AnalysisConfigBody, AnalysisCreate, ModelPublic

Order = Literal["step", "tag"]
ExportFormat = Literal["csv", "json", "parquet"]

# The export's columns, in order: the route, the docs and the SQL view
# ``metric_export`` (migration 0003, checked by a test) list the same.
EXPORT_COLUMNS: tuple[str, ...] = (
    "team_id",
    "model_id",
    "model_name",
    "model_sha256",
    "series_id",
    "step",
    "dataset_id",
    "dataset_name",
    "analysis_id",
    "finished_at",
    "layer",
    "index",
    "width",
    "is_bottleneck",
    "metric",
    "estimator",
    "value",
    "ci_low",
    "ci_high",
    "n_samples",
    "schema_version",
)


INT64_MAX = 2**63 - 1
_ARCHITECTURES: dict[str, Any] = {"enum": architecture_names()}


@dataclass(frozen=True)
class CheckpointPlace:
    """The form fields of a checkpoint upload: ``step`` (an integer, required),
    ``epoch`` (an integer) and ``tag`` (a finite number that orders a width
    series)."""

    step: int
    epoch: int | None
    tag: float | None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> CheckpointPlace:
        problems: list[str] = []

        def integer(name: str) -> int | None:
            text = fields.get(name, "").strip()
            if not text:
                return None
            try:
                value = int(text)
            except ValueError:
                value = INT64_MAX + 1
            if not 0 <= value <= INT64_MAX:
                problems.append(f"{name}: {text[:40]!r} is not an integer >= 0")
                return None
            return value

        step, epoch = integer("step"), integer("epoch")
        if step is None and not fields.get("step", "").strip():
            problems.append("step: required, the training step of the checkpoint")
        tag_text = fields.get("tag", "").strip()
        tag = None
        if tag_text:
            try:
                tag = float(tag_text)
            except ValueError:
                tag = math.nan
            if not math.isfinite(tag):
                problems.append(f"tag: {tag_text[:40]!r} is not a finite number")
        if problems or step is None:
            raise InvalidInput(
                "the checkpoint's place in the series is invalid: "
                + "; ".join(problems),
                problems=problems,
            )
        return cls(step=step, epoch=epoch, tag=tag)


class SeriesCreate(BaseModel):
    """A series: every checkpoint uploaded into it uses this architecture and
    config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    architecture: str = Field(
        min_length=1, max_length=100, json_schema_extra=_ARCHITECTURES
    )
    architecture_config: dict[str, Any] = Field(default_factory=dict)


class SeriesPublic(BaseModel):
    id: str
    name: str
    architecture: str
    architecture_config: dict[str, Any]
    checkpoints: int = Field(description="Checkpoints in the series.")
    created_at: datetime


class SeriesListPublic(BaseModel):
    data: list[SeriesPublic]
    count: int


class CheckpointPublic(BaseModel):
    """A model of a series and its place in it."""

    model: ModelPublic
    step: int
    epoch: int | None
    tag: float | None


class CheckpointsPublic(BaseModel):
    data: list[CheckpointPublic]
    count: int


class SeriesAnalysesCreate(AnalysisConfigBody):
    """One analysis config and dataset for every checkpoint of the series."""

    def for_model(self, model_id: str) -> AnalysisCreate:
        return AnalysisCreate(
            model_id=model_id, dataset_id=self.dataset_id, config=self.config
        )


class SeriesAnalysis(BaseModel):
    model_id: str
    step: int
    epoch: int | None
    tag: float | None
    analysis_id: str
    reused: bool = Field(
        description="An analysis of the same weights (sha256), dataset and complete "
        "config that is queued, running or succeeded was reused, not run again."
    )


class SeriesAnalysesPublic(BaseModel):
    data: list[SeriesAnalysis]
    count: int


class TrajectoryPoint(BaseModel):
    model_id: str
    step: int
    epoch: int | None
    tag: float | None
    analysis_id: str
    value: float | None
    ci_low: float | None
    ci_high: float | None


class LayerTrajectory(BaseModel):
    layer: str
    index: int
    points: list[TrajectoryPoint]


class PlanePoint(BaseModel):
    model_id: str
    step: int
    epoch: int | None
    tag: float | None
    analysis_id: str
    mi_input: float | None = Field(description="I(X;T)")
    mi_output: float | None = Field(description="I(T;Y)")


class PlanePath(BaseModel):
    """One layer's path in the information plane for one MI estimator."""

    layer: str
    index: int
    estimator: str
    points: list[PlanePoint]


class TrajectoryPublic(BaseModel):
    series_id: str
    metric: str
    estimator: str
    dataset_id: str
    order: Order
    layers: list[LayerTrajectory]
    information_plane: list[PlanePath]


class MetricChange(BaseModel):
    layer: str
    metric: str
    estimator: str
    occurrence: int = Field(
        description="Which row of this metric and estimator in the layer, from 0: "
        "a family may report several (attribution shares at several fractions)."
    )
    a: float | None
    b: float | None
    difference: float | None = Field(description="b - a")
    relative_change: float | None = Field(description="(b - a) / |a|; null if a is 0")
    intervals_overlap: bool | None = Field(
        description="Whether [ci_low, ci_high] of a and b overlap; null when either "
        "has no interval."
    )


class ComparisonPublic(BaseModel):
    a: str
    b: str
    architecture: str
    rows: list[MetricChange]
    bottlenecks_added: list[str] = Field(description="Bottleneck layers of b only.")
    bottlenecks_lost: list[str] = Field(description="Bottleneck layers of a only.")
