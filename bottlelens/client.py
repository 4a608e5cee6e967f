"""A typed client for the bottlelens REST API (httpx, synchronous).

``Client(url, api_key)`` has one method per route. Answers are the API's own
pydantic models from ``service.schemas`` (they import only pydantic and
``contract``: importing this module loads no FastAPI, SQLAlchemy or torch, and a
test says so); a result document is a plain ``dict``, as ``GET .../results`` sends
it. Every error answer raises one ``ApiError(status, code, message, problems)``.

Retries: none on a 4xx. A request that could not be sent (connection refused,
connect timeout) is retried, and so is an idempotent one (GET, DELETE) that lost
its connection; a 503 with ``Retry-After`` is retried after that wait (at most
``max_wait_s``); both at most ``retries`` times. Uploads stream the file from disk
(httpx reads it in 64 KiB chunks, and seeks back to its start for a retry).

Example::

    from bottlelens import Client

    with Client() as api:  # BOTTLELENS_URL, BOTTLELENS_API_KEY
        model = api.upload_model("model.safetensors", "mlp", {"widths": [64, 8, 64]})
        data = api.create_dataset(spec="sklearn:digits")
        run = api.submit_analysis(model.id, data.id, {"metrics": ["id"]})
        result = api.results(api.wait(run.id).id)
"""

from __future__ import annotations

import email.utils
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from pydantic import BaseModel

from service.schemas import (
    AnalysesPublic,
    AnalysisPublic,
    AnalysisStatus,
    BottlenecksPublic,
    DatasetPublic,
    DatasetsPublic,
    Health,
    LayersPublic,
    ModelPublic,
    ModelsPublic,
    Readiness,
)

URL_ENV = "BOTTLELENS_URL"
KEY_ENV = "BOTTLELENS_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"  # `bottlelens serve`
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_CHUNK = 64 * 1024

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


