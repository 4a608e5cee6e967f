"""Uploaded models and datasets, and their validation by a worker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import begin_write
from service.errors import Conflict
from service.models import (
    AnalysisRow,
    DatasetRow,
    ModelRow,
)
from service.results import (
    json_ready,
)
from service.schemas import (
    DatasetPublic,
    DatasetsPublic,
    ModelPublic,
    ModelsPublic,
    UploadJob,
)
from service.settings import get_settings
from service.storage import object_path
from service.store._common import (
    Kind,
    Upload,
    _dataset_public,
    _get_upload,
    _model_public,
    _new_id,
    _owned,
    _page,
    _sha256_in_use,
)

_U = TypeVar("_U", ModelRow, DatasetRow)

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


def uploads_to_reconcile(
    session: Session, *, now: datetime, grace_s: float, limit: int = 500
) -> list[tuple[Kind, str]]:
    """``(kind, id)`` of uploads to validate again: still ``validating`` and not
    touched for ``grace_s`` (the message was lost, or the API died before sending
    it). Each is stamped (``updated_at``) as sent now, so the next pass within the
    grace skips it."""
    begin_write(session)
    cutoff = now - timedelta(seconds=grace_s)
    models = _stale(session, ModelRow, cutoff, limit)
    datasets = _stale(session, DatasetRow, cutoff, limit - len(models))
    stale: list[ModelRow | DatasetRow] = [*models, *datasets]
    for row in stale:
        row.updated_at = now
    session.flush()
    return [("model", m.id) for m in models] + [("dataset", d.id) for d in datasets]


def _stale(
    session: Session, table: type[_U], cutoff: datetime, limit: int
) -> Sequence[_U]:
    return session.scalars(
        select(table)
        .where(table.status == "validating", table.updated_at <= cutoff)
        .order_by(table.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
