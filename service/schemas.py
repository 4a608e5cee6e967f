"""API models (named by role: ``XCreate``, ``XPublic``, ``XsPublic(data, count)``) and
the records the store hands to the workers (``UploadJob``, ``AnalysisJob``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract.config import config_schema
from contract.result import BottleneckRecord, LayerRecord, MetricRow
from contract.tasks import analysis_queue
from service.errors import InvalidInput

UploadStatus = Literal["validating", "ready", "rejected"]
AnalysisStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorInfo(BaseModel):
    code: str
    message: str


class ModelPublic(BaseModel):
    id: str
    sha256: str
    size: int
    format: str
    architecture: str
    architecture_config: dict[str, Any]
    filename: str | None
    status: UploadStatus
    error: ErrorInfo | None
    created_at: datetime


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class DatasetPublic(BaseModel):
    id: str
    sha256: str | None
    size: int | None
    format: str
    spec: str | None
    filename: str | None
    n_samples: int | None
    sample_shape: list[int] | None
    dtype: str | None
    has_labels: bool | None
    status: UploadStatus
    error: ErrorInfo | None
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class AnalysisConfigBody(BaseModel):
    """A dataset and an analysis config (``contract.config``), checked and
    completed with its defaults before anything is queued; its ``device`` picks
    the queue."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=config_schema()
    )

    @field_validator("config")
    @classmethod
    def _json_ready(cls, config: dict[str, Any]) -> dict[str, Any]:
        if not _finite(config):
            raise ValueError("config holds NaN or Infinity; use finite numbers")
        return config

    @property
    def queue(self) -> str:
        return analysis_queue(self.config.get("device", "auto"))


class AnalysisCreate(AnalysisConfigBody):
    """What to analyse: a ready model on a ready dataset, with a config."""

    model_id: str = Field(min_length=1, max_length=64)


class AnalysisPublic(BaseModel):
    id: str
    model_id: str | None
    dataset_id: str | None
    config: dict[str, Any]
    status: AnalysisStatus
    progress: float
    stage: str | None
    error: ErrorInfo | None
    attempt: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    warnings: list[str] = Field(
        default_factory=list,
        description="What a succeeded run changed or left out (the result's "
        "warnings): samples clipped, a family skipped or failed on a layer.",
    )


class AnalysesPublic(BaseModel):
    data: list[AnalysisPublic]
    count: int


# The result records are the contract's: one schema for the library and the API.
MetricPublic = MetricRow
LayerPublic = LayerRecord
BottleneckPublic = BottleneckRecord


class LayersPublic(BaseModel):
    data: list[LayerPublic]
    count: int


class BottlenecksPublic(BaseModel):
    data: list[BottleneckPublic]
    count: int


class LayerMetric(BaseModel):
    """One metric of one layer in one analysis (queries across analyses)."""

    analysis_id: str
    layer: str
    index: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    database: bool
    broker: bool
    workers: int = Field(description="Workers with a recent heartbeat.")
    heartbeat_timeout_s: float = Field(
        description="How recent a heartbeat must be to count."
    )


@dataclass(frozen=True)
class TeamInfo:
    id: str
    name: str


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    team_id: str
    key_hash: str
    scopes: tuple[str, ...]
    revoked: bool
    team_max_upload_bytes: int | None
    team_max_queued_analyses: int | None


@dataclass(frozen=True)
class UploadJob:
    """What ``bottlelens.validate_upload`` needs. ``path`` is absolute (None for a
    built-in dataset, which has ``spec``); ``format`` is ``safetensors`` or
    ``state_dict`` for models, ``npz``, ``safetensors``, ``csv`` or ``builtin`` for
    datasets (a stored file has no suffix: the worker gives it the format's)."""

    kind: Literal["model", "dataset"]
    object_id: str
    team_id: str
    format: str
    path: str | None
    spec: str | None
    sha256: str | None
    size: int | None
    filename: str | None
    architecture: str | None = None
    architecture_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelRef:
    path: str
    architecture: str
    architecture_config: dict[str, Any]
    format: str
    sha256: str
    filename: str | None


@dataclass(frozen=True)
class DatasetRef:
    path: str | None
    spec: str | None
    format: str
    sha256: str | None


@dataclass(frozen=True)
class AnalysisJob:
    analysis_id: str
    team_id: str
    attempt: int
    config: dict[str, Any]
    model: ModelRef
    dataset: DatasetRef


def parse_json_object(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object from a form field; NaN and Infinity are refused."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not valid JSON ({exc}); send an object") from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True
