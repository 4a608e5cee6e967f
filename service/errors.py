"""Domain errors of the service. Every message says what the caller should change.

``service/main.py`` maps each class to one HTTP status in one table; the store and
the routes only raise. Every error response has the body ``ErrorBody``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str = Field(description="Stable machine-readable name of the error.")
    message: str = Field(description="What went wrong and what to change.")
    problems: list[str] = Field(
        default_factory=list,
        description="Every problem found, one per entry (422: each invalid field).",
    )


class ServiceError(Exception):
    """Base class; ``code`` is the stable machine-readable name sent to clients.

    ``problems`` lists every problem found, one string each, so that a client can
    fix them all at once; ``message`` should summarise them.
    """

    code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, problems=self.problems)

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ServiceError):
    """A parameter, form field, file or config that cannot be used as it is."""

    code = "invalid_input"


class UnsafeUpload(InvalidInput):
    """A file that would need code execution to load (pickle, TorchScript)."""

    code = "unsafe_file"


class TooLarge(ServiceError):
    """An upload or form field over the team's size cap."""

    code = "too_large"


class Unauthenticated(ServiceError):
    """No API key, an unknown one or a revoked one."""

    code = "unauthenticated"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """The API key lacks the scope the route needs."""

    code = "forbidden"


class NotFound(ServiceError):
    """Missing, or owned by another team (the two are not told apart)."""

    code = "not_found"


class Conflict(ServiceError):
    """The object is in the wrong state for the request (not ready, finished)."""

    code = "conflict"


class QueueFull(ServiceError):
    """The team has as many queued analyses as its limit allows."""

    code = "queue_full"

    def __init__(
        self, message: str, *, retry_after_s: int, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message, problems=problems)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class InsufficientStorage(ServiceError):
    """The disk that holds the uploads is full."""

    code = "insufficient_storage"


class Unavailable(ServiceError):
    """The database or the task queue cannot be reached."""

    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "10"}
