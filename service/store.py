"""Every query of the service and the workers. ORM rows never leave this module.

Transactions: each function runs inside the caller's ``session_scope()`` and only
flushes; the scope commits. Read-then-write functions call ``begin_write`` first
(``BEGIN IMMEDIATE`` on SQLite) and lock the rows they change with
``SELECT ... FOR UPDATE`` (PostgreSQL), so concurrent workers and requests serialise
on them; on SQLite they must be the first call in their session_scope.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service import auth
from service.db import begin_write
from service.errors import Conflict, NotFound, QueueFull
from service.models import (
    TERMINAL_STATUSES,
    AnalysisRow,
    ApiKeyRow,
    BottleneckRow,
    DatasetRow,
    LayerRow,
    MetricRow,
    ModelRow,
    TeamRow,
    utcnow,
)
from service.results import (
    bottleneck_dict,
    document,
    json_ready,
    layer_dict,
    split_result,
)
from service.schemas import (
    AnalysesPublic,
    AnalysisCreate,
    AnalysisJob,
    AnalysisPublic,
    ApiKeyRecord,
    DatasetPublic,
    DatasetRef,
    DatasetsPublic,
    ErrorInfo,
    LayerMetric,
    ModelPublic,
    ModelRef,
    ModelsPublic,
    TeamInfo,
    UploadJob,
)
from service.settings import get_settings
from service.storage import object_path

Kind = Literal["model", "dataset"]
Row = TypeVar("Row", ModelRow, DatasetRow, AnalysisRow)
Upload = ModelRow | DatasetRow
_ID = re.compile(r"[0-9a-f]{32}")


def _new_id() -> str:
    return uuid.uuid4().hex


# --- teams and API keys -------------------------------------------------------


def create_team(
    session: Session,
    name: str,
    *,
    max_upload_bytes: int | None = None,
    max_queued_analyses: int | None = None,
) -> TeamInfo:
    """A new team; its limits default to the settings' when None."""
    begin_write(session)
    if session.scalar(select(TeamRow.id).where(TeamRow.name == name)):
        raise Conflict(f"a team named {name!r} exists already", code="team_exists")
    row = TeamRow(
        id=_new_id(),
        name=name,
        max_upload_bytes=max_upload_bytes,
        max_queued_analyses=max_queued_analyses,
    )
    session.add(row)
    session.flush()
    return TeamInfo(row.id, row.name)


def get_team(session: Session, team: str) -> TeamInfo | None:
    """The team with this name or id."""
    row = session.scalar(
        select(TeamRow).where(or_(TeamRow.name == team, TeamRow.id == team))
    )
    return TeamInfo(row.id, row.name) if row else None


