"""ORM rows. They never leave ``service/store.py``, which returns schemas instead.

Results live in narrow tables (``layer``, ``metric_value``, ``bottleneck``) indexed
for queries across analyses; the top-level sections of the result document (model,
dataset, config, provenance, and any section a later version adds) are JSON columns
of the analysis row, so a new metric or section needs no schema change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UPLOAD_STATUSES = ("validating", "ready", "rejected")
ANALYSIS_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

# An autoincrementing 64-bit key (SQLite only autoincrements INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def utcnow() -> datetime:
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TeamRow(Base):
    __tablename__ = "team"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_queued_analyses: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKeyRow(Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(
        ForeignKey("team.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(100))  # comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class _Upload:
    """Columns shared by uploaded models and datasets."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, sort_order=-2)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="validating")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict[str, Any] | None] = mapped_column(Json)  # from the validator
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class ModelRow(_Upload, Base):
    __tablename__ = "model"
    __table_args__ = (
        CheckConstraint(_one_of("status", UPLOAD_STATUSES), name="status"),
        Index(None, "team_id", "created_at"),
    )

    team_id: Mapped[str] = mapped_column(
        ForeignKey("team.id", ondelete="CASCADE"), sort_order=-1
    )
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_config: Mapped[dict[str, Any]] = mapped_column(Json)


class DatasetRow(_Upload, Base):
    __tablename__ = "dataset"
    __table_args__ = (
        CheckConstraint(_one_of("status", UPLOAD_STATUSES), name="status"),
        Index(None, "team_id", "created_at"),
    )

    team_id: Mapped[str] = mapped_column(
        ForeignKey("team.id", ondelete="CASCADE"), sort_order=-1
    )
    spec: Mapped[str | None] = mapped_column(String(500))  # built-ins only
    n_samples: Mapped[int | None] = mapped_column(BigInteger)
    sample_shape: Mapped[list[int] | None] = mapped_column(Json)
    dtype: Mapped[str | None] = mapped_column(String(32))
    has_labels: Mapped[bool | None] = mapped_column(Boolean)


