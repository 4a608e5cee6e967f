"""Analyses as the workers see them: claim, heartbeat, save, fail, reconcile.

The contract with the workers is docs/service-contract.md.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.db import begin_write
from service.models import (
    TERMINAL_STATUSES,
    AnalysisRow,
    BottleneckRow,
    DatasetRow,
    LayerRow,
    MetricRow,
    ModelRow,
    TeamRow,
    utcnow,
)
from service.results import (
    split_result,
)
from service.schemas import (
    AnalysisJob,
    DatasetRef,
    ModelRef,
)
from service.settings import get_settings
from service.storage import object_path
from service.store._common import (
    _finish,
    _locked_analysis,
)
from service.store.exports import number_for_export

# --- analyses: the worker side (docs/service-contract.md) ----------------------


def claim_analysis(
    session: Session,
    analysis_id: str,
    worker_id: str,
    *,
    lease_s: float,
    max_attempts: int,
    storage_dir: Path | None = None,
    now: datetime | None = None,
) -> AnalysisJob | None:
    """Take the lease and bump ``attempt``; None when it is finished, cancelled or
    held under a live lease (by anyone, this worker included). Past
    ``max_attempts`` it is marked failed (``worker_lost``) and None is returned."""
    now = now or utcnow()
    row = _locked_analysis(session, analysis_id)
    if row is None or row.status in TERMINAL_STATUSES:
        return None
    if row.status == "running" and row.lease_expires_at and row.lease_expires_at > now:
        return None
    if row.attempt >= max_attempts:
        _finish(
            row,
            "failed",
            now,
            code="worker_lost",
            message=f"no worker finished the analysis in {row.attempt} attempts (the "
            "worker died or stopped heartbeating); submit it again, with fewer "
            "samples or layers if it ran out of memory",
        )
        session.flush()
        return None
    model = session.get(ModelRow, row.model_id) if row.model_id else None
    dataset = session.get(DatasetRow, row.dataset_id) if row.dataset_id else None
    if model is None or dataset is None or model.sha256 is None:
        _finish(
            row,
            "failed",
            now,
            code="input_deleted",
            message="its model or dataset was deleted; submit it again",
        )
        session.flush()
        return None
    row.status, row.worker_id, row.stage, row.progress = (
        "running",
        worker_id,
        "claimed",
        0.0,
    )
    row.attempt += 1
    row.lease_expires_at = now + timedelta(seconds=lease_s)
    row.started_at = row.started_at or now
    session.flush()
    root = storage_dir or get_settings().storage_dir
    return AnalysisJob(
        analysis_id=row.id,
        team_id=row.team_id,
        attempt=row.attempt,
        config=dict(row.config),
        model=ModelRef(
            path=str(object_path(root, model.sha256)),
            architecture=model.architecture,
            architecture_config=dict(model.architecture_config),
            format=model.format,
            sha256=model.sha256,
            filename=model.filename,
        ),
        dataset=DatasetRef(
            path=str(object_path(root, dataset.sha256))
            if dataset.sha256 and dataset.spec is None
            else None,
            spec=dataset.spec,
            format=dataset.format,
            sha256=dataset.sha256,
        ),
    )


def team_max_upload_bytes(session: Session, team_id: str) -> int:
    """The largest upload a team may make: its own limit, else the settings'. The
    worker checks files against the limit the API took them under."""
    limit = session.scalar(
        select(TeamRow.max_upload_bytes).where(TeamRow.id == team_id)
    )
    return limit or get_settings().max_upload_bytes


def lease_expires_in(
    session: Session, analysis_id: str, *, now: datetime | None = None
) -> float | None:
    """Seconds until the live lease of a running analysis runs out; None when it is
    not running under a live lease (gone, queued, finished, cancelled, expired)."""
    now = now or utcnow()
    expires = session.scalar(
        select(AnalysisRow.lease_expires_at).where(
            AnalysisRow.id == analysis_id, AnalysisRow.status == "running"
        )
    )
    if expires is None or expires <= now:
        return None
    return (expires - now).total_seconds()


def heartbeat(
    session: Session,
    analysis_id: str,
    worker_id: str,
    *,
    stage: str,
    progress: float,
    lease_s: float,
    now: datetime | None = None,
) -> bool:
    """Extend the lease and record progress; False when the worker must stop
    (cancelled, finished, or another worker took the lease)."""
    if not math.isfinite(progress):
        raise ValueError(f"progress must be finite, got {progress}")
    now = now or utcnow()
    row = _locked_analysis(session, analysis_id)
    if row is None or row.status != "running" or row.worker_id != worker_id:
        return False
    row.stage = stage[:64]
    row.progress = min(max(float(progress), 0.0), 1.0)
    row.lease_expires_at = now + timedelta(seconds=lease_s)
    session.flush()
    return True


def save_results(
    session: Session, analysis_id: str, worker_id: str, result: dict[str, Any]
) -> bool:
    """Store the result and mark the analysis succeeded, in the caller's one
    transaction. False (nothing written) unless the analysis is running; results of
    a worker whose lease ran out are still taken while nobody finished it."""
    rows = split_result(result)  # malformed -> ValueError before anything is written
    row = _locked_analysis(session, analysis_id)
    if row is None or row.status != "running":
        return False
    for column, value in rows.columns.items():
        setattr(row, column, value)
    layers = [LayerRow(analysis_id=analysis_id, **layer) for layer, _ in rows.layers]
    session.add_all(layers)
    session.add_all(
        BottleneckRow(analysis_id=analysis_id, **b) for b in rows.bottlenecks
    )
    session.flush()  # layer ids
    session.add_all(
        MetricRow(analysis_id=analysis_id, layer_id=layer.id, **metric)
        for layer, (_, metrics) in zip(layers, rows.layers, strict=True)
        for metric in metrics
    )
    row.worker_id = worker_id
    _finish(row, "succeeded")
    row.progress, row.stage = 1.0, "done"
    number_for_export(session, row, sum(len(m) for _, m in rows.layers))  # last
    session.flush()
    return True


def fail_analysis(
    session: Session, analysis_id: str, *, code: str, message: str
) -> None:
    """Mark it failed with ``{code, message}``; a finished analysis is left as is."""
    row = _locked_analysis(session, analysis_id)
    if row is None or row.status in TERMINAL_STATUSES:
        return
    _finish(row, "failed", code=code, message=message)
    session.flush()


def analyses_to_reconcile(
    session: Session, *, now: datetime, queued_grace_s: float, limit: int = 500
) -> list[tuple[str, str]]:
    """``(id, queue)`` of analyses to enqueue again, each stamped as enqueued now.

    - queued ones not enqueued for ``queued_grace_s`` (the message was lost);
    - running ones whose lease expired and that were not sent since it expired, at
      once: their worker is gone (killed, or the service restarted), so waiting for
      the queued grace would leave them ``running`` for minutes. One that was sent
      and is still unclaimed is sent again only after the grace, as a queued one.
    """
    begin_write(session)
    grace_over = or_(
        AnalysisRow.enqueued_at.is_(None),
        AnalysisRow.enqueued_at <= now - timedelta(seconds=queued_grace_s),
    )
    lease_expired = and_(
        AnalysisRow.status == "running",
        AnalysisRow.lease_expires_at <= now,
    )
    not_sent_since = or_(
        grace_over, AnalysisRow.enqueued_at <= AnalysisRow.lease_expires_at
    )
    rows = session.scalars(
        select(AnalysisRow)
        .where(
            or_(
                and_(AnalysisRow.status == "queued", grace_over),
                and_(lease_expired, not_sent_since),
            )
        )
        .order_by(AnalysisRow.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.enqueued_at = now
    session.flush()
    return [(row.id, row.queue) for row in rows]
