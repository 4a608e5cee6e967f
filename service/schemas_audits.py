"""Request and response bodies of ``/v1/audits``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.families import FAMILIES
from service.schemas import AnalysisConfigBody, ErrorInfo

METRICS = tuple(m for family in FAMILIES.values() for m in family.metrics)
Operator = Literal["relative_change", "abs_change", "above", "below"]
AuditStatus = Literal["active", "paused"]
RunStatus = Literal["pending", "running", "pass", "alert", "error"]
DeliveryStatus = Literal["pending", "delivered", "failed", "refused"]
_ID = "^[0-9a-f]{32}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesCheckpoint(_Strict):
    """The latest ready checkpoint (highest step) of a series, taken at each run."""

    series_id: str = Field(pattern=_ID)
    checkpoint: Literal["latest"] = "latest"


class CronSchedule(_Strict):
    """A 5-field cron expression (minute hour day month weekday), read in UTC; runs
    at least BOTTLELENS_AUDIT_MIN_INTERVAL_S apart."""

    cron: str = Field(min_length=1, max_length=100, examples=["0 3 * * *"])


class IntervalSchedule(_Strict):
    """Every ``interval_s`` seconds from the audit's creation (at least
    BOTTLELENS_AUDIT_MIN_INTERVAL_S)."""

    interval_s: int = Field(ge=1, le=366 * 86400)


ScheduleSpec = CronSchedule | IntervalSchedule


class BaselineAnalysis(_Strict):
    analysis_id: str = Field(pattern=_ID)


Baseline = Literal["first", "previous"] | BaselineAnalysis


class Rule(_Strict):
    """Fires on a layer when ``operator`` holds: ``relative_change`` |new - base| /
    |base| > threshold, ``abs_change`` |new - base| > threshold, ``above`` new >
    threshold, ``below`` new < threshold. ``require_no_overlap``: only when the
    intervals of the two values do not overlap (``above``/``below``: when the new
    interval lies wholly beyond the threshold)."""

    metric: Literal[METRICS]  # type: ignore[valid-type]
    estimator: str = Field(min_length=1, max_length=100, pattern="^[a-z0-9_]+$")
    layers: str = Field(
        default="bottlenecks",
        min_length=1,
        max_length=500,
        description="A layer name, a glob such as fc*, or bottlenecks.",
    )
    operator: Operator
    threshold: float = Field(allow_inf_nan=False, ge=-1e12, le=1e12)
    require_no_overlap: bool = False


class AuditCreate(AnalysisConfigBody):
    """What to analyse, when, against which baseline, and when to alert."""

    name: str = Field(default="audit", min_length=1, max_length=200)
    model: Annotated[str, Field(min_length=1, max_length=64)] | SeriesCheckpoint = (
        Field(description="A model id, or the latest checkpoint of a series.")
    )
    schedule: ScheduleSpec
    baseline: Baseline = "previous"
    rules: list[Rule] = Field(min_length=1, max_length=50)
    webhook_url: str | None = Field(default=None, min_length=1, max_length=2000)


class AuditPublic(BaseModel):
    id: str
    name: str
    model_id: str | None
    series_id: str | None
    dataset_id: str | None
    config: dict[str, Any]
    schedule: ScheduleSpec
    baseline: Baseline
    rules: list[Rule]
    webhook_url: str | None
    status: AuditStatus
    next_run_at: datetime = Field(description="When it is due next (UTC).")
    created_at: datetime


class AuditsPublic(BaseModel):
    data: list[AuditPublic]
    count: int


class FiredRow(BaseModel):
    """One layer on which one rule fired."""

    rule: int = Field(description="Position of the rule in the audit's rules.")
    layer: str
    metric: str
    estimator: str
    operator: Operator
    baseline_value: float | None
    new_value: float
    threshold: float
    change: float | None = Field(description="new - baseline, or None for above/below.")
    intervals_overlap: bool | None = Field(
        description="Whether the two intervals overlap (None: an interval is missing)."
    )


class AuditRunPublic(BaseModel):
    id: str
    audit_id: str
    scheduled_for: datetime
    status: RunStatus
    analysis_id: str | None
    baseline_analysis_id: str | None
    fired: list[FiredRow]
    error: ErrorInfo | None
    created_at: datetime
    finished_at: datetime | None


class AuditRunsPublic(BaseModel):
    data: list[AuditRunPublic]
    count: int


class DeliveryAttempt(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None


class DeliveryPublic(BaseModel):
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    log: list[DeliveryAttempt]


class AlertPublic(AuditRunPublic):
    delivery: DeliveryPublic | None = Field(
        description="The webhook delivery, when the audit has a webhook."
    )


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    count: int
