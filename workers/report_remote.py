"""The series and audit-run reports of ``bottlelens report``, fetched through
``bottlelens.client`` and drawn here by ``analysis.reporting`` (the service never
draws: it does not import the library)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bottlelens.client import ApiError

if TYPE_CHECKING:
    from bottlelens.client import Client
    from service.schemas_series import Order

PAGE = 200  # the API's largest page


def series_page(api: Client, series_id: str, dataset_id: str | None = None) -> str:
    """The series report: the series, its checkpoints (by tag when every one has
    a tag, else by step) and a trajectory per estimator its analyses ran, on
    ``dataset_id`` (default: the dataset of the newest succeeded analysis)."""
    from analysis.reporting import render_series_html, series_trajectories

    series = api.get_series(series_id)
    checkpoints = api.list_checkpoints(series_id).data
    tagged = bool(checkpoints) and all(c.tag is not None for c in checkpoints)
    order: Order = "tag" if tagged else "step"
    if order == "tag":
        checkpoints = api.list_checkpoints(series_id, order="tag").data
    analyses = [
        a
        for cp in checkpoints
        for a in api.list_analyses(
            model_id=cp.model.id, status="succeeded", limit=PAGE
        ).data
    ]
    if dataset_id is None:
        if not analyses:
            raise ValueError(
                f"no checkpoint of series {series_id} has a succeeded analysis; "
                "run `bottlelens series analyse` first"
            )
        newest = max(analyses, key=lambda a: (a.finished_at, a.created_at))
        dataset_id = newest.dataset_id
    pairs = series_trajectories(
        a.config for a in analyses if a.dataset_id == dataset_id
    )
    trajectories = [
        api.trajectory(
            series_id,
            metric=metric,
            estimator=estimator,
            dataset_id=str(dataset_id),
            order=order,
        ).model_dump(mode="json")
        for metric, estimator in pairs
    ]
    return render_series_html(
        series.model_dump(mode="json"),
        [c.model_dump(mode="json") for c in checkpoints],
        trajectories,
    )


def audit_page(api: Client, audit_id: str, run_id: str) -> str:
    """The report of one run of an audit, with the result documents of its
    analysis and of its baseline when both can be read."""
    from analysis.reporting import render_audit_html

    audit = api.get_audit(audit_id)
    run = _find_run(api, audit_id, run_id)
    if run["status"] == "alert":  # the alert adds the webhook's delivery
        since = _before(run["scheduled_for"])
        alerts = api.audit_alerts(audit_id, since=since, limit=1).data
        if alerts and alerts[0].id == run_id:
            run = alerts[0].model_dump(mode="json")
    finished = run["status"] in ("pass", "alert")
    return render_audit_html(
        audit.model_dump(mode="json"),
        run,
        _result(api, run["analysis_id"]) if finished else None,
        _result(api, run["baseline_analysis_id"]) if finished else None,
    )


def _find_run(api: Client, audit_id: str, run_id: str) -> dict[str, Any]:
    since = None
    while True:
        page = api.audit_runs(audit_id, since=since, limit=PAGE).data
        for run in page:
            if run.id == run_id:
                return run.model_dump(mode="json")
        if len(page) < PAGE:
            raise ValueError(f"audit {audit_id} has no run {run_id}")
        since = page[-1].scheduled_for


def _before(instant: str) -> datetime:
    return datetime.fromisoformat(instant) - timedelta(microseconds=1)


def _result(api: Client, analysis_id: str | None) -> dict[str, Any] | None:
    if analysis_id is None:
        return None
    try:
        return api.results(analysis_id)
    except ApiError as exc:
        if exc.is_client_error:  # gone or not finished: drawn without it
            return None
        raise
