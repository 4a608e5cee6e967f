"""The reporting export: one row per (analysis, layer, metric, estimator).

Incremental reads follow a cursor that is an export sequence number: every
succeeded analysis takes the next number when its results are saved, under the
lock of the single ``export_sequence`` row, held until that transaction commits.
So numbers are handed out in commit order, and a reader that sees number ``n``
sees every number below it (docs/reporting.md states the argument).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, Select, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sl_insert
from sqlalchemy.orm import Session

from service.db import session_scope
from service.errors import InvalidInput
from service.models import (
    AnalysisExportRow,
    AnalysisRow,
    DatasetRow,
    ExportSequenceRow,
    LayerRow,
    MetricRow,
    ModelRow,
    SeriesCheckpointRow,
)
from service.schemas_series import EXPORT_COLUMNS

CURSOR_MAX_DIGITS = 18  # fits a signed 64-bit integer


def number_for_export(session: Session, analysis: AnalysisRow, n_rows: int) -> int:
    """Give a just-succeeded analysis the next export number, in the transaction
    that saves its results. The row lock taken here (a database write lock on
    SQLite) is held until that transaction ends; call it last, just before the
    commit, so that concurrent savers wait for as short a time as possible."""
    bump = (
        update(ExportSequenceRow)
        .where(ExportSequenceRow.id == 1)
        .values(last_seq=ExportSequenceRow.last_seq + 1)
    )
    if session.execute(bump).rowcount == 0:  # type: ignore[attr-defined]
        _create_sequence(session)
        session.execute(bump)
    seq = session.scalar(
        select(ExportSequenceRow.last_seq).where(ExportSequenceRow.id == 1)
    )
    assert seq is not None
    session.add(
        AnalysisExportRow(
            analysis_id=analysis.id, team_id=analysis.team_id, seq=seq, n_rows=n_rows
        )
    )
    return seq


def _create_sequence(session: Session) -> None:
    """The counter row, should it be missing (migration 0003 creates it), starting
    after the highest number given; a concurrent creator wins, nothing fails."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sl_insert
    start = select(func.coalesce(func.max(AnalysisExportRow.seq), 0)).scalar_subquery()
    session.execute(
        insert(ExportSequenceRow)
        .values(id=1, last_seq=start)
        .on_conflict_do_nothing(index_elements=["id"])
    )


def parse_cursor(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > CURSOR_MAX_DIGITS:
        raise InvalidInput(
            f"since={cursor[:40]!r} is not a cursor; pass the X-Next-Cursor of the "
            "previous export, or 0 to start from the beginning",
            code="invalid_cursor",
        )
    return int(cursor)


def export_page(session: Session, team_id: str, *, since: int, limit: int) -> int:
    """The cursor that ends the page after ``since``: whole analyses, in export
    order, until they hold ``limit`` rows (at least one analysis, so a page always
    moves on). ``since`` when there is nothing new."""
    total, upto = 0, since
    for seq, n_rows in session.execute(
        select(AnalysisExportRow.seq, AnalysisExportRow.n_rows)
        .where(AnalysisExportRow.team_id == team_id, AnalysisExportRow.seq > since)
        .order_by(AnalysisExportRow.seq)
        .limit(limit)
    ):
        if total and total + n_rows > limit:
            break
        total, upto = total + n_rows, seq
    return upto


def _rows_query(team_id: str, since: int, upto: int) -> Select[*tuple[Any, ...]]:
    ae, a, v, layer = AnalysisExportRow, AnalysisRow, MetricRow, LayerRow
    columns = (
        a.team_id,
        a.model_id,
        ModelRow.filename,
        ModelRow.sha256,
        SeriesCheckpointRow.series_id,
        SeriesCheckpointRow.step,
        a.dataset_id,
        func.coalesce(DatasetRow.filename, DatasetRow.spec),
        a.id,
        a.finished_at,
        layer.name,
        layer.index,
        layer.width,
        layer.is_bottleneck,
        v.metric,
        v.estimator,
        v.value,
        v.ci_low,
        v.ci_high,
        v.n_samples,
        a.schema_version,
    )
    return (
        select(*(c.label(n) for c, n in zip(columns, EXPORT_COLUMNS, strict=True)))
        .select_from(ae)
        .join(a, a.id == ae.analysis_id)
        .join(layer, layer.analysis_id == ae.analysis_id)
        .join(v, v.layer_id == layer.id)
        .outerjoin(ModelRow, ModelRow.id == a.model_id)
        .outerjoin(DatasetRow, DatasetRow.id == a.dataset_id)
        .outerjoin(SeriesCheckpointRow, SeriesCheckpointRow.model_id == a.model_id)
        .where(ae.team_id == team_id, ae.seq > since, ae.seq <= upto)
        .order_by(ae.seq, layer.position, v.position)
    )


def export_rows(
    engine: Engine, team_id: str, *, since: int, upto: int, batch: int = 2000
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of the page ``(since, upto]`` in batches, read with a server-side
    cursor in a session of its own (the response streams after the route's
    session has closed); memory stays at one batch."""
    with session_scope(engine) as session:
        result = session.execute(
            _rows_query(team_id, since, upto).execution_options(yield_per=batch)
        )
        for part in result.partitions():
            yield [tuple(row) for row in part]