class Client:
    """The bottlelens REST API. ``url`` and ``api_key`` default to the environment
    variables ``BOTTLELENS_URL`` (else ``http://127.0.0.1:8000``) and
    ``BOTTLELENS_API_KEY``; ``transport`` replaces httpx's network transport (tests
    pass an in-process one); ``sleep`` is what waits between retries."""

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

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- system -------------------------------------------------------------

    def health(self) -> Health:
        """``GET /v1/health``: the API process is up."""
        return self._model(Health, "GET", "/v1/health")

    def ready(self) -> Readiness:
        """``GET /v1/ready``; ``ApiError`` 503 ``not_ready`` names what is missing
        (at once: not ready is the answer, not a reason to wait)."""
        return self._model(Readiness, "GET", "/v1/ready", wait_busy=False)

    # --- models and datasets ------------------------------------------------

    def upload_model(
        self,
        path: str | Path,
        architecture: str,
        architecture_config: Mapping[str, Any] | None = None,
    ) -> ModelPublic:
        """``POST /v1/models``: stream a weights file; validated later by a worker."""
        fields = {
            "architecture": architecture,
            "architecture_config": json.dumps(dict(architecture_config or {})),
        }
        with Path(path).open("rb") as f:
            return self._model(
                ModelPublic, "POST", "/v1/models", files=_file(path, f), data=fields
            )

    def list_models(self, *, limit: int = 50, offset: int = 0) -> ModelsPublic:
        """``GET /v1/models``: newest first, with the total count."""
        params = {"limit": limit, "offset": offset}
        return self._model(ModelsPublic, "GET", "/v1/models", params=params)

    def get_model(self, model_id: str) -> ModelPublic:
        return self._model(ModelPublic, "GET", f"/v1/models/{_seg(model_id)}")

    def delete_model(self, model_id: str) -> None:
        """``DELETE /v1/models/{id}`` (admin scope)."""
        self._call("DELETE", f"/v1/models/{_seg(model_id)}")

    def create_dataset(
        self, path: str | Path | None = None, *, spec: str | None = None
    ) -> DatasetPublic:
        """``POST /v1/datasets``: stream a file, or name a built-in ``spec``."""
        if (path is None) == (spec is None):
            raise ValueError("give exactly one of path and spec")
        if spec is not None:
            return self._model(
                DatasetPublic, "POST", "/v1/datasets", data={"spec": spec}
            )
        assert path is not None
        with Path(path).open("rb") as f:
            return self._model(
                DatasetPublic, "POST", "/v1/datasets", files=_file(path, f)
            )

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> DatasetsPublic:
        params = {"limit": limit, "offset": offset}
        return self._model(DatasetsPublic, "GET", "/v1/datasets", params=params)

    def get_dataset(self, dataset_id: str) -> DatasetPublic:
        return self._model(DatasetPublic, "GET", f"/v1/datasets/{_seg(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        """``DELETE /v1/datasets/{id}`` (admin scope)."""
        self._call("DELETE", f"/v1/datasets/{_seg(dataset_id)}")

    # --- analyses -----------------------------------------------------------

    def submit_analysis(
        self,
        model_id: str,
        dataset_id: str,
        config: Mapping[str, Any] | None = None,
    ) -> AnalysisPublic:
        """``POST /v1/analyses``: queued (202) with the config completed."""
        body = {"model_id": model_id, "dataset_id": dataset_id, "config": config or {}}
        return self._model(AnalysisPublic, "POST", "/v1/analyses", json=body)

    def list_analyses(
        self,
        *,
        model_id: str | None = None,
        dataset_id: str | None = None,
        status: AnalysisStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> AnalysesPublic:
        """``GET /v1/analyses``: newest first, filtered, with the total count."""
        params = _params(
            model_id=model_id,
            dataset_id=dataset_id,
            status=status,
            limit=limit,
            offset=offset,
        )
        return self._model(AnalysesPublic, "GET", "/v1/analyses", params=params)

    def get_analysis(self, analysis_id: str) -> AnalysisPublic:
        return self._model(AnalysisPublic, "GET", f"/v1/analyses/{_seg(analysis_id)}")

    def cancel_analysis(self, analysis_id: str) -> AnalysisPublic:
        """``POST /v1/analyses/{id}/cancel``: 409 once it has finished."""
        path = f"/v1/analyses/{_seg(analysis_id)}/cancel"
        return self._model(AnalysisPublic, "POST", path)

    def wait(
        self, analysis_id: str, *, timeout_s: float = 3600.0, poll_s: float = 2.0
    ) -> AnalysisPublic:
        """Poll until the analysis has finished (any end); ``TimeoutError`` else."""
        deadline = time.monotonic() + timeout_s
        while True:
            analysis = self.get_analysis(analysis_id)
            if analysis.status in TERMINAL:
                return analysis
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"analysis {analysis_id} is still {analysis.status} after "
                    f"{timeout_s:g} s"
                )
            self._sleep(poll_s)

    def results(self, analysis_id: str) -> dict[str, Any]:
        """``GET /v1/analyses/{id}/results``: the result document."""
        body: dict[str, Any] = self._call("GET", self._results(analysis_id)).json()
        return body

    def download_results(self, analysis_id: str, out: IO[bytes]) -> int:
        """Stream the result document's bytes, as sent, into ``out``; its size."""
        return self._download(self._results(analysis_id), out)

    def layers(self, analysis_id: str) -> LayersPublic:
        path = f"/v1/analyses/{_seg(analysis_id)}/layers"
        return self._model(LayersPublic, "GET", path)

    def bottlenecks(self, analysis_id: str) -> BottlenecksPublic:
        path = f"/v1/analyses/{_seg(analysis_id)}/bottlenecks"
        return self._model(BottlenecksPublic, "GET", path)

    def download_artifact(self, analysis_id: str, name: str, out: IO[bytes]) -> int:
        """Stream one attribution map (``.png``/``.npy``) into ``out``; its size."""
        path = f"/v1/analyses/{_seg(analysis_id)}/artifacts/{_seg(name)}"
        return self._download(path, out)

    # --- plumbing -----------------------------------------------------------

    @staticmethod
    def _results(analysis_id: str) -> str:
        return f"/v1/analyses/{_seg(analysis_id)}/results"

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._call(method, path, **kwargs).content)

    def _download(self, path: str, out: IO[bytes], **kwargs: Any) -> int:
        size = 0
        with self._stream("GET", path, **kwargs) as response:
            for chunk in response.iter_bytes(_CHUNK):
                out.write(chunk)
                size += len(chunk)
        return size

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, stream=False, **kwargs)
        return response

    def _stream(self, method: str, path: str, **kwargs: Any) -> _Streamed:
        return _Streamed(self._send(method, path, stream=True, **kwargs))

    def _send(
        self,
        method: str,
        path: str,
        *,
        stream: bool,
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


class _Streamed:
    """A streamed response that is closed on leaving ``with``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *exc: object) -> None:
        self.response.close()


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


def _seg(value: str) -> str:
    """One path segment: ``/``, ``?``, ``#`` escaped, so a value cannot leave it."""
    return urllib.parse.quote(value, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _file(path: str | Path, f: IO[bytes]) -> dict[str, Any]:
    return {"file": (Path(path).name, f, "application/octet-stream")}
