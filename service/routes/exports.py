"""``/v1/exports``: the reporting export, incremental and streamed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from service import exports, store
from service.routes.deps import ReadKey, SessionDep
from service.schemas_series import EXPORT_COLUMNS, ExportFormat

router = APIRouter(prefix="/exports", tags=["exports"])
Cursor = Annotated[
    str,
    Query(
        pattern="^[0-9]{1,18}$",
        description="The X-Next-Cursor of the previous export; 0 for the start.",
    ),
]
RowLimit = Annotated[
    int,
    Query(
        ge=1,
        le=1_000_000,
        description="Rows per page (whole analyses: a page "
        "holds at least one analysis, and stops before one that would pass it).",
    ),
]
_NEXT = {
    "X-Next-Cursor": {
        "description": "Pass as since= to read on.",
        "schema": {"type": "string"},
        "required": True,
    }
}
_ROW = {"type": "object", "properties": {c: {} for c in EXPORT_COLUMNS}}
_CONTENT = {
    "csv": {"type": "string"},
    "json": {
        "type": "object",
        "properties": {
            "next_cursor": {"type": "string"},
            "data": {"type": "array", "items": _ROW},
        },
        "required": ["next_cursor", "data"],
    },
    "parquet": {"type": "string", "format": "binary"},
}
_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The rows after the cursor; columns in docs/reporting.md.",
        "headers": _NEXT,
        "content": {
            exports.MEDIA_TYPES[f]: {"schema": schema} for f, schema in _CONTENT.items()
        },
    }
}


@router.get("/metrics", response_class=StreamingResponse, responses=_OK)
def export_metrics(
    request: Request,
    key: ReadKey,
    session: SessionDep,
    since: Cursor = "0",
    format: ExportFormat = "csv",
    limit: RowLimit = 100_000,
) -> StreamingResponse:
    """One row per (analysis, layer, metric, estimator) of the team, after ``since``."""
    if format == "parquet":
        exports.require_parquet()  # 422 with advice before anything streams
    start = store.parse_cursor(since)
    upto = store.export_page(session, key.team_id, since=start, limit=limit)
    batches = store.export_rows(
        request.app.state.engine, key.team_id, since=start, upto=upto
    )
    body = {
        "csv": lambda: exports.encode_csv(batches),
        "json": lambda: exports.encode_json(batches, str(upto)),
        "parquet": lambda: exports.encode_parquet(batches),
    }[format]()
    headers = {"X-Next-Cursor": str(upto)}
    return StreamingResponse(
        body, media_type=exports.MEDIA_TYPES[format], headers=headers
    )