def create_api_key(
    session: Session, team: str, scopes: str | list[str] | tuple[str, ...]
) -> tuple[str, str]:
    """``(key_id, plaintext)`` for the team named ``team`` (or with that id).

    Only the sha256 of the plaintext is stored: show the plaintext once.
    """
    begin_write(session)
    found = get_team(session, team)
    if found is None:
        raise NotFound(f"team {team!r} not found; create it first")
    key_id, plaintext, key_hash = auth.new_token()
    session.add(
        ApiKeyRow(
            id=key_id,
            team_id=found.id,
            key_hash=key_hash,
            scopes=",".join(auth.parse_scopes(scopes)),
        )
    )
    session.flush()
    return key_id, plaintext


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Revoke a key; False when it does not exist or was revoked already."""
    begin_write(session)
    row = session.get(ApiKeyRow, key_id, with_for_update=True)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True


def get_api_key(session: Session, key_id: str) -> ApiKeyRecord | None:
    found = session.execute(
        select(ApiKeyRow, TeamRow)
        .join(TeamRow, TeamRow.id == ApiKeyRow.team_id)
        .where(ApiKeyRow.id == key_id)
    ).first()
    if found is None:
        return None
    key, team = found
    return ApiKeyRecord(
        key_id=key.id,
        team_id=key.team_id,
        key_hash=key.key_hash,
        scopes=tuple(key.scopes.split(",")),
        revoked=key.revoked_at is not None,
        team_max_upload_bytes=team.max_upload_bytes,
        team_max_queued_analyses=team.max_queued_analyses,
    )


# --- models and datasets ------------------------------------------------------


def create_model(
    session: Session,
    team_id: str,
    *,
    sha256: str,
    size: int,
    format: str,
    architecture: str,
    architecture_config: dict[str, Any],
    filename: str | None,
) -> ModelPublic:
    row = ModelRow(
        id=_new_id(),
        team_id=team_id,
        sha256=sha256,
        size=size,
        format=format,
        architecture=architecture,
        architecture_config=architecture_config,
        filename=filename,
        status="validating",
    )
    session.add(row)
    session.flush()
    return _model_public(row)


def create_dataset(
    session: Session,
    team_id: str,
    *,
    format: str,
    sha256: str | None = None,
    size: int | None = None,
    spec: str | None = None,
    filename: str | None = None,
) -> DatasetPublic:
    row = DatasetRow(
        id=_new_id(),
        team_id=team_id,
        sha256=sha256,
        size=size,
        format=format,
        spec=spec,
        filename=filename,
        status="validating",
    )
    session.add(row)
    session.flush()
    return _dataset_public(row)


def get_model(session: Session, team_id: str, model_id: str) -> ModelPublic:
    return _model_public(_owned(session, ModelRow, team_id, model_id))


def get_dataset(session: Session, team_id: str, dataset_id: str) -> DatasetPublic:
    return _dataset_public(_owned(session, DatasetRow, team_id, dataset_id))


def list_models(
    session: Session, team_id: str, *, limit: int, offset: int
) -> ModelsPublic:
    query = select(ModelRow).where(ModelRow.team_id == team_id)
    rows, count = _page(session, query, ModelRow, limit=limit, offset=offset)
    return ModelsPublic(data=[_model_public(r) for r in rows], count=count)


def list_datasets(
    session: Session, team_id: str, *, limit: int, offset: int
) -> DatasetsPublic:
    query = select(DatasetRow).where(DatasetRow.team_id == team_id)
    rows, count = _page(session, query, DatasetRow, limit=limit, offset=offset)
    return DatasetsPublic(data=[_dataset_public(r) for r in rows], count=count)


def delete_upload(
    session: Session, kind: Kind, team_id: str, object_id: str
) -> str | None:
    """Delete a model or dataset row; its finished analyses keep their results.

    Returns the sha256 of the stored file when no row refers to it any more (the
    caller removes the file after the commit), else None. Refused while an analysis
    of it is queued or running.
    """
    begin_write(session)
    row: Upload = (
        _owned(session, ModelRow, team_id, object_id, lock=True)
        if kind == "model"
        else _owned(session, DatasetRow, team_id, object_id, lock=True)
    )
    ref = AnalysisRow.model_id if kind == "model" else AnalysisRow.dataset_id
    active = session.scalar(
        select(func.count())
        .select_from(AnalysisRow)
        .where(ref == object_id, AnalysisRow.status.in_(("queued", "running")))
    )
    if active:
        raise Conflict(
            f"{kind} {object_id!r} is used by {active} queued or running analyses; "
            "cancel them or wait until they finish",
            code="in_use",
        )
    sha256 = row.sha256
    session.delete(row)
    session.flush()
    if sha256 is None or _sha256_in_use(session, sha256):
        return None
    return sha256


def get_upload_for_validation(
    session: Session, kind: Kind, object_id: str, *, storage_dir: Path | None = None
) -> UploadJob | None:
    """The upload to validate; None when it is gone or was validated already."""
    row = _get_upload(session, kind, object_id)
    if row is None or row.status != "validating":
        return None
    root = storage_dir or get_settings().storage_dir
    path = str(object_path(root, row.sha256)) if row.sha256 and row.size else None
    job = UploadJob(
        kind=kind,
        object_id=row.id,
        team_id=row.team_id,
        format=row.format,
        path=path,
        spec=row.spec if isinstance(row, DatasetRow) else None,
        sha256=row.sha256,
        size=row.size,
        filename=row.filename,
    )
    if isinstance(row, ModelRow):
        job = replace(
            job,
            architecture=row.architecture,
            architecture_config=row.architecture_config,
        )
    return job


def mark_upload(
    session: Session,
    kind: Kind,
    object_id: str,
    *,
    status: Literal["ready", "rejected"],
    error: dict[str, str] | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Record the validator's verdict. ``info`` for datasets: n_samples, sample_shape,
    dtype, has_labels and (built-ins) sha256; other keys are kept in ``info``."""
    if status not in ("ready", "rejected"):
        raise ValueError(f"status must be ready or rejected, not {status!r}")
    if status == "rejected" and not (
        error and error.get("code") and error.get("message")
    ):
        raise ValueError("a rejection needs error={'code': ..., 'message': ...}")
    begin_write(session)
    row = _get_upload(session, kind, object_id, lock=True)
    if row is None:
        return  # deleted while it was validated
    info = dict(info or {})
    if isinstance(row, DatasetRow):
        if "n_samples" in info:
            row.n_samples = int(info.pop("n_samples"))
        if "sample_shape" in info:
            row.sample_shape = [int(d) for d in info.pop("sample_shape")]
        if "dtype" in info:
            row.dtype = str(info.pop("dtype"))
        if "has_labels" in info:
            row.has_labels = bool(info.pop("has_labels"))
        if row.sha256 is None and "sha256" in info:
            row.sha256 = str(info.pop("sha256"))
    row.status = status
    if status == "rejected" and error:
        row.error_code, row.error_message = error["code"][:64], error["message"]
    else:
        row.error_code = row.error_message = None
    row.info = json_ready(info) or None
    session.flush()


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


def get_results(session: Session, team_id: str, analysis_id: str) -> dict[str, Any]:
    """The whole result document, equal to the ``AnalysisResult.to_dict()`` saved."""
    row = _finished(session, team_id, analysis_id)
    return document(
        row, _layers(session, analysis_id), _bottlenecks(session, analysis_id)
    )


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
    """``(id, queue)`` of analyses to enqueue again: queued ones not enqueued for
    ``queued_grace_s``, and running ones whose lease expired. Each is stamped as
    enqueued now, so the next pass within the grace skips it."""
    begin_write(session)
    stale = or_(
        AnalysisRow.enqueued_at.is_(None),
        AnalysisRow.enqueued_at <= now - timedelta(seconds=queued_grace_s),
    )
    rows = session.scalars(
        select(AnalysisRow)
        .where(
            stale,
            or_(
                AnalysisRow.status == "queued",
                and_(
                    AnalysisRow.status == "running",
                    AnalysisRow.lease_expires_at <= now,
                ),
            ),
        )
        .order_by(AnalysisRow.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.enqueued_at = now
    session.flush()
    return [(row.id, row.queue) for row in rows]


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
    )


def ping(session: Session) -> bool:
    """True when the database answers."""
    try:
        session.execute(select(1))
    except SQLAlchemyError:
        session.rollback()
        return False
    return True
