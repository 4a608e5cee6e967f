"""``bottlelens.client.Client`` on series, compare, the export and audits, against
the real app in-process (SQLite); and a client method for every route."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bottlelens.client import ApiError, Client
from service.schemas_audits import AuditCreate, IntervalSchedule, Rule
from service.settings import Settings
from tests.client.conftest import DIGITS_INFO, finish, model_and_dataset, ready
from tests.service.conftest import Team, safetensors_bytes


def _weights(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"step{n}.safetensors"
    path.write_bytes(safetensors_bytes(n))
    return path


def test_series_trajectory_compare_and_export(
    connect: Any,
    engine: Engine,
    team: Team,
    tmp_path: Path,
    server: TestClient,
    demo_result: dict,
) -> None:
    api = connect(team.keys["read,submit"])
    series = api.create_series("widths", "mlp", {"widths": [4, 2]})
    assert (series.name, series.checkpoints) == ("widths", 0)
    late = api.upload_checkpoint(series.id, _weights(tmp_path, 3), 10, epoch=2)
    early = api.upload_checkpoint(series.id, _weights(tmp_path, 2), 0, tag=8.0)
    assert (late.step, late.epoch, early.tag) == (10, 2, 8.0)
    assert [c.step for c in api.list_checkpoints(series.id).data] == [0, 10]
    assert api.get_series(series.id).checkpoints == 2
    assert [s.id for s in api.list_series().data] == [series.id]
    for checkpoint in (early, late):
        ready(engine, "model", checkpoint.model.id)
    dataset = api.create_dataset(spec="sklearn:digits")
    ready(engine, "dataset", dataset.id, **DIGITS_INFO)

    runs = api.analyse_series(series.id, dataset.id, {"metrics": ["id"]})
    assert [(r.step, r.reused) for r in runs.data] == [(0, False), (10, False)]
    again = api.analyse_series(series.id, dataset.id, {"metrics": ["id"]})
    assert all(r.reused for r in again.data)
    a, b = (r.analysis_id for r in runs.data)
    doubled = json.loads(json.dumps(demo_result))
    for layer in doubled["layers"]:
        for row in layer["metrics"]:
            if row["metric"] == "intrinsic_dimension" and row["value"] is not None:
                row["value"] *= 2
    finish(engine, a, demo_result)
    finish(engine, b, doubled)

    path = api.trajectory(
        series.id,
        metric="intrinsic_dimension",
        estimator="twonn",
        dataset_id=dataset.id,
    )
    fc2 = next(layer for layer in path.layers if layer.layer == "fc2")
    assert [p.step for p in fc2.points] == [0, 10]
    assert fc2.points[1].value == pytest.approx(2 * fc2.points[0].value)
    diff = api.compare(a, b)
    row = next(r for r in diff.rows if (r.layer, r.estimator) == ("fc2", "twonn"))
    assert row.difference == pytest.approx(row.a) and row.relative_change == 1.0

    with api.export(since="0") as page:
        rows = list(page)
        cursor = page.next_cursor
    assert {r["analysis_id"] for r in rows} == {a, b}
    n_rows = sum(len(layer["metrics"]) for layer in demo_result["layers"]) * 2
    assert len(rows) == n_rows and int(cursor) > 0
    twonn = [r for r in rows if (r["layer"], r["estimator"]) == ("fc2", "twonn")]
    assert sorted(float(r["value"]) for r in twonn) == pytest.approx([row.a, row.b])
    with api.export(since="0", format="json") as page:
        typed = list(page)
    assert len(typed) == n_rows and isinstance(typed[0]["index"], int)
    assert list(api.export(since=cursor)) == []
    raw = server.get(
        "/v1/exports/metrics", params={"since": "0"}, headers=team.headers("read")
    ).content
    out = io.BytesIO()
    assert api.export(since="0").save(out) == len(raw) and out.getvalue() == raw

    connect(team.keys["admin"]).delete_series(series.id)
    with pytest.raises(ApiError) as err:
        api.get_series(series.id)
    assert err.value.status == 404


def test_audits_from_creation_to_the_first_alert(
    connect: Any,
    engine: Engine,
    team: Team,
    tmp_path: Path,
    settings: Settings,
    demo_result: dict,
) -> None:
    from workers.scheduler import tick

    api = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(api, engine, tmp_path)
    rule = {
        "metric": "intrinsic_dimension",
        "estimator": "twonn",
        "layers": "bottlenecks",
        "operator": "relative_change",
        "threshold": 0.2,
    }
    audit = api.create_audit(
        AuditCreate(
            model=model,
            dataset_id=dataset,
            config={"metrics": ["id"]},
            schedule=IntervalSchedule(interval_s=60),
            rules=[Rule(**rule)],
        )
    )
    assert (audit.status, audit.baseline, audit.model_id) == (
        "active",
        "previous",
        model,
    )
    assert api.get_audit(audit.id) == audit
    assert [a.id for a in api.list_audits().data] == [audit.id]
    assert api.pause_audit(audit.id).status == "paused"
    assert api.resume_audit(audit.id).status == "active"

    queued: list[str] = []
    t0 = api.get_audit(audit.id).next_run_at
    changed = json.loads(json.dumps(demo_result))
    for layer in changed["layers"]:
        for row in layer["metrics"]:
            if layer["name"] == "fc2" and row["estimator"] == "twonn":
                row["value"] *= 1.5
    for minute, result in enumerate((demo_result, changed)):
        now = t0 + timedelta(minutes=minute, seconds=1)
        tick(now, settings=settings, send=lambda a, q: queued.append(a))
        finish(engine, queued[-1], result)
        tick(now, settings=settings, send=lambda a, q: queued.append(a))
    runs = api.audit_runs(audit.id)
    assert [r.status for r in runs.data] == ["pass", "alert"]
    fired = runs.data[1].fired
    assert [(f.layer, f.metric, f.estimator) for f in fired] == [
        ("fc2", "intrinsic_dimension", "twonn")
    ]
    assert fired[0].new_value == pytest.approx(1.5 * fired[0].baseline_value)
    alerts = api.audit_alerts(audit.id, since=runs.data[0].scheduled_for)
    assert [a.id for a in alerts.data] == [runs.data[1].id]
    assert api.audit_runs(audit.id, since=runs.data[1].scheduled_for).count == 0
    with pytest.raises(ValueError, match="time zone"):
        api.audit_runs(audit.id, since=datetime(2026, 1, 1))

    connect(team.keys["admin"]).delete_audit(audit.id)
    assert api.list_audits().count == 0


# Every operation of the API and the client method that calls it.
CLIENT_METHODS = {
    ("GET", "/v1/health"): "health",
    ("GET", "/v1/ready"): "ready",
    ("POST", "/v1/models"): "upload_model",
    ("GET", "/v1/models"): "list_models",
    ("GET", "/v1/models/{model_id}"): "get_model",
    ("DELETE", "/v1/models/{model_id}"): "delete_model",
    ("POST", "/v1/datasets"): "create_dataset",
    ("GET", "/v1/datasets"): "list_datasets",
    ("GET", "/v1/datasets/{dataset_id}"): "get_dataset",
    ("DELETE", "/v1/datasets/{dataset_id}"): "delete_dataset",
    ("POST", "/v1/analyses"): "submit_analysis",
    ("GET", "/v1/analyses"): "list_analyses",
    ("GET", "/v1/analyses/{analysis_id}"): "get_analysis",
    ("GET", "/v1/analyses/{analysis_id}/results"): "results",
    ("GET", "/v1/analyses/{analysis_id}/layers"): "layers",
    ("GET", "/v1/analyses/{analysis_id}/bottlenecks"): "bottlenecks",
    ("GET", "/v1/analyses/{analysis_id}/artifacts/{name}"): "download_artifact",
    ("GET", "/v1/analyses/{analysis_id}/report"): "download_report",
    ("GET", "/v1/analyses/{analysis_id}/necks"): "necks",
    ("POST", "/v1/analyses/{analysis_id}/cancel"): "cancel_analysis",
    ("POST", "/v1/series"): "create_series",
    ("GET", "/v1/series"): "list_series",
    ("GET", "/v1/series/{series_id}"): "get_series",
    ("DELETE", "/v1/series/{series_id}"): "delete_series",
    ("POST", "/v1/series/{series_id}/checkpoints"): "upload_checkpoint",
    ("GET", "/v1/series/{series_id}/checkpoints"): "list_checkpoints",
    ("POST", "/v1/series/{series_id}/analyses"): "analyse_series",
    ("GET", "/v1/series/{series_id}/trajectory"): "trajectory",
    ("GET", "/v1/compare"): "compare",
    ("GET", "/v1/exports/metrics"): "export",
    ("POST", "/v1/audits"): "create_audit",
    ("GET", "/v1/audits"): "list_audits",
    ("GET", "/v1/audits/{audit_id}"): "get_audit",
    ("DELETE", "/v1/audits/{audit_id}"): "delete_audit",
    ("POST", "/v1/audits/{audit_id}/pause"): "pause_audit",
    ("POST", "/v1/audits/{audit_id}/resume"): "resume_audit",
    ("GET", "/v1/audits/{audit_id}/runs"): "audit_runs",
    ("GET", "/v1/audits/{audit_id}/alerts"): "audit_alerts",
}


def test_every_route_has_a_client_method(server: TestClient) -> None:
    """A new route fails this test until the client (and this table) has it."""
    paths = server.get("/v1/openapi.json").json()["paths"]
    operations = {(m.upper(), p) for p, item in paths.items() for m in item}
    assert operations == set(CLIENT_METHODS)
    assert all(callable(getattr(Client, name)) for name in CLIENT_METHODS.values())
