"""A typed client for the bottlelens REST API (httpx, synchronous).

``Client(url, api_key)`` has one method per route (a test checks it against the
OpenAPI document). Answers are the API's own pydantic models, from
``service.schemas``, ``service.schemas_series``, ``service.schemas_audits`` and
``contract.necks``: those modules import only pydantic and ``contract``, so
importing this one loads no FastAPI, SQLAlchemy or torch (a test says so). A
result document is a plain ``dict``, as ``GET .../results`` sends it; files
(results, maps, the report, an export page) can be streamed as sent. Every error
answer raises one ``ApiError(status, code, message, problems)``.

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

import json
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bottlelens._export import Export
from bottlelens._http import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    KEY_ENV,
    URL_ENV,
    ApiError,
    Http,
    file_field,
    params,
    seg,
)
from contract.necks import NecksResult
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
from service.schemas_audits import (
    AlertsPublic,
    AuditCreate,
    AuditPublic,
    AuditRunsPublic,
    AuditsPublic,
)
from service.schemas_series import (
    CheckpointPublic,
    CheckpointsPublic,
    ComparisonPublic,
    ExportFormat,
    Order,
    SeriesAnalysesPublic,
    SeriesListPublic,
    SeriesPublic,
    TrajectoryPublic,
)

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "KEY_ENV",
    "TERMINAL",
    "URL_ENV",
    "ApiError",
    "Client",
    "Export",
]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Client(Http):
    """The bottlelens REST API. ``url`` and ``api_key`` default to the environment
    variables ``BOTTLELENS_URL`` (else ``http://127.0.0.1:8000``) and
    ``BOTTLELENS_API_KEY``; ``transport`` replaces httpx's network transport (tests
    pass an in-process one); ``sleep`` is what waits between retries."""

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
                ModelPublic,
                "POST",
                "/v1/models",
                files=file_field(path, f),
                data=fields,
            )

    def list_models(self, *, limit: int = 50, offset: int = 0) -> ModelsPublic:
        """``GET /v1/models``: newest first, with the total count."""
        query = {"limit": limit, "offset": offset}
        return self._model(ModelsPublic, "GET", "/v1/models", params=query)

    def get_model(self, model_id: str) -> ModelPublic:
        return self._model(ModelPublic, "GET", f"/v1/models/{seg(model_id)}")

    def delete_model(self, model_id: str) -> None:
        """``DELETE /v1/models/{id}`` (admin scope)."""
        self._send("DELETE", f"/v1/models/{seg(model_id)}")

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
                DatasetPublic, "POST", "/v1/datasets", files=file_field(path, f)
            )

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> DatasetsPublic:
        query = {"limit": limit, "offset": offset}
        return self._model(DatasetsPublic, "GET", "/v1/datasets", params=query)

    def get_dataset(self, dataset_id: str) -> DatasetPublic:
        return self._model(DatasetPublic, "GET", f"/v1/datasets/{seg(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        """``DELETE /v1/datasets/{id}`` (admin scope)."""
        self._send("DELETE", f"/v1/datasets/{seg(dataset_id)}")

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
        query = params(
            model_id=model_id,
            dataset_id=dataset_id,
            status=status,
            limit=limit,
            offset=offset,
        )
        return self._model(AnalysesPublic, "GET", "/v1/analyses", params=query)

    def get_analysis(self, analysis_id: str) -> AnalysisPublic:
        return self._model(AnalysisPublic, "GET", f"/v1/analyses/{seg(analysis_id)}")

    def cancel_analysis(self, analysis_id: str) -> AnalysisPublic:
        """``POST /v1/analyses/{id}/cancel``: 409 once it has finished."""
        path = f"/v1/analyses/{seg(analysis_id)}/cancel"
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
        body: dict[str, Any] = self._send("GET", self._results(analysis_id)).json()
        return body

    def download_results(self, analysis_id: str, out: IO[bytes]) -> int:
        """Stream the result document's bytes, as sent, into ``out``; its size."""
        return self._download(self._results(analysis_id), out)

    def layers(self, analysis_id: str) -> LayersPublic:
        path = f"/v1/analyses/{seg(analysis_id)}/layers"
        return self._model(LayersPublic, "GET", path)

    def bottlenecks(self, analysis_id: str) -> BottlenecksPublic:
        path = f"/v1/analyses/{seg(analysis_id)}/bottlenecks"
        return self._model(BottlenecksPublic, "GET", path)

    def necks(self, analysis_id: str) -> NecksResult:
        """``GET /v1/analyses/{id}/necks``: the answers per bottleneck (404 when
        the analysis did not run the ``necks`` family)."""
        path = f"/v1/analyses/{seg(analysis_id)}/necks"
        return self._model(NecksResult, "GET", path)

    def download_artifact(self, analysis_id: str, name: str, out: IO[bytes]) -> int:
        """Stream one attribution map (``.png``/``.npy``) into ``out``; its size."""
        path = f"/v1/analyses/{seg(analysis_id)}/artifacts/{seg(name)}"
        return self._download(path, out)

    def download_report(self, analysis_id: str, out: IO[bytes]) -> int:
        """Stream the analysis's HTML report into ``out``; its size."""
        return self._download(f"/v1/analyses/{seg(analysis_id)}/report", out)

    @staticmethod
    def _results(analysis_id: str) -> str:
        return f"/v1/analyses/{seg(analysis_id)}/results"

    # --- series and compare ---------------------------------------------------

    def create_series(
        self,
        name: str,
        architecture: str,
        architecture_config: Mapping[str, Any] | None = None,
    ) -> SeriesPublic:
        """``POST /v1/series``: checkpoints of one architecture and config."""
        body = {
            "name": name,
            "architecture": architecture,
            "architecture_config": dict(architecture_config or {}),
        }
        return self._model(SeriesPublic, "POST", "/v1/series", json=body)

    def list_series(self, *, limit: int = 50, offset: int = 0) -> SeriesListPublic:
        query = {"limit": limit, "offset": offset}
        return self._model(SeriesListPublic, "GET", "/v1/series", params=query)

    def get_series(self, series_id: str) -> SeriesPublic:
        return self._model(SeriesPublic, "GET", f"/v1/series/{seg(series_id)}")

    def delete_series(self, series_id: str) -> None:
        """``DELETE /v1/series/{id}`` (admin scope; the checkpoints stay)."""
        self._send("DELETE", f"/v1/series/{seg(series_id)}")

    def upload_checkpoint(
        self,
        series_id: str,
        path: str | Path,
        step: int,
        *,
        epoch: int | None = None,
        tag: float | None = None,
    ) -> CheckpointPublic:
        """``POST /v1/series/{id}/checkpoints``: stream weights in at ``step``."""
        fields = {k: str(v) for k, v in params(step=step, epoch=epoch, tag=tag).items()}
        url = f"/v1/series/{seg(series_id)}/checkpoints"
        with Path(path).open("rb") as f:
            return self._model(
                CheckpointPublic, "POST", url, files=file_field(path, f), data=fields
            )

    def list_checkpoints(
        self, series_id: str, *, order: Order = "step"
    ) -> CheckpointsPublic:
        path = f"/v1/series/{seg(series_id)}/checkpoints"
        return self._model(CheckpointsPublic, "GET", path, params={"order": order})

    def analyse_series(
        self,
        series_id: str,
        dataset_id: str,
        config: Mapping[str, Any] | None = None,
    ) -> SeriesAnalysesPublic:
        """``POST /v1/series/{id}/analyses``: one analysis per checkpoint; those
        already run with this dataset and config are reused (``reused``)."""
        body = {"dataset_id": dataset_id, "config": dict(config or {})}
        path = f"/v1/series/{seg(series_id)}/analyses"
        return self._model(SeriesAnalysesPublic, "POST", path, json=body)

    def trajectory(
        self,
        series_id: str,
        *,
        metric: str,
        estimator: str,
        dataset_id: str,
        order: Order = "step",
    ) -> TrajectoryPublic:
        """``GET /v1/series/{id}/trajectory``: each layer's metric over the
        checkpoints, and each layer's path in the information plane."""
        query = {
            "metric": metric,
            "estimator": estimator,
            "dataset_id": dataset_id,
            "order": order,
        }
        path = f"/v1/series/{seg(series_id)}/trajectory"
        return self._model(TrajectoryPublic, "GET", path, params=query)

    def compare(self, a: str, b: str) -> ComparisonPublic:
        """``GET /v1/compare``: per layer and metric, b - a; 422 names a mismatch."""
        query = {"a": a, "b": b}
        return self._model(ComparisonPublic, "GET", "/v1/compare", params=query)

    # --- the reporting export -------------------------------------------------

    def export(
        self,
        *,
        since: str = "0",
        format: ExportFormat = "csv",
        limit: int | None = None,
    ) -> Export:
        """``GET /v1/exports/metrics``: one page of rows after the cursor ``since``
        (``"0"``: from the start). Iterate it for the rows; its ``next_cursor`` is
        the ``since`` of the next page (equal to ``since`` when nothing was new).

        >>> with api.export(since=cursor) as page:  # doctest: +SKIP
        ...     rows = list(page)
        ...     cursor = page.next_cursor
        """
        query = params(since=since, format=format, limit=limit)
        response = self._send("GET", "/v1/exports/metrics", stream=True, params=query)
        return Export(response, format)

    # --- audits ---------------------------------------------------------------

    def create_audit(self, audit: AuditCreate | Mapping[str, Any]) -> AuditPublic:
        """``POST /v1/audits``: model (or a series' latest checkpoint), dataset,
        config, schedule, baseline, rules and an optional webhook."""
        if isinstance(audit, AuditCreate):
            body = audit.model_dump(mode="json", exclude_none=True)
        else:
            body = dict(audit)
        return self._model(AuditPublic, "POST", "/v1/audits", json=body)

    def list_audits(self, *, limit: int = 50, offset: int = 0) -> AuditsPublic:
        query = {"limit": limit, "offset": offset}
        return self._model(AuditsPublic, "GET", "/v1/audits", params=query)

    def get_audit(self, audit_id: str) -> AuditPublic:
        return self._model(AuditPublic, "GET", f"/v1/audits/{seg(audit_id)}")

    def delete_audit(self, audit_id: str) -> None:
        """``DELETE /v1/audits/{id}`` with its runs and alerts (admin scope)."""
        self._send("DELETE", f"/v1/audits/{seg(audit_id)}")

    def pause_audit(self, audit_id: str) -> AuditPublic:
        path = f"/v1/audits/{seg(audit_id)}/pause"
        return self._model(AuditPublic, "POST", path)

    def resume_audit(self, audit_id: str) -> AuditPublic:
        path = f"/v1/audits/{seg(audit_id)}/resume"
        return self._model(AuditPublic, "POST", path)

    def audit_runs(
        self, audit_id: str, *, since: datetime | None = None, limit: int = 50
    ) -> AuditRunsPublic:
        """``GET /v1/audits/{id}/runs``: oldest first, scheduled after ``since``."""
        query = params(since=_instant(since), limit=limit)
        path = f"/v1/audits/{seg(audit_id)}/runs"
        return self._model(AuditRunsPublic, "GET", path, params=query)

    def audit_alerts(
        self, audit_id: str, *, since: datetime | None = None, limit: int = 50
    ) -> AlertsPublic:
        """``GET /v1/audits/{id}/alerts``: runs that alerted, with deliveries."""
        query = params(since=_instant(since), limit=limit)
        path = f"/v1/audits/{seg(audit_id)}/alerts"
        return self._model(AlertsPublic, "GET", path, params=query)


def _instant(when: datetime | None) -> str | None:
    if when is not None and when.tzinfo is None:
        raise ValueError("since needs a time zone, e.g. datetime.now(UTC)")
    return None if when is None else when.isoformat()
