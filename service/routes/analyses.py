"""``/v1/analyses``: submit, follow, cancel, and read results."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, JSONResponse

from contract.necks import NecksResult
from contract.result import REPORT_FILE
from service import checks, store
from service.errors import NotFound, Unavailable
from service.openapi import errors
from service.routes.deps import (
    IdFilter,
    Limit,
    Offset,
    QueueDep,
    ReadKey,
    SessionDep,
    SettingsDep,
    StorageDep,
    SubmitKey,
)
from service.schemas import (
    AnalysesPublic,
    AnalysisCreate,
    AnalysisPublic,
    AnalysisStatus,
    BottlenecksPublic,
    LayersPublic,
)
from service.storage import artifact_file

router = APIRouter(prefix="/analyses", tags=["analyses"])


@router.post("", status_code=202, responses=errors(404, 409, 429))
def create_analysis(
    body: AnalysisCreate,
    response: Response,
    key: SubmitKey,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
) -> AnalysisPublic:
    """Queue an analysis of a ready model on a ready dataset; follow ``Location``."""
    config = checks.analysis_config(body.config)  # 422 listing every problem
    body = body.model_copy(update={"config": config.to_dict()})
    retry_after_s = settings.queue_full_retry_after_s
    analysis = store.create_analysis(session, key, body, retry_after_s=retry_after_s)
    session.commit()  # before enqueueing: the worker must find the row
    try:
        queue.run_analysis(analysis.id, body.queue)
    except Unavailable:
        store.discard_analysis(session, analysis.id)
        session.commit()
        raise
    response.headers["Location"] = f"/v1/analyses/{analysis.id}"
    return analysis


@router.get("")
def list_analyses(
    key: ReadKey,
    session: SessionDep,
    model_id: IdFilter = None,
    dataset_id: IdFilter = None,
    status: AnalysisStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AnalysesPublic:
    """The team's analyses, newest first, filtered, with the total count."""
    return store.list_analyses(
        session,
        key.team_id,
        model_id=model_id,
        dataset_id=dataset_id,
        status=status,
        limit=limit,
        offset=offset,
    )


@router.get("/{analysis_id}")
def get_analysis(analysis_id: str, key: ReadKey, session: SessionDep) -> AnalysisPublic:
    """Status, progress, stage, attempt and error of one analysis."""
    return store.get_analysis(session, key.team_id, analysis_id)


@router.get(
    "/{analysis_id}/results",
    response_class=JSONResponse,
    responses={
        200: {"description": "The result document, as the CLI writes it."},
        **errors(409),
    },
)
def get_results(analysis_id: str, key: ReadKey, session: SessionDep) -> JSONResponse:
    """The whole result JSON of a succeeded analysis (``bottlelens analyze --out``)."""
    return JSONResponse(store.get_results(session, key.team_id, analysis_id))


@router.get("/{analysis_id}/layers", responses=errors(409))
def get_layers(analysis_id: str, key: ReadKey, session: SessionDep) -> LayersPublic:
    """Every captured layer with its metric values."""
    layers = store.get_layers(session, key.team_id, analysis_id)
    return LayersPublic.model_validate({"data": layers, "count": len(layers)})


@router.get("/{analysis_id}/bottlenecks", responses=errors(409))
def get_bottlenecks(
    analysis_id: str, key: ReadKey, session: SessionDep
) -> BottlenecksPublic:
    """The bottlenecks found in the width profile."""
    found = store.get_bottlenecks(session, key.team_id, analysis_id)
    return BottlenecksPublic.model_validate({"data": found, "count": len(found)})


@router.get(
    "/{analysis_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {"description": "A .png or .npy file named in the result."},
        **errors(409),
    },
)
def get_artifact(
    analysis_id: str, name: str, key: ReadKey, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """One attribution map (``.png`` or ``.npy``) listed in the result's files."""
    store.finished_analysis(session, key.team_id, analysis_id)
    path = artifact_file(storage.root, analysis_id, name)
    if path is None:
        raise NotFound(
            f"analysis {analysis_id} has no artifact {name[:64]!r}; the names are "
            "in the result's attribution[*].files"
        )
    media = "image/png" if path.suffix == ".png" else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=path.name)


@router.get(
    "/{analysis_id}/report",
    response_class=FileResponse,
    responses={
        200: {
            "description": "One self-contained HTML page (no request of its own).",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **errors(409),
    },
)
def get_report(
    analysis_id: str, key: ReadKey, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """The HTML report of a succeeded analysis, written by the worker."""
    store.finished_analysis(session, key.team_id, analysis_id)
    path = artifact_file(storage.root, analysis_id, REPORT_FILE)
    if path is None:
        raise NotFound(
            f"analysis {analysis_id} has no HTML report (it finished before reports "
            "were written, or drawing it failed); `bottlelens report` draws one "
            "from .../results"
        )
    return FileResponse(path, media_type="text/html; charset=utf-8")


@router.get("/{analysis_id}/necks", responses=errors(409))
def get_necks(analysis_id: str, key: ReadKey, session: SessionDep) -> NecksResult:
    """The seven answers per bottleneck, side by side (the result's ``necks``)."""
    section = store.get_section(session, key.team_id, analysis_id, "necks")
    if section is None:
        raise NotFound(
            f"analysis {analysis_id} has no necks section; run it with necks in metrics"
        )
    return NecksResult.model_validate(section)


@router.post("/{analysis_id}/cancel", responses=errors(409))
def cancel_analysis(
    analysis_id: str, key: SubmitKey, session: SessionDep, queue: QueueDep
) -> AnalysisPublic:
    """Cancel a queued or running analysis; the worker stops at its next heartbeat."""
    analysis = store.cancel_analysis(session, key.team_id, analysis_id)
    session.commit()
    queue.revoke(analysis.id)
    return analysis
