"""Audits end to end with real workers: SQLite with the embedded broker, and
PostgreSQL with Redis. The test drives the scheduler tick with its own clock; the
workers run the analyses and end the runs when they save the results.

Two audits side by side: one on the latest checkpoint of a series, whose weights
change between the runs (a second checkpoint, freshly initialised), alerts with
exactly the layers whose TwoNN moved; one on a fixed model passes (same weights,
same seed: the values are equal).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from service.settings import Settings
from tests.workers.conftest import MLP_CONFIG, Inputs, Stack
from workers.scheduler import tick

pytestmark = pytest.mark.slow
CONFIG = {
    "samples": 300,
    "seed": 1,
    "layers": "all",
    "device": "cpu",
    "metrics": ["id"],
    "id": {"methods": ["twonn"]},
}
THRESHOLD = 1e-6
RULE = {
    "metric": "intrinsic_dimension",
    "estimator": "twonn",
    "layers": "*",
    "operator": "abs_change",
    "threshold": THRESHOLD,
}


def _fresh_weights(tmp: Path) -> Path:
    """The same architecture, initialised from another seed (not trained)."""
    from analysis import build_model

    torch.manual_seed(123)
    model = build_model("mlp", MLP_CONFIG)
    path = tmp / "fresh.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _checkpoint(stack: Stack, series_id: str, path: Path, step: int) -> str:
    with path.open("rb") as f:
        r = stack.http.post(
            f"/v1/series/{series_id}/checkpoints",
            headers=stack.headers,
            files={"file": (path.name, f, "application/octet-stream")},
            data={"step": str(step)},
        )
    assert r.status_code == 201, r.text
    model_id = str(r.json()["model"]["id"])
    stack.wait_ready("models", model_id)
    return model_id


def _audit(stack: Stack, model: Any, dataset_id: str) -> dict[str, Any]:
    body = {
        "name": "e2e",
        "model": model,
        "dataset_id": dataset_id,
        "config": CONFIG,
        "schedule": {"interval_s": 60},
        "baseline": "previous",
        "rules": [RULE],
    }
    r = stack.http.post("/v1/audits", headers=stack.headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _twonn(stack: Stack, analysis_id: str) -> dict[str, float]:
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    return {
        layer["name"]: m["value"]
        for layer in result["layers"]
        for m in layer["metrics"]
        if (m["metric"], m["estimator"]) == ("intrinsic_dimension", "twonn")
        and m["value"] is not None
    }


def _runs(stack: Stack, audit_id: str, n: int) -> list[dict[str, Any]]:
    """The audit's runs once ``n`` of them have ended."""
    done = ("pass", "alert", "error")
    body = stack.wait_for(
        f"/v1/audits/{audit_id}/runs",
        lambda b: sum(r["status"] in done for r in b["data"]) >= n,
        timeout_s=180,
    )
    return body["data"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("db", "broker"), [("sqlite", "sqlite"), ("postgres", "redis")]
)
def test_changed_weights_alert_and_unchanged_ones_pass(
    make_stack: Any, inputs: Inputs, tmp_path: Path, db: str, broker: str
) -> None:
    stack = make_stack(db=db, broker=broker)
    stack.start_worker()
    dataset_id = stack.upload_dataset(inputs.data)
    model_id = stack.upload_model(inputs.weights)
    stack.wait_ready("datasets", dataset_id)
    stack.wait_ready("models", model_id)
    r = stack.http.post(
        "/v1/series",
        headers=stack.headers,
        json={"name": "mlp", "architecture": "mlp", "architecture_config": MLP_CONFIG},
    )
    assert r.status_code == 201, r.text
    series_id = r.json()["id"]
    _checkpoint(stack, series_id, inputs.weights, step=1)
    changing = _audit(stack, {"series_id": series_id}, dataset_id)
    steady = _audit(stack, model_id, dataset_id)
    t0 = min(
        stack.get(f"/v1/audits/{a['id']}")["next_run_at"] for a in (changing, steady)
    )
    t0_time = datetime.fromisoformat(t0)
    settings = Settings()
    send = stack.http.app.state.queue.run_analysis  # type: ignore[attr-defined]

    first = tick(t0_time + timedelta(seconds=1), settings=settings, send=send)
    assert len(first.inserted) == len(first.started) == 2
    for audit in (changing, steady):
        (run,) = _runs(stack, audit["id"], 1)
        assert run["status"] == "pass", run  # nothing to compare with yet

    _checkpoint(stack, series_id, _fresh_weights(tmp_path), step=2)
    second = tick(t0_time + timedelta(seconds=61), settings=settings, send=send)
    assert len(second.inserted) == 2
    old, new = _runs(stack, changing["id"], 2)
    assert new["status"] == "alert", new
    assert new["baseline_analysis_id"] == old["analysis_id"]
    before, after = _twonn(stack, old["analysis_id"]), _twonn(stack, new["analysis_id"])
    moved = {
        name
        for name in after
        if name in before and abs(after[name] - before[name]) > THRESHOLD
    }
    alert_id = new["id"]
    assert moved and {row["layer"] for row in new["fired"]} == moved
    for row in new["fired"]:
        assert row["baseline_value"] == pytest.approx(before[row["layer"]], rel=1e-12)
        assert row["new_value"] == pytest.approx(after[row["layer"]], rel=1e-12)
        assert row["threshold"] == THRESHOLD and row["operator"] == "abs_change"

    old, new = _runs(stack, steady["id"], 2)
    assert new["status"] == "pass" and new["fired"] == [], json.dumps(new)
    assert _twonn(stack, old["analysis_id"]) == _twonn(stack, new["analysis_id"])
    alerts = stack.get(f"/v1/audits/{changing['id']}/alerts")
    assert [a["id"] for a in alerts["data"]] == [alert_id]
