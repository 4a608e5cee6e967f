"""``/v1/audits``: scheduled analyses compared with a baseline, their runs and alerts.

Each scheduled time gives exactly one run. After downtime, the periods missed give
one catch-up run, for the latest of them; a paused audit resumes at the next
scheduled time after now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from service import checks, store
from service.openapi import errors
from service.routes.deps import (
    AdminKey,
    Limit,
    Offset,
    ReadKey,
    SessionDep,
    SettingsDep,
    SubmitKey,
)
from service.schemas_audits import (
    AlertsPublic,
    AuditCreate,
    AuditPublic,
    AuditRunsPublic,
    AuditsPublic,
)

router = APIRouter(prefix="/audits", tags=["audits"])
Since = Annotated[
    datetime | None,
    Query(description="Only what came after this time (ISO 8601, with a zone)."),
]


@router.post("", status_code=201, responses=errors(404, 429))
def create_audit(
    body: AuditCreate,
    response: Response,
    key: SubmitKey,
    session: SessionDep,
    settings: SettingsDep,
) -> AuditPublic:
    """Schedule an audit: one run per scheduled time (cron in UTC, or every
    ``interval_s`` from now); after downtime, one catch-up run for the latest
    missed time. A webhook must be on the admin's allowlist."""
    config = checks.analysis_config(body.config)  # 422 listing every problem
    body = body.model_copy(update={"config": config.to_dict()})
    audit = store.create_audit(session, key, body, settings=settings)
    response.headers["Location"] = f"/v1/audits/{audit.id}"
    return audit


@router.get("")
def list_audits(
    key: ReadKey, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> AuditsPublic:
    """The team's audits, newest first, with the total count."""
    return store.list_audits(session, key.team_id, limit=limit, offset=offset)


@router.get("/{audit_id}")
def get_audit(audit_id: str, key: ReadKey, session: SessionDep) -> AuditPublic:
    """One audit: its schedule, baseline, rules, status and next due time."""
    return store.get_audit(session, key.team_id, audit_id)


@router.delete("/{audit_id}", status_code=204)
def delete_audit(audit_id: str, key: AdminKey, session: SessionDep) -> None:
    """Delete an audit with its runs and alerts (their analyses stay); admin scope."""
    store.delete_audit(session, key.team_id, audit_id)


@router.post("/{audit_id}/pause")
def pause_audit(audit_id: str, key: SubmitKey, session: SessionDep) -> AuditPublic:
    """Stop making runs; a run already started finishes."""
    return store.pause_audit(session, key.team_id, audit_id)


@router.post("/{audit_id}/resume", responses=errors(429))
def resume_audit(
    audit_id: str, key: SubmitKey, session: SessionDep, settings: SettingsDep
) -> AuditPublic:
    """Run again from the next scheduled time after now (no catch-up of the pause)."""
    return store.resume_audit(session, key.team_id, audit_id, settings=settings)


@router.get("/{audit_id}/runs")
def list_audit_runs(
    audit_id: str,
    key: ReadKey,
    session: SessionDep,
    since: Since = None,
    limit: Limit = 50,
) -> AuditRunsPublic:
    """Runs scheduled after ``since``, oldest first: pass, alert (with the rows that
    fired), error (with the reason), or still pending or running."""
    return store.list_audit_runs(
        session, key.team_id, audit_id, since=since, limit=limit
    )


@router.get("/{audit_id}/alerts")
def list_audit_alerts(
    audit_id: str,
    key: ReadKey,
    session: SessionDep,
    since: Since = None,
    limit: Limit = 50,
) -> AlertsPublic:
    """Runs that alerted after ``since``, oldest first, with their deliveries."""
    return store.list_audit_alerts(
        session, key.team_id, audit_id, since=since, limit=limit
    )
