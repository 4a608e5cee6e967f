"""The error responses of the OpenAPI document, written once for every route.

FastAPI documents the 2xx of each route and a 422 with its own validation schema.
``document_errors`` rewrites the generated document so that every operation lists
each error status it can answer, all with the ``ErrorBody`` schema and the headers
that come with them. What follows from a route's shape is derived here (a key: 401
and 403; a path parameter: 404; a body: 413 and 422; the database: 503); what only
the route knows (409, 429, 507) it declares with ``responses=errors(...)``.
"""

from __future__ import annotations

from typing import Any

from service.errors import ErrorBody

ERROR_SCHEMA_REF = "#/components/schemas/ErrorBody"
# Operations that touch neither the database nor the broker (no 503).
NO_IO_PATHS = frozenset({"/v1/health"})

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
        "required": True,
    }
}
# status -> (description, headers sent with it)
ERROR_STATUSES: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "No API key, or an unknown or revoked one.",
        {
            "WWW-Authenticate": {
                "description": "The scheme to authenticate with: Bearer.",
                "schema": {"type": "string"},
                "required": True,
            }
        },
    ),
    403: ("The API key lacks the scope this route needs.", {}),
    404: ("No such object in the caller's team.", {}),
    409: ("The object is in the wrong state for this request.", {}),
    413: ("The body or the upload is over the size limit.", {}),
    422: ("The request is invalid; `problems` lists every problem found.", {}),
    429: (
        "The team is at a limit (queued analyses, audits, audit runs a day).",
        _RETRY_AFTER,
    ),
    503: ("The database or the task broker cannot be reached.", _RETRY_AFTER),
    507: ("The server has no room left to store the upload.", {}),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the error statuses only a route knows it can answer."""
    return {
        s: {"model": ErrorBody, "description": ERROR_STATUSES[s][0]} for s in statuses
    }


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the derived error statuses to every operation and give each error
    response the ``ErrorBody`` schema and its headers; returns ``schema``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status in sorted(_derived(path, operation)):
                responses.setdefault(str(status), {})
            for status, response in responses.items():
                if status.isdigit() and int(status) in ERROR_STATUSES:
                    _error_response(int(status), response)
            operation["responses"] = dict(sorted(responses.items()))
    return schema


def _derived(path: str, operation: dict[str, Any]) -> set[int]:
    statuses: set[int] = set()
    if operation.get("security"):
        statuses |= {401, 403}
    params = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 422}
    if params:
        statuses.add(422)
    if path not in NO_IO_PATHS:
        statuses.add(503)
    return statuses


def _error_response(status: int, response: dict[str, Any]) -> None:
    description, headers = ERROR_STATUSES[status]
    response["description"] = description
    response["content"] = {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}
    if headers:
        response["headers"] = dict(headers)