class AnalysisRow(Base):
    __tablename__ = "analysis"
    __table_args__ = (
        CheckConstraint(_one_of("status", ANALYSIS_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index(None, "team_id", "status"),
        Index(None, "team_id", "created_at"),
        Index(None, "model_id", "status"),
        Index(None, "status", "enqueued_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    # SET NULL: deleting a model or dataset keeps the finished analyses of it.
    model_id: Mapped[str | None] = mapped_column(
        ForeignKey("model.id", ondelete="SET NULL")
    )
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="SET NULL"), index=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float] = mapped_column(Double, default=0.0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Top-level sections of the result document (NULL until it succeeded).
    schema_version: Mapped[int | None] = mapped_column(Integer)
    result_model: Mapped[dict[str, Any] | None] = mapped_column(Json)
    result_dataset: Mapped[dict[str, Any] | None] = mapped_column(Json)
    result_config: Mapped[dict[str, Any] | None] = mapped_column(Json)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(Json)
    extras: Mapped[dict[str, Any] | None] = mapped_column(Json)  # unknown sections


class LayerRow(Base):
    __tablename__ = "layer"
    __table_args__ = (
        UniqueConstraint("analysis_id", "position"),
        Index(None, "analysis_id", "index"),
        Index(None, "analysis_id", "is_bottleneck"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    analysis_id: Mapped[str] = mapped_column(
        ForeignKey("analysis.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)  # order in the result's list
    name: Mapped[str] = mapped_column(String(500))
    index: Mapped[int] = mapped_column(Integer)
    module: Mapped[str] = mapped_column(String(200))
    shape: Mapped[list[int]] = mapped_column(Json)
    width: Mapped[int] = mapped_column(BigInteger)
    is_bottleneck: Mapped[bool] = mapped_column(Boolean)
    projected_to: Mapped[int | None] = mapped_column(BigInteger)
    projection: Mapped[dict[str, Any] | None] = mapped_column(Json)
    extras: Mapped[dict[str, Any] | None] = mapped_column(Json)  # unknown fields


class MetricRow(Base):
    __tablename__ = "metric_value"
    __table_args__ = (
        UniqueConstraint("layer_id", "position"),
        Index(None, "layer_id", "metric", "estimator"),
        Index(None, "analysis_id", "metric", "estimator"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    analysis_id: Mapped[str] = mapped_column(
        ForeignKey("analysis.id", ondelete="CASCADE")
    )
    layer_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("layer.id", ondelete="CASCADE"),
    )
    position: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(100))
    estimator: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Double)
    ci_low: Mapped[float | None] = mapped_column(Double)
    ci_high: Mapped[float | None] = mapped_column(Double)
    n_samples: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(Json)
    reason: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[list[str]] = mapped_column(Json)
    extras: Mapped[dict[str, Any] | None] = mapped_column(Json)


class BottleneckRow(Base):
    __tablename__ = "bottleneck"
    __table_args__ = (UniqueConstraint("analysis_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    analysis_id: Mapped[str] = mapped_column(
        ForeignKey("analysis.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    layer: Mapped[str] = mapped_column(String(500))
    block: Mapped[str] = mapped_column(String(500))
    width_in: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(BigInteger)
    width_out: Mapped[int] = mapped_column(BigInteger)
    ratio: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(32))
    skip_connection: Mapped[bool | None] = mapped_column(Boolean)
    extras: Mapped[dict[str, Any] | None] = mapped_column(Json)


class WorkerHeartbeatRow(Base):
    """One row per Celery worker, refreshed every ``worker_heartbeat_interval_s``;
    ``/v1/ready`` counts the rows seen within ``worker_heartbeat_timeout_s``."""

    __tablename__ = "worker_heartbeat"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)  # hostname
    queues: Mapped[str] = mapped_column(String(200))  # comma-separated
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SeriesRow(Base):
    """Checkpoints of one architecture and config, ordered by step (or by tag)."""

    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint("team_id", "name"),
        Index(None, "team_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_config: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SeriesCheckpointRow(Base):
    """A model's place in a series (at most one): its step, epoch and numeric tag."""

    __tablename__ = "series_checkpoint"
    __table_args__ = (Index(None, "series_id", "step"),)

    model_id: Mapped[str] = mapped_column(
        ForeignKey("model.id", ondelete="CASCADE"), primary_key=True
    )
    series_id: Mapped[str] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    tag: Mapped[float | None] = mapped_column(Double)


class AnalysisExportRow(Base):
    """The export sequence number of a succeeded analysis, taken when its results are
    saved, under the lock of ``export_sequence``: numbers are in commit order
    (docs/reporting.md). ``n_rows`` lets the export plan a page without counting."""

    __tablename__ = "analysis_export"
    __table_args__ = (Index(None, "team_id", "seq"),)

    analysis_id: Mapped[str] = mapped_column(
        ForeignKey("analysis.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[str] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    n_rows: Mapped[int] = mapped_column(BigInteger)  # its metric_value rows


class ExportSequenceRow(Base):
    """One row: the last export sequence number handed out."""

    __tablename__ = "export_sequence"
    __table_args__ = (CheckConstraint("id = 1", name="single"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)


AUDIT_STATUSES = ("active", "paused")
AUDIT_RUN_STATUSES = ("pending", "running", "pass", "alert", "error")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "refused")


class AuditRow(Base):
    """A scheduled analysis of a model (or a series' latest checkpoint) whose
    results are compared with a baseline by rules; ``next_run_at`` only moves on."""

    __tablename__ = "audit"
    __table_args__ = (
        CheckConstraint(_one_of("status", AUDIT_STATUSES), name="status"),
        CheckConstraint("(cron IS NULL) <> (interval_s IS NULL)", name="schedule"),
        Index(None, "team_id", "created_at"),
        Index(None, "status", "next_run_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # SET NULL: a run of an audit whose model was deleted ends in error.
    model_id: Mapped[str | None] = mapped_column(
        ForeignKey("model.id", ondelete="SET NULL")
    )
    series_id: Mapped[str | None] = mapped_column(
        ForeignKey("series.id", ondelete="SET NULL")
    )
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="SET NULL")
    )
    config: Mapped[dict[str, Any]] = mapped_column(Json)
    cron: Mapped[str | None] = mapped_column(String(100))
    interval_s: Mapped[int | None] = mapped_column(BigInteger)
    anchor_at: Mapped[datetime] = mapped_column(UTCDateTime)
    baseline: Mapped[str] = mapped_column(String(16))  # analysis, first, previous
    baseline_analysis_id: Mapped[str | None] = mapped_column(
        ForeignKey("analysis.id", ondelete="SET NULL")
    )
    rules: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="active")
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRunRow(Base):
    """One run per (audit, scheduled time); ``fired`` holds the rule rows of an
    alert."""

    __tablename__ = "audit_run"
    __table_args__ = (
        UniqueConstraint("audit_id", "scheduled_for"),
        CheckConstraint(_one_of("status", AUDIT_RUN_STATUSES), name="status"),
        Index(None, "team_id", "created_at"),
        Index(None, "status"),
        Index(None, "analysis_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    audit_id: Mapped[str] = mapped_column(ForeignKey("audit.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    analysis_id: Mapped[str | None] = mapped_column(
        ForeignKey("analysis.id", ondelete="SET NULL")
    )
    baseline_analysis_id: Mapped[str | None] = mapped_column(
        ForeignKey("analysis.id", ondelete="SET NULL")
    )
    fired: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditDeliveryRow(Base):
    """The webhook delivery of one alert: attempts, the next one, and their log."""

    __tablename__ = "audit_delivery"
    __table_args__ = (
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        Index(None, "status", "next_attempt_at"),
    )

    run_id: Mapped[str] = mapped_column(
        ForeignKey("audit_run.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
