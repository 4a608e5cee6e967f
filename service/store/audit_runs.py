"""Audits as the scheduler sees them: due runs, their analyses, rules, deliveries.

Exactly one run per (audit, scheduled time): the run is inserted with "insert, or
nothing if it exists" on the unique (audit_id, scheduled_for), so two schedulers
ticking at once, or one whose clock jumped, make no second run; ``next_run_at`` only
moves forward. The catch-up rule (``service/schedule.py``): one run for the latest
missed time, however many were missed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service import auth
from service.audit_rules import Rows, Value, evaluate
from service.db import begin_write
from service.errors import Conflict, NotFound, QueueFull
from service.models import (
    TERMINAL_STATUSES,
    AnalysisRow,
    AuditDeliveryRow,
    AuditRow,
    AuditRunRow,
    LayerRow,
    MetricRow,
    TeamRow,
    utcnow,
)
from service.schemas import AnalysisCreate
from service.settings import Settings
from service.store._common import _new_id
from service.store.analyses import create_analysis
from service.store.audits import RUN_LIMIT, runs_in_last_day, schedule_of
from service.store.series import series_latest_model

FINISHED = ("pass", "alert")


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    analysis_id: str
    queue: str


@dataclass(frozen=True)
class DeliveryJob:
    run_id: str
    url: str
    attempt: int  # this attempt's number, from 1
    body: bytes


def _insert_run(session: Session, values: dict[str, Any]) -> bool:
    """Insert the run unless (audit_id, scheduled_for) exists; True when inserted."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(AuditRunRow).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: the drivers do not agree on a skipped row's count.
    return session.execute(stmt.returning(AuditRunRow.id)).first() is not None


