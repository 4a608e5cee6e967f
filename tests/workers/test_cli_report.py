"""``bottlelens report --series`` and ``--audit --run`` through typer's CliRunner,
the client on the real app in-process (SQLite; results saved as a worker would)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

import workers.cli_remote
from service.settings import Settings
from tests.client.conftest import (
    DIGITS_INFO,
    client,
    connect,
    db_url,
    demo_result,
    engine,
    finish,
    model_and_dataset,
    ready,
    sent,
    server,
    settings,
    sleeps,
    sqlite_url,
    team,
)
from tests.service.conftest import Team, safetensors_bytes
from workers.cli import app

__all__ = [
    "client",
    "connect",
    "db_url",
    "demo_result",
    "engine",
    "sent",
    "server",
    "settings",
    "sleeps",
    "sqlite_url",
    "team",
]
runner = CliRunner()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, connect: Any, team: Team) -> Any:
    key = team.keys["read,submit"]
    monkeypatch.setattr(workers.cli_remote, "make_client", lambda: connect(key))
    return connect(key)


def test_report_series_writes_the_page_of_its_checkpoints(
    api: Any, engine: Engine, tmp_path: Path, demo_result: dict
) -> None:
    series = api.create_series("necks", "mlp", {"widths": [4, 2]})
    for step, tag in ((0, 2.0), (100, 8.0)):
        weights = tmp_path / f"s{step}.safetensors"
        weights.write_bytes(safetensors_bytes(2 + step))
        cp = api.upload_checkpoint(series.id, weights, step, tag=tag)
        ready(engine, "model", cp.model.id)
    dataset = api.create_dataset(spec="sklearn:digits")
    ready(engine, "dataset", dataset.id, **DIGITS_INFO)
    runs = api.analyse_series(series.id, dataset.id, {"metrics": ["id", "mi"]})
    for r in runs.data:
        finish(engine, r.analysis_id, demo_result)
    out = tmp_path / "series.html"
    done = runner.invoke(app, ["report", "--series", series.id, "-o", str(out)])
    assert done.exit_code == 0, done.output
    html = out.read_text()
    assert 'data-figure="intrinsic_dimension-twonn"' in html
    assert 'data-figure="plane"' in html and "tag 8" in html
    for r in runs.data:
        assert f'id="analysis-{r.analysis_id}"' in html
    neither = runner.invoke(app, ["report", "-o", str(out)])
    assert neither.exit_code == 2 and "exactly one of RESULT" in neither.stderr


def test_report_audit_run_writes_what_fired(
    api: Any,
    engine: Engine,
    tmp_path: Path,
    settings: Settings,
    demo_result: dict,
) -> None:
    from workers.scheduler import tick

    model, dataset = model_and_dataset(api, engine, tmp_path)
    rule = {
        "metric": "intrinsic_dimension",
        "estimator": "twonn",
        "layers": "fc*",
        "operator": "relative_change",
        "threshold": 0.2,
    }
    audit = api.create_audit(
        {
            "model": model,
            "dataset_id": dataset,
            "schedule": {"interval_s": 60},
            "rules": [rule],
            "config": {"metrics": ["id"]},
        }
    )
    changed = json.loads(json.dumps(demo_result))
    for layer in changed["layers"]:
        for row in layer["metrics"]:
            if layer["name"] == "fc2" and row["estimator"] == "twonn":
                row["value"] *= 1.5
    queued: list[str] = []
    t0 = api.get_audit(audit.id).next_run_at
    for minute, result in enumerate((demo_result, changed)):
        now = t0 + timedelta(minutes=minute, seconds=1)
        tick(now, settings=settings, send=lambda a, q: queued.append(a))
        finish(engine, queued[-1], result)
        tick(now, settings=settings, send=lambda a, q: queued.append(a))
    run = api.audit_runs(audit.id).data[-1]
    assert run.status == "alert"
    out = tmp_path / "run.html"
    args = ["report", "--audit", audit.id, "--run", run.id, "-o", str(out)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    html = out.read_text()
    assert 'data-figure="fired-0"' in html and ">fc2<" in html
    assert "without intervals" not in html  # both result documents were read
    missing = runner.invoke(app, [*args[:4], "f" * 32, "-o", str(out)])
    assert missing.exit_code == 2 and "has no run" in missing.stderr
