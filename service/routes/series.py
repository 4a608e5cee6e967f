"""``/v1/series``: checkpoints of one architecture, analysed together."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import checks, store
from service.errors import Unavailable
from service.openapi import errors
from service.queue import TaskQueue
from service.routes.deps import (
    AdminKey,
    Limit,
    Offset,
    QueueDep,
    ReadKey,
    SessionDep,
    SettingsDep,
    StorageDep,
    SubmitKey,
    enqueue_validation,
    form_body,
)
from service.schemas import parse_json_object
from service.schemas_series import (
    CheckpointPlace,
    CheckpointPublic,
    CheckpointsPublic,
    Order,
    SeriesAnalysesCreate,
    SeriesAnalysesPublic,
    SeriesCreate,
    SeriesListPublic,
    SeriesPublic,
    TrajectoryPublic,
)
from service.storage import weights_format

router = APIRouter(prefix="/series", tags=["series"])
_FORM = form_body(
    {
        "file": {"type": "string", "format": "binary"},
        "step": {"type": "string", "pattern": "^[0-9]{1,18}$", "example": "1000"},
        "epoch": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "tag": {"type": "string", "description": "a finite number", "example": "8"},
        "architecture_config": {
            "type": "string",
            "description": "a JSON object: this checkpoint's own config of the "
            "series' architecture (a series of neck widths); default the series'",
        },
    },
    required=["file", "step"],
)
Name = Annotated[str, Query(min_length=1, max_length=100)]
DatasetId = Annotated[str, Query(pattern="^[0-9a-f]{32}$")]


@router.post("", status_code=201, responses=errors(409))
def create_series(
    body: SeriesCreate, key: SubmitKey, session: SessionDep
) -> SeriesPublic:
    """Create a series; its checkpoints all use this architecture and config."""
    checks.architecture(body.architecture, body.architecture_config)
    return store.create_series(session, key.team_id, body)


@router.get("")
def list_series(
    key: ReadKey, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> SeriesListPublic:
    """The team's series, newest first, with the total count."""
    return store.list_series(session, key.team_id, limit=limit, offset=offset)


@router.get("/{series_id}")
def get_series(series_id: str, key: ReadKey, session: SessionDep) -> SeriesPublic:
    """One series and its number of checkpoints."""
    return store.get_series(session, key.team_id, series_id)


@router.delete("/{series_id}", status_code=204)
def delete_series(series_id: str, key: AdminKey, session: SessionDep) -> None:
    """Delete a series (its checkpoints stay as models); needs the admin scope."""
    store.delete_series(session, key.team_id, series_id)


@router.post(
    "/{series_id}/checkpoints",
    status_code=201,
    openapi_extra=_FORM,
    responses=errors(507),
)
async def upload_checkpoint(
    series_id: str,
    request: Request,
    key: SubmitKey,
    session: SessionDep,
    storage: StorageDep,
    queue: QueueDep,
) -> CheckpointPublic:
    """Upload weights into the series at ``step`` (``epoch``, ``tag`` and its own
    ``architecture_config`` optional)."""
    series = await run_in_threadpool(store.get_series, session, key.team_id, series_id)
    await run_in_threadpool(session.commit)  # no transaction open during the upload
    fields = ("step", "epoch", "tag", "architecture_config")
    async with storage.receive(
        request, max_bytes=key.max_upload_bytes, fields=fields
    ) as upload:
        place = CheckpointPlace.from_fields(upload.fields)
        own = upload.fields.get("architecture_config")
        config = None
        if own is not None:
            config = parse_json_object(own, "architecture_config")
            checks.architecture(series.architecture, config)
        fmt = weights_format(upload)
        storage.keep(upload)
    checkpoint = await run_in_threadpool(
        store.add_checkpoint,
        session,
        key.team_id,
        series_id,
        step=place.step,
        epoch=place.epoch,
        tag=place.tag,
        architecture_config=config,
        sha256=upload.sha256,
        size=upload.size,
        format=fmt,
        filename=upload.filename,
    )
    await run_in_threadpool(
        enqueue_validation,
        session,
        storage,
        queue,
        "model",
        key.team_id,
        checkpoint.model.id,
    )
    return checkpoint


@router.get("/{series_id}/checkpoints")
def list_checkpoints(
    series_id: str, key: ReadKey, session: SessionDep, order: Order = "step"
) -> CheckpointsPublic:
    """The series' checkpoints by step (``order=tag``: by numeric tag)."""
    return store.list_checkpoints(session, key.team_id, series_id, order=order)


@router.post("/{series_id}/analyses", status_code=202, responses=errors(409, 429))
def analyse_series(
    series_id: str,
    body: SeriesAnalysesCreate,
    key: SubmitKey,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> SeriesAnalysesPublic:
    """One analysis per checkpoint; one of the same weights, dataset and config
    that is queued, running or succeeded is reused, not run again."""
    config = checks.analysis_config(body.config)  # 422 listing every problem
    body = body.model_copy(update={"config": config.to_dict()})
    retry_after_s = settings.queue_full_retry_after_s
    runs = store.analyse_series(
        session, key, series_id, body, retry_after_s=retry_after_s
    )
    session.commit()  # before enqueueing: the workers must find the rows
    new = dict.fromkeys(r.analysis_id for r in runs.data if not r.reused)
    _enqueue(session, queue, list(new), body.queue)
    return runs


def _enqueue(
    session: Session, queue: TaskQueue, analysis_ids: list[str], name: str
) -> None:
    """Send each; when the broker is down, discard the ones not sent yet (those
    sent run; a lost message is sent again by the reconciler)."""
    for i, analysis_id in enumerate(analysis_ids):
        try:
            queue.run_analysis(analysis_id, name)
        except Unavailable:
            for unsent in analysis_ids[i:]:
                store.discard_analysis(session, unsent)
            session.commit()
            raise


@router.get("/{series_id}/trajectory")
def get_trajectory(
    series_id: str,
    key: ReadKey,
    session: SessionDep,
    metric: Name,
    estimator: Name,
    dataset_id: DatasetId,
    order: Order = "step",
) -> TrajectoryPublic:
    """Every layer's metric over the checkpoints, and its information-plane path."""
    return store.trajectory(
        session,
        key.team_id,
        series_id,
        metric=metric,
        estimator=estimator,
        dataset_id=dataset_id,
        order=order,
    )
