"""Heartbeats of the Celery workers, for ``/v1/ready``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.db import begin_write
from service.models import WorkerHeartbeatRow, utcnow


def record_worker_heartbeat(
    session: Session, worker: str, queues: Iterable[str]
) -> None:
    """The worker named ``worker`` (its Celery hostname) is alive now."""
    begin_write(session)
    names = ",".join(sorted(queues))[:200]
    row = session.get(WorkerHeartbeatRow, worker[:200], with_for_update=True)
    if row is None:
        session.add(
            WorkerHeartbeatRow(worker=worker[:200], queues=names, last_seen=utcnow())
        )
    else:
        row.queues, row.last_seen = names, utcnow()


def forget_worker(session: Session, worker: str) -> None:
    """A worker that stops cleanly leaves at once instead of timing out."""
    session.execute(
        delete(WorkerHeartbeatRow).where(WorkerHeartbeatRow.worker == worker[:200])
    )


def live_workers(session: Session, within_s: float) -> int:
    """Workers whose last heartbeat is at most ``within_s`` seconds old."""
    since = utcnow() - timedelta(seconds=within_s)
    count = session.scalar(
        select(func.count()).where(WorkerHeartbeatRow.last_seen >= since)
    )
    return int(count or 0)
