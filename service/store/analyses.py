"""Analyses as the API sees them: create, list, cancel, read results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service import auth
from service.db import begin_write
from service.errors import Conflict, QueueFull
from service.models import (
    AnalysisRow,
    DatasetRow,
    LayerRow,
    MetricRow,
    ModelRow,
    TeamRow,
    utcnow,
)
from service.results import (
    document,
)
from service.schemas import (
    AnalysesPublic,
    AnalysisCreate,
    AnalysisPublic,
    LayerMetric,
)
from service.store._common import (
    _analysis_public,
    _bottlenecks,
    _finish,
    _finished,
    _layers,
    _new_id,
    _owned,
    _page,
)

# --- analyses: the API side ---------------------------------------------------


def create_analysis(
    session: Session, key: auth.Principal, body: AnalysisCreate, *, retry_after_s: int
) -> AnalysisPublic:
    """A queued analysis; the model and dataset must be ready and the team's queue
    not full. The caller commits, then enqueues (a crash in between leaves a queued
    row that the reconciler enqueues)."""
    begin_write(session)
    session.get(TeamRow, key.team_id, with_for_update=True)  # one creator per team
    model = _owned(session, ModelRow, key.team_id, body.model_id)
    dataset = _owned(session, DatasetRow, key.team_id, body.dataset_id)
    for kind, upload in (("model", model), ("dataset", dataset)):
        if upload.status == "validating":
            raise Conflict(
                f"{kind} {upload.id!r} is still being validated; wait until its "
                "status is ready, then submit again",
                code="not_ready",
            )
        if upload.status == "rejected":
            raise Conflict(
                f"{kind} {upload.id!r} was rejected ({upload.error_message}); "
                "upload a fixed file",
                code="rejected",
            )
    queued = session.scalar(
        select(func.count())
        .select_from(AnalysisRow)
        .where(AnalysisRow.team_id == key.team_id, AnalysisRow.status == "queued")
    )
    if queued is not None and queued >= key.max_queued_analyses:
        raise QueueFull(
            f"the team has {queued} queued analyses, its limit; wait until some "
            "start, or cancel some",
            retry_after_s=retry_after_s,
        )
    now = utcnow()
    row = AnalysisRow(
        id=_new_id(),
        team_id=key.team_id,
        model_id=model.id,
        dataset_id=dataset.id,
        config=body.config,
        queue=body.queue,
        status="queued",
        progress=0.0,
        attempt=0,
        created_at=now,
        enqueued_at=now,
    )
    session.add(row)
    session.flush()
    return _analysis_public(row)


def discard_analysis(session: Session, analysis_id: str) -> None:
    """Undo ``create_analysis`` when it could not be enqueued (nothing ran yet)."""
    begin_write(session)
    session.execute(
        delete(AnalysisRow).where(
            AnalysisRow.id == analysis_id,
            AnalysisRow.status == "queued",
            AnalysisRow.attempt == 0,
        )
    )


def get_analysis(session: Session, team_id: str, analysis_id: str) -> AnalysisPublic:
    return _analysis_public(_owned(session, AnalysisRow, team_id, analysis_id))


def list_analyses(
    session: Session,
    team_id: str,
    *,
    model_id: str | None = None,
    dataset_id: str | None = None,
    status: str | None = None,
    limit: int,
    offset: int,
) -> AnalysesPublic:
    query = select(AnalysisRow).where(AnalysisRow.team_id == team_id)
    if model_id is not None:
        query = query.where(AnalysisRow.model_id == model_id)
    if dataset_id is not None:
        query = query.where(AnalysisRow.dataset_id == dataset_id)
    if status is not None:
        query = query.where(AnalysisRow.status == status)
    rows, count = _page(session, query, AnalysisRow, limit=limit, offset=offset)
    return AnalysesPublic(data=[_analysis_public(r) for r in rows], count=count)


def cancel_analysis(session: Session, team_id: str, analysis_id: str) -> AnalysisPublic:
    """Mark it cancelled (the worker's next heartbeat stops it); idempotent."""
    begin_write(session)
    row = _owned(session, AnalysisRow, team_id, analysis_id, lock=True)
    if row.status in ("succeeded", "failed"):
        raise Conflict(
            f"analysis {analysis_id!r} has {row.status} already; nothing to cancel",
            code="finished",
        )
    if row.status != "cancelled":
        _finish(row, "cancelled")
        session.flush()
    return _analysis_public(row)


def finished_analysis(
    session: Session, team_id: str, analysis_id: str
) -> AnalysisPublic:
    """The team's analysis once it succeeded; NotFound or Conflict otherwise."""
    return _analysis_public(_finished(session, team_id, analysis_id))


def get_results(session: Session, team_id: str, analysis_id: str) -> dict[str, Any]:
    """The whole result document, equal to the ``AnalysisResult.to_dict()`` saved."""
    row = _finished(session, team_id, analysis_id)
    return document(
        row, _layers(session, analysis_id), _bottlenecks(session, analysis_id)
    )


def get_section(
    session: Session, team_id: str, analysis_id: str, key: str
) -> Any | None:
    """One family's section of a succeeded analysis's result (``necks``), or None
    when the result has none."""
    row = _finished(session, team_id, analysis_id)
    return (row.extras or {}).get(key)


def get_layers(
    session: Session, team_id: str, analysis_id: str
) -> list[dict[str, Any]]:
    _finished(session, team_id, analysis_id)
    return _layers(session, analysis_id)


def get_bottlenecks(
    session: Session, team_id: str, analysis_id: str
) -> list[dict[str, Any]]:
    _finished(session, team_id, analysis_id)
    return _bottlenecks(session, analysis_id)


def layer_metric_across_analyses(
    session: Session,
    team_id: str,
    model_id: str,
    *,
    metric: str = "intrinsic_dimension",
    estimator: str = "twonn",
    layer: str | None = None,
) -> list[LayerMetric]:
    """One metric at one layer in every succeeded analysis of a model, newest first.

    ``layer=None`` takes the last hidden layer: the one before the last by index.
    """
    ranked = (
        select(
            LayerRow.id,
            LayerRow.analysis_id,
            LayerRow.name,
            LayerRow.index.label("layer_index"),
            AnalysisRow.created_at,
            func.row_number()
            .over(partition_by=LayerRow.analysis_id, order_by=LayerRow.index.desc())
            .label("from_last"),
        )
        .join(AnalysisRow, AnalysisRow.id == LayerRow.analysis_id)
        .where(
            AnalysisRow.team_id == team_id,
            AnalysisRow.model_id == model_id,
            AnalysisRow.status == "succeeded",
        )
    )
    if layer is not None:
        ranked = ranked.where(LayerRow.name == layer)
    sub = ranked.subquery()
    rows = session.execute(
        select(sub, MetricRow)
        .join(MetricRow, MetricRow.layer_id == sub.c.id)
        .where(
            sub.c.from_last == (1 if layer is not None else 2),
            MetricRow.metric == metric,
            MetricRow.estimator == estimator,
        )
        .order_by(sub.c.created_at.desc(), sub.c.analysis_id, MetricRow.position)
    ).all()
    return [
        LayerMetric(
            analysis_id=r.analysis_id,
            layer=r.name,
            index=r.layer_index,
            value=r.MetricRow.value,
            ci_low=r.MetricRow.ci_low,
            ci_high=r.MetricRow.ci_high,
            reason=r.MetricRow.reason,
        )
        for r in rows
    ]
