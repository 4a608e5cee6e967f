"""The audit scheduler: one periodic tick (Celery beat, every
``BOTTLELENS_SCHEDULER_TICK_S``; also in ``serve --embedded``, whose worker runs
beat).

A tick, at the time ``now`` it is given (tests pass their own clock):

1. inserts the run of every active audit that is due: one per (audit, scheduled
   time), whatever other schedulers do at the same time (``store`` inserts or does
   nothing); after downtime, one catch-up run for the latest missed time;
2. creates each pending run's analysis (``store.create_analysis``, as the API) and
   enqueues it; a full queue leaves the run pending for the next tick;
3. ends the runs whose analysis ended (the worker also does this when it saves):
   ``pass``, ``alert`` with the rows that fired, or ``error`` with the reason;
4. sends the webhook deliveries that are due, each with a short timeout, retried
   with a doubling backoff. A run never waits on a delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from contract.tasks import RUN_ANALYSIS, SCHEDULER_TICK
from service import store, webhooks
from service.db import get_engine, session_scope
from service.models import utcnow
from service.settings import Settings, get_settings
from workers.celery_app import app

log = logging.getLogger(__name__)
Send = Callable[[str, str], None]  # (analysis_id, queue)
Post = Callable[..., int]


@dataclass
class TickReport:
    """What one tick did: ids of the runs inserted, started and ended, and the
    deliveries attempted with their new status."""

    inserted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, str] = field(default_factory=dict)


def _send_by_name(analysis_id: str, queue: str) -> None:
    app.send_task(RUN_ANALYSIS, args=[analysis_id], queue=queue, task_id=analysis_id)


def tick(
    now: datetime | None = None,
    *,
    settings: Settings | None = None,
    send: Send = _send_by_name,
    post: Post = webhooks.post,
) -> TickReport:
    """One pass of the scheduler at ``now`` (default: the clock)."""
    settings = settings or get_settings()
    engine = get_engine(settings.database_url)
    now = now or utcnow()
    report = TickReport()
    with session_scope(engine) as session:
        report.inserted = store.claim_due_audit_runs(
            session, now=now, max_runs_per_day=settings.max_audit_runs_per_day
        )
    with session_scope(engine) as session:
        pending = store.pending_audit_runs(session)
    for run_id in pending:
        with session_scope(engine) as session:
            started = store.start_audit_run(session, run_id, settings=settings, now=now)
        if started is None:
            continue
        report.started.append(run_id)
        try:
            send(started.analysis_id, started.queue)
        except Exception as exc:  # the reconciler sends a queued analysis again
            log.warning("audit run %s: could not enqueue: %s", run_id, exc)
    report.finished = finish_runs(now, engine=engine)
    report.delivered = deliver(now, settings=settings, post=post)
    return report


def finish_runs(
    now: datetime | None = None,
    analysis_id: str | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, str]:
    """End the runs whose analysis ended (only ``analysis_id``'s when given)."""
    now = now or utcnow()
    with session_scope(engine) as session:
        todo = store.audit_runs_to_finish(session, analysis_id=analysis_id)
    ended: dict[str, str] = {}
    for run_id in todo:
        with session_scope(engine) as session:
            status = store.finish_audit_run(session, run_id, now=now)
        if status is not None:
            ended[run_id] = status
    return ended


def deliver(
    now: datetime, *, settings: Settings, post: Post = webhooks.post
) -> dict[str, str]:
    """Send the deliveries due at ``now``; run id -> the delivery's new status."""
    engine = get_engine(settings.database_url)
    secret = settings.webhook_secret
    lease_s = 2 * settings.webhook_timeout_s + 1
    with session_scope(engine) as session:
        jobs = store.due_webhook_deliveries(session, now=now, lease_s=lease_s)
    done: dict[str, str] = {}
    for job in jobs:
        status_code: int | None = None
        error: str | None = None
        refused = False
        try:
            if secret is None:
                raise webhooks.WebhookRefused("BOTTLELENS_WEBHOOK_SECRET is not set")
            status_code = post(
                job.url,
                job.body,
                secret=secret.get_secret_value(),
                allowlist=settings.webhook_allowlist,
                timeout_s=settings.webhook_timeout_s,
                headers={"X-Bottlelens-Delivery": f"{job.run_id}.{job.attempt}"},
            )
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except webhooks.WebhookRefused as exc:
            refused, error = True, exc.message
        except Exception as exc:  # unreachable, timed out, TLS: retried later
            error = f"{type(exc).__name__}: {exc}"[:500]
        with session_scope(engine) as session:
            status = store.record_webhook_delivery(
                session,
                job.run_id,
                now=now,
                status_code=status_code,
                error=error,
                refused=refused,
                max_attempts=settings.webhook_max_attempts,
                retry_in_s=webhooks.backoff_s(job.attempt, settings.webhook_backoff_s),
            )
        if status is not None:
            done[job.run_id] = status
            if error:
                log.info("webhook of run %s: %s (%s)", job.run_id, error, status)
    return done


@app.task(name=SCHEDULER_TICK)
def scheduler_tick() -> int:
    """Celery beat's entry: one tick at the clock's time; the runs inserted."""
    return len(tick().inserted)