def claim_due_audit_runs(
    session: Session, *, now: datetime, max_runs_per_day: int, limit: int = 200
) -> list[str]:
    """Insert the run of every active audit that is due at ``now``; the ids of the
    runs this call inserted. A team over its runs of the last 24 h gets the run
    recorded as ``error`` (``run_limit``) instead."""
    begin_write(session)
    audits = session.scalars(
        select(AuditRow)
        .where(AuditRow.status == "active", AuditRow.next_run_at <= now)
        .order_by(AuditRow.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    inserted: list[str] = []
    counted: dict[str, int] = {}
    for audit in audits:
        schedule = schedule_of(audit)
        slot = schedule.latest_slot(audit.anchor_at, now)
        if slot is None:
            continue
        if audit.team_id not in counted:
            counted[audit.team_id] = len(runs_in_last_day(session, audit.team_id, now))
        over = counted[audit.team_id] >= max_runs_per_day
        values: dict[str, Any] = {
            "id": _new_id(),
            "audit_id": audit.id,
            "team_id": audit.team_id,
            "scheduled_for": slot,
            "status": "pending",
            "created_at": now,
        }
        if over:
            values |= {
                "status": "error",
                "error_code": RUN_LIMIT,
                "error_message": "the team's audits reached their runs of the last "
                "24 h (BOTTLELENS_MAX_AUDIT_RUNS_PER_DAY); this time was skipped",
                "finished_at": now,
            }
        if _insert_run(session, values):
            inserted.append(values["id"])
            counted[audit.team_id] += 0 if over else 1
        audit.next_run_at = max(
            audit.next_run_at, schedule.next_slot(audit.anchor_at, slot)
        )
    session.flush()
    return inserted


def pending_audit_runs(session: Session, *, limit: int = 200) -> list[str]:
    """Runs that have no analysis yet (new, or left by a full queue), oldest first."""
    return list(
        session.scalars(
            select(AuditRunRow.id)
            .where(AuditRunRow.status == "pending")
            .order_by(AuditRunRow.scheduled_for)
            .limit(limit)
        )
    )


def _fail(row: AuditRunRow, code: str, message: str, now: datetime) -> None:
    row.status, row.error_code, row.error_message = "error", code[:64], message
    row.finished_at = now


def _model_of(session: Session, audit: AuditRow) -> str | None:
    if audit.model_id is not None:
        return audit.model_id
    if audit.series_id is None:
        return None
    return series_latest_model(session, audit.series_id, ready_only=True)


def start_audit_run(
    session: Session, run_id: str, *, settings: Settings, now: datetime | None = None
) -> StartedRun | None:
    """Create the run's analysis with ``store.create_analysis``, as the API does,
    and mark the run running; the caller commits, then enqueues. None when there is
    nothing to enqueue: the run was started by someone else, ended in error (model,
    series or dataset gone, an input rejected), or the team's queue is full (it
    stays pending for the next tick)."""
    now = now or utcnow()
    begin_write(session)
    run = session.get(AuditRunRow, run_id, with_for_update=True)
    if run is None or run.status != "pending":
        return None
    audit = session.get(AuditRow, run.audit_id)
    team = session.get(TeamRow, run.team_id)
    if audit is None or team is None:
        return None
    model_id = _model_of(session, audit)
    problem = None
    if model_id is None and audit.series_id is not None:
        problem = "no_checkpoint", "the audit's series has no ready checkpoint"
    elif model_id is None:
        problem = "input_deleted", "the audit's model was deleted; create a new audit"
    elif audit.dataset_id is None:
        problem = "input_deleted", "the audit's dataset was deleted; create a new audit"
    if problem is not None or model_id is None or audit.dataset_id is None:
        _fail(run, *(problem or ("input_deleted", "")), now)
        session.flush()
        return None
    principal = auth.Principal(
        key_id="",
        team_id=run.team_id,
        scopes=frozenset({"submit"}),
        max_upload_bytes=team.max_upload_bytes or settings.max_upload_bytes,
        max_queued_analyses=team.max_queued_analyses or settings.max_queued_analyses,
    )
    body = AnalysisCreate(
        model_id=model_id, dataset_id=audit.dataset_id, config=audit.config
    )
    try:
        analysis = create_analysis(
            session, principal, body, retry_after_s=settings.queue_full_retry_after_s
        )
    except QueueFull:
        return None
    except (NotFound, Conflict) as exc:
        _fail(run, exc.code, exc.message, now)
        session.flush()
        return None
    run.analysis_id, run.status = analysis.id, "running"
    session.flush()
    return StartedRun(run.id, analysis.id, body.queue)


def audit_runs_to_finish(
    session: Session, *, analysis_id: str | None = None, limit: int = 200
) -> list[str]:
    """Running runs whose analysis ended (or is gone)."""
    query = (
        select(AuditRunRow.id)
        .outerjoin(AnalysisRow, AnalysisRow.id == AuditRunRow.analysis_id)
        .where(
            AuditRunRow.status == "running",
            AnalysisRow.id.is_(None) | AnalysisRow.status.in_(TERMINAL_STATUSES),
        )
    )
    if analysis_id is not None:
        query = query.where(AuditRunRow.analysis_id == analysis_id)
    return list(session.scalars(query.order_by(AuditRunRow.scheduled_for).limit(limit)))


def _rows(session: Session, analysis_id: str) -> Rows:
    layers = session.execute(
        select(LayerRow.id, LayerRow.name, LayerRow.is_bottleneck)
        .where(LayerRow.analysis_id == analysis_id)
        .order_by(LayerRow.position)
    ).all()
    names = {layer.id: layer.name for layer in layers}
    values = {
        (names[m.layer_id], m.metric, m.estimator): Value(m.value, m.ci_low, m.ci_high)
        for m in session.scalars(
            select(MetricRow).where(MetricRow.analysis_id == analysis_id)
        )
    }
    return Rows(
        values=values,
        layers=tuple(layer.name for layer in layers),
        bottlenecks=frozenset(layer.name for layer in layers if layer.is_bottleneck),
    )


def _baseline(session: Session, audit: AuditRow, run: AuditRunRow) -> str | None:
    """The baseline analysis id; None when the run is its own (the first run)."""
    if audit.baseline == "analysis":
        return audit.baseline_analysis_id or ""
    earlier = select(AuditRunRow.analysis_id).where(
        AuditRunRow.audit_id == audit.id,
        AuditRunRow.status.in_(FINISHED),
        AuditRunRow.analysis_id.is_not(None),
        AuditRunRow.scheduled_for < run.scheduled_for,
    )
    order = (
        AuditRunRow.scheduled_for
        if audit.baseline == "first"
        else AuditRunRow.scheduled_for.desc()
    )
    return session.scalar(earlier.order_by(order).limit(1))


def finish_audit_run(
    session: Session, run_id: str, *, now: datetime | None = None
) -> str | None:
    """Evaluate the rules of a run whose analysis ended; its new status (None when
    there was nothing to do). An alert of an audit with a webhook gets a pending
    delivery, sent by the scheduler: a run never waits on it."""
    now = now or utcnow()
    begin_write(session)
    run = session.get(AuditRunRow, run_id, with_for_update=True)
    if run is None or run.status != "running":
        return None
    audit = session.get(AuditRow, run.audit_id)
    analysis = session.get(AnalysisRow, run.analysis_id) if run.analysis_id else None
    if audit is None:
        return None
    if analysis is None or analysis.status != "succeeded":
        if analysis is None:
            _fail(run, "analysis_deleted", "the run's analysis was deleted", now)
        elif analysis.status in TERMINAL_STATUSES:
            _fail(
                run,
                f"analysis_{analysis.status}",
                f"the analysis {analysis.status}: "
                f"{analysis.error_code or ''} {analysis.error_message or ''}".strip(),
                now,
            )
        else:
            return None
        session.flush()
        return run.status
    baseline_id = _baseline(session, audit, run)
    baseline = None
    if baseline_id is not None:
        base_row = session.get(AnalysisRow, baseline_id) if baseline_id else None
        if base_row is None or base_row.status != "succeeded":
            _fail(
                run,
                "baseline_missing",
                "the baseline analysis was deleted or has no results",
                now,
            )
            session.flush()
            return run.status
        baseline = _rows(session, baseline_id)
    fired = evaluate(audit.rules, _rows(session, analysis.id), baseline)
    run.baseline_analysis_id = baseline_id
    run.fired = fired
    run.status, run.finished_at = ("alert" if fired else "pass"), now
    if fired and audit.webhook_url:
        session.add(
            AuditDeliveryRow(
                run_id=run.id,
                url=audit.webhook_url,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                log=[],
                created_at=now,
            )
        )
    session.flush()
    return run.status


# --- webhook deliveries --------------------------------------------------------


def due_webhook_deliveries(
    session: Session, *, now: datetime, lease_s: float, limit: int = 50
) -> list[DeliveryJob]:
    """Pending deliveries due at ``now``, each leased for ``lease_s`` (another
    scheduler skips it meanwhile), with the signed body to send."""
    begin_write(session)
    found = session.execute(
        select(AuditDeliveryRow, AuditRunRow, AuditRow)
        .join(AuditRunRow, AuditRunRow.id == AuditDeliveryRow.run_id)
        .join(AuditRow, AuditRow.id == AuditRunRow.audit_id)
        .where(
            AuditDeliveryRow.status == "pending",
            AuditDeliveryRow.next_attempt_at <= now,
        )
        .order_by(AuditDeliveryRow.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=AuditDeliveryRow)
    ).all()
    jobs = []
    for delivery, run, audit in found:
        delivery.next_attempt_at = now + timedelta(seconds=lease_s)
        payload = {
            "event": "audit.alert",
            "audit_id": audit.id,
            "audit_name": audit.name,
            "run_id": run.id,
            "scheduled_for": run.scheduled_for.isoformat(),
            "analysis_id": run.analysis_id,
            "baseline_analysis_id": run.baseline_analysis_id,
            "fired": run.fired or [],
            "attempt": delivery.attempts + 1,
        }
        body = json.dumps(payload, sort_keys=True).encode()
        jobs.append(DeliveryJob(run.id, delivery.url, delivery.attempts + 1, body))
    session.flush()
    return jobs


def record_webhook_delivery(
    session: Session,
    run_id: str,
    *,
    now: datetime,
    status_code: int | None,
    error: str | None,
    refused: bool,
    max_attempts: int,
    retry_in_s: float,
) -> str | None:
    """Log one attempt: ``delivered`` on a 2xx, ``refused`` when the allowlist
    refused the host (no retry), else ``pending`` again in ``retry_in_s`` until
    ``max_attempts``, then ``failed``. The delivery's new status."""
    begin_write(session)
    row = session.get(AuditDeliveryRow, run_id, with_for_update=True)
    if row is None or row.status != "pending":
        return None
    row.attempts += 1
    entry = {"at": now.isoformat(), "status_code": status_code, "error": error}
    row.log = [*row.log, entry]
    if status_code is not None and 200 <= status_code < 300:
        row.status, row.delivered_at, row.next_attempt_at = "delivered", now, None
    elif refused:
        row.status, row.next_attempt_at = "refused", None
    elif row.attempts >= max_attempts:
        row.status, row.next_attempt_at = "failed", None
    else:
        row.next_attempt_at = now + timedelta(seconds=retry_in_s)
    session.flush()
    return row.status


def count_audit_runs(session: Session, audit_id: str) -> int:
    """How many runs an audit has (tests and reports)."""
    found = session.scalar(
        select(func.count())
        .select_from(AuditRunRow)
        .where(AuditRunRow.audit_id == audit_id)
    )
    return found or 0
