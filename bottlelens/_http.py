"""The HTTP side of the client: one error class, the bounded retries, streaming."""

from __future__ import annotations

import email.utils
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

URL_ENV = "BOTTLELENS_URL"
KEY_ENV = "BOTTLELENS_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"  # `bottlelens serve`
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
CHUNK = 64 * 1024

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An error answer of the API (``{code, message, problems}``), or no answer.

    ``status`` is the HTTP status, or ``None`` when the service could not be
    reached (``code`` is then ``unreachable``).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = list(problems)

    def __str__(self) -> str:
        head = f"{self.status} {self.code}" if self.status else self.code
        return " ".join(f"{head}: {self.message}".split())  # always one line

    def __repr__(self) -> str:
        return (
            f"ApiError({self.status!r}, {self.code!r}, {self.message!r}, "
            f"{self.problems!r})"
        )

    @property
    def is_client_error(self) -> bool:
        """A 4xx: the request must change before it can succeed."""
        return self.status is not None and 400 <= self.status < 500

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            problems = body.get("problems")
            return cls(
                response.status_code,
                str(body.get("code") or "error"),
                body["message"],
                [str(p) for p in problems] if isinstance(problems, list) else [],
            )
        text = response.text[:300] or response.reason_phrase
        return cls(response.status_code, f"http_{response.status_code}", text)


class Http:
    """An httpx client on the service's URL with the API key, the retries and the
    error mapping; ``Client`` adds one method per route."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        max_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        api_key = api_key or os.environ.get(KEY_ENV)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.retries, self.max_wait_s, self._sleep = retries, max_wait_s, sleep
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._send(method, path, **kwargs).content)

    def _download(self, path: str, out: IO[bytes], **kwargs: Any) -> int:
        size = 0
        response = self._send("GET", path, stream=True, **kwargs)
        try:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                size += len(chunk)
        finally:
            response.close()
        return size

    def _send(
        self,
        method: str,
        path: str,
        *,
        stream: bool = False,
        wait_busy: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request with the bounded retries; an error answer raises."""
        attempt = 0
        while True:
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < self.retries and _may_resend(method, exc):
                    attempt += 1
                    self._sleep(min(0.5 * 2 ** (attempt - 1), self.max_wait_s))
                    continue
                reason = str(exc) or type(exc).__name__
                raise ApiError(
                    None, "unreachable", f"{method} {request.url}: {reason}"
                ) from exc
            busy = wait_busy and response.status_code == 503
            wait = _retry_after(response) if busy else None
            if wait is not None and attempt < self.retries:
                response.close()
                attempt += 1
                self._sleep(min(wait, self.max_wait_s))
                continue
            if response.is_error:
                response.read()
                response.close()
                raise ApiError.from_response(response)
            return response


def _may_resend(method: str, exc: httpx.TransportError) -> bool:
    # A request that never left can always be sent again; one that may have
    # reached the server only when sending it twice does no harm.
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or (
        method in _IDEMPOTENT
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``Retry-After`` (a number or an HTTP date); None without one."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def seg(value: str) -> str:
    """One path segment: ``/``, ``?``, ``#`` escaped, so a value cannot leave it."""
    return urllib.parse.quote(value, safe="")


def params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def file_field(path: str | Path, f: IO[bytes]) -> dict[str, Any]:
    return {"file": (Path(path).name, f, "application/octet-stream")}
