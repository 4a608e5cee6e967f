"""Model series: checkpoints of one architecture, their analyses and trajectories."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from contract.config import parse_config
from contract.errors import ContractError
from contract.families import FAMILIES
from service import auth
from service.db import begin_write
from service.errors import Conflict, NotFound
from service.models import (
    AnalysisRow,
    LayerRow,
    MetricRow,
    ModelRow,
    SeriesCheckpointRow,
    SeriesRow,
    TeamRow,
)
from service.schemas_series import (
    CheckpointPublic,
    CheckpointsPublic,
    LayerTrajectory,
    Order,
    PlanePath,
    PlanePoint,
    SeriesAnalysesCreate,
    SeriesAnalysesPublic,
    SeriesAnalysis,
    SeriesCreate,
    SeriesListPublic,
    SeriesPublic,
    TrajectoryPoint,
    TrajectoryPublic,
)
from service.store._common import _ID, _model_public, _new_id
from service.store.analyses import create_analysis
from service.store.uploads import create_model

MI_INPUT, MI_OUTPUT = FAMILIES["mi"].metrics
REUSABLE = ("queued", "running", "succeeded")
Checkpoint = tuple[SeriesCheckpointRow, ModelRow]
CheckpointQuery = Select[SeriesCheckpointRow, ModelRow]


def _owned_series(
    session: Session, team_id: str, series_id: str, *, lock: bool = False
) -> SeriesRow:
    query = select(SeriesRow).where(
        SeriesRow.id == series_id, SeriesRow.team_id == team_id
    )
    row = (
        session.scalar(query.with_for_update() if lock else query)
        if _ID.fullmatch(series_id)
        else None
    )
    if row is None:
        raise NotFound(f"series {series_id[:64]!r} not found")
    return row


def _series_public(session: Session, row: SeriesRow) -> SeriesPublic:
    count = session.scalar(
        select(func.count()).where(SeriesCheckpointRow.series_id == row.id)
    )
    return SeriesPublic(
        id=row.id,
        name=row.name,
        architecture=row.architecture,
        architecture_config=row.architecture_config,
        checkpoints=count or 0,
        created_at=row.created_at,
    )


def _checkpoint_public(cp: SeriesCheckpointRow, model: ModelRow) -> CheckpointPublic:
    return CheckpointPublic(
        model=_model_public(model), step=cp.step, epoch=cp.epoch, tag=cp.tag
    )


def _ordered(query: CheckpointQuery, order: Order) -> CheckpointQuery:
    if order == "tag":
        tag_missing = SeriesCheckpointRow.tag.is_(None)
        return query.order_by(tag_missing, SeriesCheckpointRow.tag)
    return query.order_by(SeriesCheckpointRow.step, SeriesCheckpointRow.epoch)


def _checkpoints(session: Session, series_id: str, order: Order) -> list[Checkpoint]:
    query = (
        select(SeriesCheckpointRow, ModelRow)
        .join(ModelRow, ModelRow.id == SeriesCheckpointRow.model_id)
        .where(SeriesCheckpointRow.series_id == series_id)
    )
    query = _ordered(query, order).order_by(ModelRow.created_at, ModelRow.id)
    return [(cp, m) for cp, m in session.execute(query)]


# --- series and checkpoints -----------------------------------------------------


def create_series(session: Session, team_id: str, body: SeriesCreate) -> SeriesPublic:
    begin_write(session)
    session.get(TeamRow, team_id, with_for_update=True)  # one creator per team
    taken = session.scalar(
        select(SeriesRow.id).where(
            SeriesRow.team_id == team_id, SeriesRow.name == body.name
        )
    )
    if taken is not None:
        raise Conflict(
            f"the team has a series named {body.name!r} already ({taken}); pick "
            "another name or upload into that one",
            code="name_taken",
        )
    row = SeriesRow(
        id=_new_id(),
        team_id=team_id,
        name=body.name,
        architecture=body.architecture,
        architecture_config=body.architecture_config,
    )
    session.add(row)
    session.flush()
    return _series_public(session, row)


def get_series(session: Session, team_id: str, series_id: str) -> SeriesPublic:
    return _series_public(session, _owned_series(session, team_id, series_id))


def list_series(
    session: Session, team_id: str, *, limit: int, offset: int
) -> SeriesListPublic:
    query = select(SeriesRow).where(SeriesRow.team_id == team_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(SeriesRow.created_at.desc(), SeriesRow.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return SeriesListPublic(
        data=[_series_public(session, r) for r in rows], count=count
    )


def delete_series(session: Session, team_id: str, series_id: str) -> None:
    """Delete the series; its checkpoints stay as plain models of the team."""
    begin_write(session)
    session.delete(_owned_series(session, team_id, series_id, lock=True))
    session.flush()


def add_checkpoint(
    session: Session,
    team_id: str,
    series_id: str,
    *,
    step: int,
    epoch: int | None,
    tag: float | None,
    sha256: str,
    size: int,
    format: str,
    filename: str | None,
    architecture_config: dict[str, Any] | None = None,
) -> CheckpointPublic:
    """A model row with the series' architecture, placed in the series; its config
    is the series' unless the checkpoint brings its own (a series of neck widths
    of one family, ordered by ``tag``)."""
    series = _owned_series(session, team_id, series_id)
    model = create_model(
        session,
        team_id,
        sha256=sha256,
        size=size,
        format=format,
        architecture=series.architecture,
        architecture_config=(
            series.architecture_config
            if architecture_config is None
            else architecture_config
        ),
        filename=filename,
    )
    cp = SeriesCheckpointRow(
        model_id=model.id, series_id=series.id, step=step, epoch=epoch, tag=tag
    )
    session.add(cp)
    session.flush()
    return CheckpointPublic(model=model, step=step, epoch=epoch, tag=tag)


def list_checkpoints(
    session: Session, team_id: str, series_id: str, *, order: Order = "step"
) -> CheckpointsPublic:
    _owned_series(session, team_id, series_id)
    rows = _checkpoints(session, series_id, order)
    return CheckpointsPublic(
        data=[_checkpoint_public(cp, m) for cp, m in rows], count=len(rows)
    )


def latest_checkpoint(
    session: Session, team_id: str, series_id: str, *, ready_only: bool = False
) -> str | None:
    """The model id of the series' checkpoint with the highest step, if any
    (``ready_only``: among those that passed validation)."""
    _owned_series(session, team_id, series_id)
    return series_latest_model(session, series_id, ready_only=ready_only)


def series_latest_model(
    session: Session, series_id: str, *, ready_only: bool = False
) -> str | None:
    """``latest_checkpoint`` without the ownership check, for the scheduler."""
    query = (
        select(SeriesCheckpointRow.model_id)
        .join(ModelRow, ModelRow.id == SeriesCheckpointRow.model_id)
        .where(SeriesCheckpointRow.series_id == series_id)
    )
    if ready_only:
        query = query.where(ModelRow.status == "ready")
    return session.scalar(
        query.order_by(
            SeriesCheckpointRow.step.desc(),
            ModelRow.created_at.desc(),
            ModelRow.id.desc(),
        ).limit(1)
    )


# --- analyses of every checkpoint -----------------------------------------------


def _same_config(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    try:
        return parse_config(stored).to_dict() == wanted
    except ContractError:  # written by an older version that no longer parses
        return False


def _reusable(
    session: Session,
    team_id: str,
    series: SeriesRow,
    checkpoints: list[Checkpoint],
    dataset_id: str,
    config: dict[str, Any],
) -> dict[str, str]:
    """sha256 -> the oldest analysis of those weights (same architecture and
    config), this dataset and this complete config that is not failed/cancelled."""
    shas = {m.sha256 for _, m in checkpoints if m.sha256}
    rows = session.execute(
        select(AnalysisRow.id, AnalysisRow.config, ModelRow)
        .join(ModelRow, ModelRow.id == AnalysisRow.model_id)
        .where(
            AnalysisRow.team_id == team_id,
            AnalysisRow.dataset_id == dataset_id,
            AnalysisRow.status.in_(REUSABLE),
            ModelRow.team_id == team_id,
            ModelRow.sha256.in_(shas),
            ModelRow.architecture == series.architecture,
        )
        .order_by(AnalysisRow.created_at, AnalysisRow.id)
    )
    found: dict[str, str] = {}
    for analysis_id, stored, model in rows:
        if model.sha256 in found or model.sha256 is None:
            continue
        if model.architecture_config != series.architecture_config:
            continue
        if _same_config(stored, config):
            found[model.sha256] = analysis_id
    return found


def analyse_series(
    session: Session,
    key: auth.Principal,
    series_id: str,
    body: SeriesAnalysesCreate,
    *,
    retry_after_s: int,
) -> SeriesAnalysesPublic:
    """One analysis of ``body.config`` (complete) per checkpoint, in step order;
    reused where one of the same weights, dataset and config is queued, running or
    succeeded. New ones are queued (the caller commits, then enqueues them); the
    team's queue limit counts them all, and nothing is created when they do not
    fit."""
    begin_write(session)
    session.get(TeamRow, key.team_id, with_for_update=True)  # dedup is race-free
    series = _owned_series(session, key.team_id, series_id)
    checkpoints = _checkpoints(session, series.id, "step")
    reuse = _reusable(
        session, key.team_id, series, checkpoints, body.dataset_id, body.config
    )
    data = []
    for cp, model in checkpoints:
        reused = reuse.get(model.sha256 or "")
        if reused is None:
            created = create_analysis(
                session, key, body.for_model(model.id), retry_after_s=retry_after_s
            )
            reused_flag, analysis_id = False, created.id
            if model.sha256:
                reuse[model.sha256] = created.id  # a duplicate checkpoint
        else:
            reused_flag, analysis_id = True, reused
        data.append(
            SeriesAnalysis(
                model_id=model.id,
                step=cp.step,
                epoch=cp.epoch,
                tag=cp.tag,
                analysis_id=analysis_id,
                reused=reused_flag,
            )
        )
    return SeriesAnalysesPublic(data=data, count=len(data))


# --- trajectory -----------------------------------------------------------------


def trajectory(
    session: Session,
    team_id: str,
    series_id: str,
    *,
    metric: str,
    estimator: str,
    dataset_id: str,
    order: Order = "step",
) -> TrajectoryPublic:
    """Per layer, ``metric``/``estimator`` at every checkpoint in order, and per
    layer and MI estimator the (I(X;T), I(T;Y)) path. A checkpoint's value comes
    from the newest succeeded analysis of its weights on the dataset that has the
    (metric, estimator); a checkpoint without one is left out of that line."""
    series = _owned_series(session, team_id, series_id)
    checkpoints = _checkpoints(session, series.id, order)
    analysed = _analysed(session, team_id, series, checkpoints, dataset_id)
    wanted = {(metric, estimator)}
    rows = _metric_rows(session, analysed, metric, estimator)
    lines: dict[tuple[str, int], list[TrajectoryPoint]] = defaultdict(list)
    planes: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for cp, model in checkpoints:
        chosen = _chosen(analysed.get(model.id, []), rows)
        for (m, e), analysis_id in chosen.items():
            for layer, index, value, ci_low, ci_high in _first(
                rows[analysis_id][(m, e)]
            ):
                place: dict[str, Any] = dict(
                    model_id=model.id, step=cp.step, epoch=cp.epoch, tag=cp.tag
                )
                if (m, e) in wanted:
                    lines[(layer, index)].append(
                        TrajectoryPoint(
                            **place,
                            analysis_id=analysis_id,
                            value=value,
                            ci_low=ci_low,
                            ci_high=ci_high,
                        )
                    )
                if m in (MI_INPUT, MI_OUTPUT):
                    point = planes[(layer, index, e)].setdefault(
                        model.id, {**place, "analysis_id": analysis_id}
                    )
                    point[m] = value
    return TrajectoryPublic(
        series_id=series.id,
        metric=metric,
        estimator=estimator,
        dataset_id=dataset_id,
        order=order,
        layers=[
            LayerTrajectory(layer=name, index=index, points=points)
            for (name, index), points in sorted(lines.items(), key=lambda i: i[0][1])
        ],
        information_plane=[
            PlanePath(
                layer=name,
                index=index,
                estimator=e,
                points=[
                    PlanePoint(**{MI_INPUT: None, MI_OUTPUT: None, **p})
                    for p in points.values()
                ],
            )
            for (name, index, e), points in sorted(
                planes.items(), key=lambda i: (i[0][1], i[0][2])
            )
        ],
    )


MetricRows = dict[str, dict[tuple[str, str], list[tuple[Any, ...]]]]


def _analysed(
    session: Session,
    team_id: str,
    series: SeriesRow,
    checkpoints: list[Checkpoint],
    dataset_id: str,
) -> dict[str, list[str]]:
    """checkpoint model id -> succeeded analyses of its weights, newest first."""
    by_sha: dict[str, list[str]] = defaultdict(list)
    for _, m in checkpoints:
        by_sha[m.sha256 or ""].append(m.id)
    rows = session.execute(
        select(AnalysisRow.id, ModelRow.sha256, ModelRow.architecture_config)
        .join(ModelRow, ModelRow.id == AnalysisRow.model_id)
        .where(
            AnalysisRow.team_id == team_id,
            AnalysisRow.dataset_id == dataset_id,
            AnalysisRow.status == "succeeded",
            ModelRow.team_id == team_id,
            ModelRow.sha256.in_([s for s in by_sha if s]),
            ModelRow.architecture == series.architecture,
        )
        .order_by(AnalysisRow.finished_at.desc(), AnalysisRow.id)
    )
    analysed: dict[str, list[str]] = defaultdict(list)
    for analysis_id, sha256, config in rows:
        if config == series.architecture_config:
            for model_id in by_sha[sha256 or ""]:
                analysed[model_id].append(analysis_id)
    return analysed


def _metric_rows(
    session: Session, analysed: dict[str, list[str]], metric: str, estimator: str
) -> MetricRows:
    ids = {a for ids in analysed.values() for a in ids}
    wanted = (MetricRow.metric == metric) & (MetricRow.estimator == estimator)
    plane = MetricRow.metric.in_((MI_INPUT, MI_OUTPUT))
    rows: MetricRows = defaultdict(lambda: defaultdict(list))
    for r in session.execute(
        select(
            MetricRow.analysis_id,
            MetricRow.metric,
            MetricRow.estimator,
            LayerRow.name,
            LayerRow.index,
            MetricRow.value,
            MetricRow.ci_low,
            MetricRow.ci_high,
        )
        .join(LayerRow, LayerRow.id == MetricRow.layer_id)
        .where(MetricRow.analysis_id.in_(ids), wanted | plane)
        .order_by(LayerRow.position, MetricRow.position)
    ):
        rows[r[0]][(r[1], r[2])].append(tuple(r[3:]))
    return rows


def _chosen(analyses: list[str], rows: MetricRows) -> dict[tuple[str, str], str]:
    """(metric, estimator) -> the first (newest) analysis that has it."""
    chosen: dict[tuple[str, str], str] = {}
    for analysis_id in analyses:
        for key in rows.get(analysis_id, {}):
            chosen.setdefault(key, analysis_id)
    return chosen


def _first(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The first row of each layer (a family may report several of one pair)."""
    first: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        first.setdefault(row[0], row)
    return list(first.values())
