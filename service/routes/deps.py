"""Dependencies of the routes: the session, the caller's API key with a scope, the
settings, the upload storage and the task queue (fastapi full-stack template style).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service import auth, store
from service.db import session_scope
from service.errors import Unauthenticated, Unavailable
from service.queue import TaskQueue
from service.settings import Settings
from service.storage import Storage

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(_engine(request)) as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.queue
    return queue


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Principal:
    """The caller's key, looked up in its own short transaction (so that a route's
    session starts with the route's own first statement)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("send an API key: Authorization: Bearer <key>")
    with session_scope(_engine(request)) as session:
        record = store.api_key_for_token(session, credentials.credentials)
    if record is None:
        raise Unauthenticated("unknown API key; check it or create one")
    if record.revoked:
        raise Unauthenticated("this API key was revoked; create a new one")
    settings = get_settings(request)
    return auth.Principal(
        key_id=record.key_id,
        team_id=record.team_id,
        scopes=frozenset(record.scopes),
        max_upload_bytes=record.team_max_upload_bytes or settings.max_upload_bytes,
        max_queued_analyses=record.team_max_queued_analyses
        or settings.max_queued_analyses,
    )


def _scoped(scope: str) -> Callable[[auth.Principal], auth.Principal]:
    def dependency(
        key: Annotated[auth.Principal, Depends(authenticate)],
    ) -> auth.Principal:
        key.require(scope)
        return key

    return dependency


# "function" scope: the session commits before the response is sent, so a client
# that reads right after a write sees it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadKey = Annotated[auth.Principal, Depends(_scoped("read"))]
SubmitKey = Annotated[auth.Principal, Depends(_scoped("submit"))]
AdminKey = Annotated[auth.Principal, Depends(_scoped("admin"))]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip.")]
IdFilter = Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")]


def enqueue_validation(
    session: Session,
    storage: Storage,
    queue: TaskQueue,
    kind: Literal["model", "dataset"],
    team_id: str,
    object_id: str,
) -> None:
    """Commit the new upload, then enqueue its validation; when the broker is down,
    undo it (row and unreferenced file) so that a retry starts clean."""
    session.commit()
    try:
        queue.validate_upload(kind, object_id)
    except Unavailable:
        remove_upload(session, storage, kind, team_id, object_id)
        raise


def remove_upload(
    session: Session,
    storage: Storage,
    kind: Literal["model", "dataset"],
    team_id: str,
    object_id: str,
) -> None:
    """Delete the row and commit, then the file if no other row refers to it."""
    unreferenced = store.delete_upload(session, kind, team_id, object_id)
    session.commit()
    if unreferenced:
        storage.remove(unreferenced)


def form_body(
    fields: dict[str, dict[str, Any]],
    required: list[str],
    one_of: list[str] | None = None,
) -> dict[str, Any]:
    """OpenAPI text for a form that a route streams itself instead of declaring:
    ``required`` fields, and exactly one of ``one_of``; no other field."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": fields,
        "required": required,
        "additionalProperties": False,
    }
    if one_of:
        schema["oneOf"] = [{"required": [name]} for name in one_of]
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }
