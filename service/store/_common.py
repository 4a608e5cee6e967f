"""Shared pieces of the store: id checks, row lookups, row-to-schema converters."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.db import begin_write
from service.errors import Conflict, NotFound
from service.models import (
    AnalysisRow,
    BottleneckRow,
    DatasetRow,
    LayerRow,
    MetricRow,
    ModelRow,
    utcnow,
)
from service.results import (
    bottleneck_dict,
    layer_dict,
)
from service.schemas import (
    AnalysisPublic,
    DatasetPublic,
    ErrorInfo,
    ModelPublic,
)

Kind = Literal["model", "dataset"]
Row = TypeVar("Row", ModelRow, DatasetRow, AnalysisRow)
Upload = ModelRow | DatasetRow
_ID = re.compile(r"[0-9a-f]{32}")


def _new_id() -> str:
    return uuid.uuid4().hex


# --- helpers ------------------------------------------------------------------


def _owned(
    session: Session,
    table: type[Row],
    team_id: str,
    object_id: str,
    *,
    lock: bool = False,
) -> Row:
    """The team's row, or NotFound exactly as for a missing one."""
    if not _ID.fullmatch(object_id):  # ours are hex; NUL would upset PostgreSQL
        raise NotFound(f"{table.__tablename__} {object_id[:64]!r} not found")
    query = select(table).where(table.id == object_id, table.team_id == team_id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"{table.__tablename__} {object_id[:64]!r} not found")
    return row


def _get_upload(
    session: Session, kind: Kind, object_id: str, *, lock: bool = False
) -> Upload | None:
    lock_arg = True if lock else None
    if kind == "model":
        return session.get(ModelRow, object_id, with_for_update=lock_arg)
    return session.get(DatasetRow, object_id, with_for_update=lock_arg)


def _locked_analysis(session: Session, analysis_id: str) -> AnalysisRow | None:
    begin_write(session)
    return session.get(AnalysisRow, analysis_id, with_for_update=True)


def _page(
    session: Session,
    query: Select[Row],
    table: type[Row],
    *,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(table.created_at.desc(), table.id).limit(limit).offset(offset)
    ).all()
    return list(rows), count


def _finished(session: Session, team_id: str, analysis_id: str) -> AnalysisRow:
    row = _owned(session, AnalysisRow, team_id, analysis_id)
    if row.status != "succeeded":
        raise Conflict(
            f"analysis {analysis_id!r} is {row.status}; results exist once its "
            "status is succeeded",
            code="no_results",
        )
    return row


def _layers(session: Session, analysis_id: str) -> list[dict[str, Any]]:
    metrics: dict[int, list[MetricRow]] = defaultdict(list)
    for m in session.scalars(
        select(MetricRow)
        .where(MetricRow.analysis_id == analysis_id)
        .order_by(MetricRow.layer_id, MetricRow.position)
    ):
        metrics[m.layer_id].append(m)
    layers = session.scalars(
        select(LayerRow)
        .where(LayerRow.analysis_id == analysis_id)
        .order_by(LayerRow.position)
    )
    return [layer_dict(layer, metrics[layer.id]) for layer in layers]


def _bottlenecks(session: Session, analysis_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(BottleneckRow)
        .where(BottleneckRow.analysis_id == analysis_id)
        .order_by(BottleneckRow.position)
    )
    return [bottleneck_dict(b) for b in rows]


def _sha256_in_use(session: Session, sha256: str) -> bool:
    return any(
        session.scalar(select(table.id).where(table.sha256 == sha256).limit(1))
        for table in (ModelRow, DatasetRow)
    )


def _finish(
    row: AnalysisRow,
    status: str,
    now: datetime | None = None,
    *,
    code: str | None = None,
    message: str | None = None,
) -> None:
    row.status, row.finished_at, row.lease_expires_at = status, now or utcnow(), None
    row.error_code, row.error_message = code and code[:64], message


def _error(code: str | None, message: str | None) -> ErrorInfo | None:
    return ErrorInfo(code=code, message=message or "") if code else None


def _model_public(row: ModelRow) -> ModelPublic:
    return ModelPublic(
        id=row.id,
        sha256=row.sha256 or "",
        size=row.size or 0,
        format=row.format,
        architecture=row.architecture,
        architecture_config=row.architecture_config,
        filename=row.filename,
        status=row.status,  # type: ignore[arg-type]
        error=_error(row.error_code, row.error_message),
        created_at=row.created_at,
    )


def _dataset_public(row: DatasetRow) -> DatasetPublic:
    return DatasetPublic(
        id=row.id,
        sha256=row.sha256,
        size=row.size,
        format=row.format,
        spec=row.spec,
        filename=row.filename,
        n_samples=row.n_samples,
        sample_shape=row.sample_shape,
        dtype=row.dtype,
        has_labels=row.has_labels,
        status=row.status,  # type: ignore[arg-type]
        error=_error(row.error_code, row.error_message),
        created_at=row.created_at,
    )


def _analysis_public(row: AnalysisRow) -> AnalysisPublic:
    return AnalysisPublic(
        id=row.id,
        model_id=row.model_id,
        dataset_id=row.dataset_id,
        config=row.config,
        status=row.status,  # type: ignore[arg-type]
        progress=row.progress,
        stage=row.stage,
        error=_error(row.error_code, row.error_message),
        attempt=row.attempt,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        warnings=list((row.extras or {}).get("warnings") or []),
    )


def ping(session: Session) -> bool:
    """True when the database answers."""
    try:
        session.execute(select(1))
    except SQLAlchemyError:
        session.rollback()
        return False
    return True
