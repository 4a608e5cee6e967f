"""Audits as the API sees them: create, list, pause, resume, delete; runs and alerts.

The scheduler's side (due runs, their analyses, rules, deliveries) is
``service/store/audit_runs.py``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service import auth
from service.db import begin_write
from service.errors import InvalidInput, NotFound, QueueFull
from service.models import (
    AnalysisRow,
    AuditDeliveryRow,
    AuditRow,
    AuditRunRow,
    DatasetRow,
    ModelRow,
    SeriesRow,
    TeamRow,
    utcnow,
)
from service.schedule import Schedule, ScheduleError
from service.schemas_audits import (
    AlertPublic,
    AlertsPublic,
    AuditCreate,
    AuditPublic,
    AuditRunPublic,
    AuditRunsPublic,
    AuditsPublic,
    BaselineAnalysis,
    CronSchedule,
    DeliveryPublic,
    IntervalSchedule,
    SeriesCheckpoint,
)
from service.settings import Settings
from service.store._common import _error, _new_id, _owned
from service.webhooks import check_url

DAY = timedelta(days=1)
# Runs refused by the daily limit are recorded with this code and not counted.
RUN_LIMIT = "run_limit"


class AuditLimit(QueueFull):
    """The team has as many audits, or audit runs in a day, as its limits allow."""

    code = "audit_limit"


def _audit(
    session: Session, team_id: str, audit_id: str, *, lock: bool = False
) -> AuditRow:
    """The team's audit, or NotFound exactly as for a missing one."""
    query = select(AuditRow).where(AuditRow.id == audit_id, AuditRow.team_id == team_id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"audit {audit_id[:64]!r} not found")
    return row


def _series(session: Session, team_id: str, series_id: str) -> str:
    found = session.scalar(
        select(SeriesRow.id).where(
            SeriesRow.id == series_id, SeriesRow.team_id == team_id
        )
    )
    if found is None:
        raise NotFound(f"series {series_id[:64]!r} not found")
    return found


def schedule_of(row: AuditRow) -> Schedule:
    return Schedule(cron=row.cron, interval_s=row.interval_s)


def first_due(schedule: Schedule, anchor: datetime) -> datetime:
    """The first scheduled time at or after ``anchor``."""
    return schedule.next_slot(anchor, anchor - timedelta(microseconds=1))


def _checked(body: AuditCreate, settings: Settings) -> Schedule:
    """422 for what needs no database: the schedule and the webhook."""
    if isinstance(body.schedule, CronSchedule):
        schedule = Schedule(cron=body.schedule.cron)
    else:
        schedule = Schedule(interval_s=body.schedule.interval_s)
    try:
        schedule.check(min_interval_s=settings.audit_min_interval_s)
    except ScheduleError as exc:
        raise InvalidInput(str(exc), problems=[f"schedule: {exc}"]) from exc
    if body.webhook_url is not None:
        if settings.webhook_secret is None:
            raise InvalidInput(
                "this service signs no webhooks (BOTTLELENS_WEBHOOK_SECRET is not "
                "set); leave webhook_url out or ask an admin to set it",
                problems=["webhook_url: webhooks are off on this service"],
            )
        check_url(body.webhook_url, settings.webhook_allowlist)
    return schedule


def runs_in_last_day(session: Session, team_id: str, now: datetime) -> list[datetime]:
    """Creation times of the team's counted runs in the 24 h before ``now``."""
    return list(
        session.scalars(
            select(AuditRunRow.created_at)
            .where(
                AuditRunRow.team_id == team_id,
                AuditRunRow.created_at > now - DAY,
                AuditRunRow.error_code.is_(None)
                | (AuditRunRow.error_code != RUN_LIMIT),
            )
            .order_by(AuditRunRow.created_at)
        )
    )


def _check_runs_per_day(
    session: Session, team_id: str, settings: Settings, now: datetime
) -> None:
    recent = runs_in_last_day(session, team_id, now)
    if len(recent) >= settings.max_audit_runs_per_day:
        wait = (recent[-settings.max_audit_runs_per_day] + DAY - now).total_seconds()
        raise AuditLimit(
            f"the team's audits ran {len(recent)} times in the last 24 h, its limit "
            f"(BOTTLELENS_MAX_AUDIT_RUNS_PER_DAY); try again in {math.ceil(wait)} s",
            retry_after_s=max(1, math.ceil(wait)),
        )


def create_audit(
    session: Session,
    key: auth.Principal,
    body: AuditCreate,
    *,
    settings: Settings,
    now: datetime | None = None,
) -> AuditPublic:
    """A new active audit; its config is stored complete (the caller checked it).

    The model, series, dataset and baseline analysis must be the team's (404); the
    team below its number of audits and its runs of the last 24 h (429)."""
    schedule = _checked(body, settings)
    now = now or utcnow()
    begin_write(session)
    session.get(TeamRow, key.team_id, with_for_update=True)  # one creator per team
    count = session.scalar(
        select(func.count())
        .select_from(AuditRow)
        .where(AuditRow.team_id == key.team_id)
    )
    if (count or 0) >= settings.max_audits_per_team:
        raise AuditLimit(
            f"the team has {count} audits, its limit (BOTTLELENS_MAX_AUDITS_PER_TEAM); "
            "delete one first",
            retry_after_s=settings.queue_full_retry_after_s,
        )
    _check_runs_per_day(session, key.team_id, settings, now)
    model_id = series_id = None
    if isinstance(body.model, SeriesCheckpoint):
        series_id = _series(session, key.team_id, body.model.series_id)
    else:
        model_id = _owned(session, ModelRow, key.team_id, body.model).id
    dataset_id = _owned(session, DatasetRow, key.team_id, body.dataset_id).id
    baseline_id = None
    if isinstance(body.baseline, BaselineAnalysis):
        baseline = _owned(session, AnalysisRow, key.team_id, body.baseline.analysis_id)
        baseline_id = baseline.id
    anchor = now.replace(microsecond=0)
    row = AuditRow(
        id=_new_id(),
        team_id=key.team_id,
        name=body.name,
        model_id=model_id,
        series_id=series_id,
        dataset_id=dataset_id,
        config=body.config,
        cron=schedule.cron,
        interval_s=schedule.interval_s,
        anchor_at=anchor,
        baseline="analysis" if baseline_id else str(body.baseline),
        baseline_analysis_id=baseline_id,
        rules=[rule.model_dump() for rule in body.rules],
        webhook_url=body.webhook_url,
        status="active",
        next_run_at=first_due(schedule, anchor),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return audit_public(row)


def audit_public(row: AuditRow) -> AuditPublic:
    baseline: Any = row.baseline
    if row.baseline == "analysis":
        baseline = {"analysis_id": row.baseline_analysis_id or ""}
    return AuditPublic(
        id=row.id,
        name=row.name,
        model_id=row.model_id,
        series_id=row.series_id,
        dataset_id=row.dataset_id,
        config=row.config,
        schedule=CronSchedule(cron=row.cron)
        if row.cron is not None
        else IntervalSchedule(interval_s=row.interval_s or 0),
        baseline=baseline,
        rules=row.rules,  # type: ignore[arg-type]
        webhook_url=row.webhook_url,
        status=row.status,  # type: ignore[arg-type]
        next_run_at=row.next_run_at,
        created_at=row.created_at,
    )


def get_audit(session: Session, team_id: str, audit_id: str) -> AuditPublic:
    return audit_public(_audit(session, team_id, audit_id))


def list_audits(
    session: Session, team_id: str, *, limit: int, offset: int
) -> AuditsPublic:
    where = AuditRow.team_id == team_id
    count = session.scalar(select(func.count()).select_from(AuditRow).where(where))
    rows = session.scalars(
        select(AuditRow)
        .where(where)
        .order_by(AuditRow.created_at.desc(), AuditRow.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return AuditsPublic(data=[audit_public(r) for r in rows], count=count or 0)


def delete_audit(session: Session, team_id: str, audit_id: str) -> None:
    """The audit with its runs and deliveries; their analyses stay."""
    begin_write(session)
    row = _audit(session, team_id, audit_id, lock=True)
    session.execute(delete(AuditRow).where(AuditRow.id == row.id))


def pause_audit(session: Session, team_id: str, audit_id: str) -> AuditPublic:
    """No run is made while paused; a run already started still finishes."""
    begin_write(session)
    row = _audit(session, team_id, audit_id, lock=True)
    row.status = "paused"
    session.flush()
    return audit_public(row)


def resume_audit(
    session: Session,
    team_id: str,
    audit_id: str,
    *,
    settings: Settings,
    now: datetime | None = None,
) -> AuditPublic:
    """Active again from the next scheduled time after now: the periods it was paused
    are not caught up. Idempotent."""
    now = now or utcnow()
    begin_write(session)
    row = _audit(session, team_id, audit_id, lock=True)
    if row.status == "paused":
        _check_runs_per_day(session, team_id, settings, now)
        row.status = "active"
        next_due = schedule_of(row).next_slot(row.anchor_at, now)
        row.next_run_at = max(row.next_run_at, next_due)
        session.flush()
    return audit_public(row)


def _aware(t: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def run_public(row: AuditRunRow) -> AuditRunPublic:
    return AuditRunPublic(
        id=row.id,
        audit_id=row.audit_id,
        scheduled_for=row.scheduled_for,
        status=row.status,  # type: ignore[arg-type]
        analysis_id=row.analysis_id,
        baseline_analysis_id=row.baseline_analysis_id,
        fired=row.fired or [],  # type: ignore[arg-type]
        error=_error(row.error_code, row.error_message),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def list_audit_runs(
    session: Session,
    team_id: str,
    audit_id: str,
    *,
    since: datetime | None,
    limit: int,
) -> AuditRunsPublic:
    """Runs scheduled after ``since`` (all when None), oldest first."""
    _audit(session, team_id, audit_id)
    query = select(AuditRunRow).where(AuditRunRow.audit_id == audit_id)
    since = _aware(since)
    if since is not None:
        query = query.where(AuditRunRow.scheduled_for > since)
    rows = session.scalars(query.order_by(AuditRunRow.scheduled_for).limit(limit)).all()
    return AuditRunsPublic(data=[run_public(r) for r in rows], count=len(rows))


def list_audit_alerts(
    session: Session,
    team_id: str,
    audit_id: str,
    *,
    since: datetime | None,
    limit: int,
) -> AlertsPublic:
    """Runs that ended ``alert`` after ``since`` (finish time), oldest first, each
    with its webhook delivery and the delivery's log."""
    _audit(session, team_id, audit_id)
    query = (
        select(AuditRunRow, AuditDeliveryRow)
        .outerjoin(AuditDeliveryRow, AuditDeliveryRow.run_id == AuditRunRow.id)
        .where(AuditRunRow.audit_id == audit_id, AuditRunRow.status == "alert")
    )
    since = _aware(since)
    if since is not None:
        query = query.where(AuditRunRow.finished_at > since)
    found = session.execute(
        query.order_by(AuditRunRow.finished_at, AuditRunRow.id).limit(limit)
    ).all()
    data = [
        AlertPublic(
            **run_public(run).model_dump(),
            delivery=_delivery_public(delivery) if delivery else None,
        )
        for run, delivery in found
    ]
    return AlertsPublic(data=data, count=len(data))


def _delivery_public(row: AuditDeliveryRow) -> DeliveryPublic:
    return DeliveryPublic(
        url=row.url,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        delivered_at=row.delivered_at,
        log=row.log,  # type: ignore[arg-type]
    )
