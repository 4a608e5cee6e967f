"""Domain errors of the service. Every message says what the caller should change.

``service/main.py`` maps each class to one HTTP status in one table; the store and
the routes only raise.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class; ``code`` is the stable machine-readable name sent to clients."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

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

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ServiceError):
    """The database or the task queue cannot be reached."""

    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "10"}
