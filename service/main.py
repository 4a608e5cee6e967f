"""The FastAPI app: ``create_app(settings)`` and the one error -> HTTP table.

Run it with ``uvicorn --factory service.main:create_app``. Every error is JSON
``{"code", "message", "problems"}`` (``ErrorBody``); invalid client input, a body
that is not UTF-8 JSON included, is 422, never 400 or 500.
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, QueuePool
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import get_engine
from service.docs import add_docs
from service.errors import (
    Conflict,
    ErrorBody,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    QueueFull,
    ServiceError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from service.openapi import NO_IO_PATHS, document_errors
from service.queue import TaskQueue
from service.routes import api_router
from service.settings import Settings, get_settings
from service.storage import Storage

log = logging.getLogger(__name__)

# The one table from domain errors to HTTP (subclasses follow their base).
HTTP_STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 422,
    TooLarge: 413,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QueueFull: 429,
    Unavailable: 503,
    InsufficientStorage: 507,
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
JSON_BODY_MAX = 1024 * 1024  # a request other than an upload is small


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app; ``settings`` default to the environment (``BOTTLELENS_*``)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="bottlelens",
        summary="What happens to information inside a network, layer by layer.",
        version="0.1.0",
        openapi_url="/v1/openapi.json",
        docs_url=None,  # service.docs: Swagger UI from the package, not a CDN
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = get_engine(
        settings.database_url, settings.sqlite_busy_timeout_ms
    )
    app.state.storage = Storage(
        settings.storage_dir,
        max_archive_bytes=settings.max_archive_bytes,
        max_compression_ratio=settings.max_compression_ratio,
    )
    app.state.queue = TaskQueue(
        settings.broker_url, timeout_s=settings.broker_timeout_s
    )
    app.include_router(api_router)
    add_docs(app, app.openapi_url or "")
    app.add_middleware(BodyCap, max_bytes=JSON_BODY_MAX)
    app.add_middleware(DatabaseSlots, slots=pool_capacity(app.state.engine))
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(OSError, _os_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The sync routes' threads: more than the database pool lends connections only
    # wait, and every busy thread takes turns at the GIL with the event loop, which
    # answers /v1/health.
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = app.state.settings.api_threads
    yield


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document with every error status of every route (cached)."""
    if app.openapi_schema is None:
        app.openapi_schema = document_errors(FastAPI.openapi(app))
    return app.openapi_schema


def status_of(exc: ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def _error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    problems: list[str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, problems=problems or [])
    return JSONResponse(body.model_dump(), status, headers=headers)


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return _service_error_response(exc)


async def _validation_error(
    _request: Request, exc: RequestValidationError
) -> JSONResponse:
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        + (f" ({e['ctx']['error']})" if e.get("type") == "json_invalid" else "")
        for e in exc.errors()
    ]
    message = "; ".join(problems) or "invalid request"
    return _error(422, "invalid_input", message, problems=problems)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400:
        # FastAPI's only 400: a JSON body it could not decode (not UTF-8, too deep).
        problem = "body: not a JSON document in UTF-8"
        return _error(422, "invalid_input", problem, problems=[problem])
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return _error(exc.status_code, code, str(exc.detail), headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of the routes at this path (Starlette names only the first
    route's, though a path such as ``/v1/models`` has one route per method): the
    documented operations of the path, and the methods of the app's own routes."""
    path = request.url.path
    methods: set[str] = {
        method.upper()
        for pattern, item in _path_patterns(request.app)
        if pattern.fullmatch(path)
        for method in item
    }
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] in (
            Match.FULL,
            Match.PARTIAL,
        ):
            methods |= route.methods
    return sorted(methods)


def _path_patterns(app: FastAPI) -> list[tuple[re.Pattern[str], dict[str, Any]]]:
    patterns: list[tuple[re.Pattern[str], dict[str, Any]]] | None = getattr(
        app.state, "path_patterns", None
    )
    if patterns is None:
        patterns = [
            (re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path))), item)
            for path, item in app.openapi()["paths"].items()
        ]
        app.state.path_patterns = patterns
    return patterns


async def _database_error(_request: Request, exc: OperationalError) -> JSONResponse:
    log.error("database error: %s", exc)
    return _error(
        503,
        "database_unavailable",
        "the database cannot be reached or is busy; try again shortly",
        {"Retry-After": "10"},
    )


async def _os_error(request: Request, exc: OSError) -> JSONResponse:
    if exc.errno in _NO_ROOM:
        log.error("no room left to store: %s", exc)
        full = InsufficientStorage(
            "the server has no room left to store this; try again later or ask "
            "the operator to free space"
        )
        return _service_error_response(full)
    return await _internal_error(request, exc)


async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return _error(500, "internal", "internal error; the server log has the details")


class BodyCap:
    """Caps every body but multipart uploads (which the storage caps as they stream),
    so that a JSON body cannot fill the memory; the 413 is an ``ErrorBody``.

    Such bodies are small: read up to the cap here, then replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(
            b"multipart/form-data"
        ):
            await self.app(scope, receive, send)
            return
        too_large = TooLarge(f"the request body is over {self.max_bytes} bytes")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _service_error_response(too_large)(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _service_error_response(too_large)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def pool_capacity(engine: Engine) -> int:
    """Connections the engine's pool lends at most (QueuePool: size + overflow)."""
    pool = engine.pool
    size = pool.size() if isinstance(pool, QueuePool) else 5
    return size + max(0, getattr(pool, "_max_overflow", 10))


class DatabaseSlots:
    """Admits at most as many requests as the database pool has connections.

    A sync route holds its session's connection until its response is serialised,
    which takes a worker thread; with more requests than connections, every thread
    could be waiting for a connection held by a request that waits for a thread: a
    deadlock until the pool times out. Requests beyond the cap wait here, on the
    event loop, holding nothing. ``/v1/health`` (no I/O) and uploads (which stream
    for long before they touch the database) are not counted.
    """

    def __init__(self, app: ASGIApp, slots: int) -> None:
        self.app, self.slots = app, slots
        self._semaphore: anyio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in NO_IO_PATHS
            or dict(scope["headers"])
            .get(b"content-type", b"")
            .startswith(b"multipart/form-data")
        ):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # made in the event loop that serves
            self._semaphore = anyio.Semaphore(self.slots)
        async with self._semaphore:
            await self.app(scope, receive, send)


def _service_error_response(exc: ServiceError) -> JSONResponse:
    return _error(
        status_of(exc), exc.code, exc.message, exc.headers(), problems=exc.problems
    )
