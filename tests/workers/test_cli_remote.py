"""``bottlelens analyses|results|series|audits|compare|export`` through typer's
CliRunner, with the client on the real app in-process (SQLite)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

import workers.cli_remote
from bottlelens.client import Client
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
    other_team,
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

# The in-process app's fixtures (tests/client/conftest.py), used by name.
__all__ = [
    "client",
    "connect",
    "db_url",
    "demo_result",
    "engine",
    "other_team",
    "sent",
    "server",
    "settings",
    "sleeps",
    "sqlite_url",
    "team",
]
runner = CliRunner()


@pytest.fixture
def as_key(monkeypatch: pytest.MonkeyPatch, connect: Any) -> Any:
    """``as_key(key)``: every command from now on talks to the in-process app."""

    def use(key: str | None) -> None:
        monkeypatch.setattr(workers.cli_remote, "make_client", lambda: connect(key))

    return use


def bl(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_analyses_list_get_cancel(
    as_key: Any, connect: Any, engine: Engine, team: Team, tmp_path: Path
) -> None:
    api = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(api, engine, tmp_path)
    run = api.submit_analysis(model, dataset, {"samples": 100})
    as_key(team.keys["read,submit"])

    listed = bl("analyses", "list")
    assert listed.exit_code == 0, listed.output
    assert "1 analyses" in listed.stdout and run.id in listed.stdout
    as_json = json.loads(bl("analyses", "list", "--json").stdout)
    assert as_json == api.list_analyses().model_dump(mode="json")
    assert (
        json.loads(bl("analyses", "list", "--status", "failed", "--json").stdout)[
            "count"
        ]
        == 0
    )
    got = bl("analyses", "get", run.id)
    assert got.exit_code == 0 and "queued" in got.stdout and run.id in got.stdout
    assert json.loads(bl("analyses", "get", run.id, "--json").stdout)["id"] == run.id
    cancelled = bl("analyses", "cancel", run.id)
    assert cancelled.exit_code == 0
    assert cancelled.stdout.strip() == f"analysis {run.id} cancelled"


def test_results_get_writes_exactly_the_bytes_the_api_sends(
    as_key: Any,
    connect: Any,
    engine: Engine,
    team: Team,
    tmp_path: Path,
    server: TestClient,
    demo_result: dict,
) -> None:
    api = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(api, engine, tmp_path)
    run = api.submit_analysis(model, dataset)
    finish(engine, run.id, demo_result)
    raw = server.get(
        f"/v1/analyses/{run.id}/results", headers=team.headers("read")
    ).content
    as_key(team.keys["read"])

    out = tmp_path / "r.json"
    written = bl("results", "get", run.id, "--out", str(out))
    assert written.exit_code == 0, written.output
    assert out.read_bytes() == raw and len(raw) > 10_000
    assert f"{len(raw)} bytes" in written.stderr
    assert not list(tmp_path.glob("*.part"))
    printed = runner.invoke(app, ["results", "get", run.id])
    assert printed.stdout_bytes == raw


def test_errors_are_one_line_on_stderr_with_exit_2_or_1(
    as_key: Any, connect: Any, engine: Engine, team: Team, tmp_path: Path
) -> None:
    as_key(team.keys["read"])
    missing = bl("results", "get", "0" * 32, "--out", str(tmp_path / "r.json"))
    assert missing.exit_code == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: 404 not_found: ")
    assert missing.stderr.count("\n") == 1
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob("*.part"))

    api = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(api, engine, tmp_path)
    run = api.submit_analysis(model, dataset)
    unfinished = bl("results", "get", run.id)
    assert unfinished.exit_code == 2 and "409" in unfinished.stderr
    forbidden = bl("analyses", "cancel", run.id)  # a read key cannot cancel
    assert forbidden.exit_code == 2 and "403 forbidden" in forbidden.stderr
    nowhere = bl("results", "get", run.id, "--out", str(tmp_path / "no" / "r.json"))
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.stderr
    bad = bl("series", "create", "s", "--arch", "mlp", "--arch-config", "[1]")
    assert bad.exit_code == 2 and "must be a JSON object" in bad.stderr


def _offline(monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
    def make() -> Client:
        transport = httpx.MockTransport(handler)
        return Client("http://lens.test", "k", transport=transport, retries=0)

    monkeypatch.setattr(workers.cli_remote, "make_client", make)


def test_server_and_connection_errors_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    _offline(monkeypatch, refuse)
    down = bl("analyses", "list")
    assert down.exit_code == 1
    assert down.stderr == (
        "error: unreachable: GET http://lens.test/v1/analyses?limit=50&offset=0: "
        "connection refused\n"
    )
    body = {"code": "internal", "message": "internal error; see the log"}
    _offline(monkeypatch, lambda request: httpx.Response(500, json=body))
    broken = bl("audits", "list")
    assert broken.exit_code == 1
    assert broken.stderr == "error: 500 internal: internal error; see the log\n"


def test_the_environment_configures_the_real_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOTTLELENS_URL", "http://127.0.0.1:9")  # discard: refused
    monkeypatch.setenv("BOTTLELENS_API_KEY", "k")
    api = workers.cli_remote.make_client()
    assert api.url == "http://127.0.0.1:9"
    assert api._http.headers["Authorization"] == "Bearer k"
    api.close()


def test_series_create_upload_analyse_trajectory_compare_export(
    as_key: Any,
    engine: Engine,
    team: Team,
    tmp_path: Path,
    server: TestClient,
    demo_result: dict,
) -> None:
    as_key(team.keys["read,submit"])
    created = bl("series", "create", "run", "--arch", "mlp", "--json")
    assert created.exit_code == 0, created.output
    series = json.loads(created.stdout)["id"]
    models = []
    for step in (0, 100):
        weights = tmp_path / f"s{step}.safetensors"
        weights.write_bytes(safetensors_bytes(2 + step))
        up = bl("series", "upload", series, str(weights), "--step", str(step), "--json")
        assert up.exit_code == 0, up.output
        models.append(json.loads(up.stdout)["model"]["id"])
        ready(engine, "model", models[-1])
    listed = bl("series", "list")
    assert "1 series" in listed.stdout and series in listed.stdout
    dataset = server.post(
        "/v1/datasets", headers=team.headers(), data={"spec": "sklearn:digits"}
    ).json()["id"]
    ready(engine, "dataset", dataset, **DIGITS_INFO)
    fanned = bl("series", "analyse", series, "--dataset", dataset, "--json")
    assert fanned.exit_code == 0, fanned.output
    a, b = (r["analysis_id"] for r in json.loads(fanned.stdout)["data"])
    reused = bl("series", "analyse", series, "--dataset", dataset)
    assert "2 analyses" in reused.stdout and reused.stdout.count("True") == 2
    finish(engine, a, demo_result)
    finish(engine, b, demo_result)

    path = bl(
        "series", "trajectory", series, "--metric", "intrinsic_dimension",
        "--estimator", "twonn", "--dataset", dataset,
    )  # fmt: skip
    assert path.exit_code == 0, path.output
    assert "step 0" in path.stdout and "step 100" in path.stdout
    assert path.stdout.index("step 0") < path.stdout.index("step 100")
    same = bl("compare", a, b, "--json")
    assert same.exit_code == 0, same.output
    rows = json.loads(same.stdout)["rows"]
    assert rows and all(r["difference"] in (0.0, None) for r in rows)
    table = bl("compare", a, b)
    assert "bottlenecks added: -" in table.stdout

    out = tmp_path / "rows.csv"
    first = bl("export", "--since", "0", "--format", "csv", "--out", str(out))
    assert first.exit_code == 0, first.output
    raw = server.get(
        "/v1/exports/metrics", params={"since": "0"}, headers=team.headers("read")
    )
    assert out.read_bytes() == raw.content
    cursor = raw.headers["X-Next-Cursor"]
    assert first.stderr == f"next cursor: {cursor}\n"
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["analysis_id"] for r in rows} == {a, b}
    later = bl("export", "--since", cursor)
    assert later.exit_code == 0 and later.stderr == f"next cursor: {cursor}\n"
    assert len(later.stdout.splitlines()) == 1  # the header only
    bad = bl("export", "--format", "xml")
    assert bad.exit_code == 2


def test_audits_create_list_runs_pause_resume(
    as_key: Any,
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
    as_key(team.keys["read,submit"])
    rule = "intrinsic_dimension:twonn:bottlenecks:relative_change:0.2"
    probe = "probe_accuracy:logistic_regression:fc*:below:0.05:no-overlap"
    created = bl(
        "audits", "create", "--model", model, "--dataset", dataset, "--every", "60",
        "--rule", rule, "--rule", probe,
        "--config", '{"metrics": ["id", "probe"]}', "--json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    audit = api.get_audit(json.loads(created.stdout)["id"])
    assert [r.model_dump() for r in audit.rules] == [
        {
            "metric": "intrinsic_dimension",
            "estimator": "twonn",
            "layers": "bottlenecks",
            "operator": "relative_change",
            "threshold": 0.2,
            "require_no_overlap": False,
        },
        {
            "metric": "probe_accuracy",
            "estimator": "logistic_regression",
            "layers": "fc*",
            "operator": "below",
            "threshold": 0.05,
            "require_no_overlap": True,
        },
    ]
    assert audit.config["metrics"] == ["id", "probe"]
    assert audit.schedule.interval_s == 60 and audit.baseline == "previous"
    assert audit.id in bl("audits", "list").stdout
    paused = bl("audits", "pause", audit.id)
    assert paused.stdout.strip() == f"audit {audit.id} paused"
    assert bl("audits", "resume", audit.id).stdout.strip() == f"audit {audit.id} active"

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
    runs = bl("audits", "runs", audit.id)
    assert runs.exit_code == 0, runs.output
    assert "2 runs" in runs.stdout and "pass" in runs.stdout
    assert "alert " in runs.stdout and "fc2 intrinsic_dimension (twonn)" in runs.stdout
    since = json.loads(bl("audits", "runs", audit.id, "--json").stdout)["data"][0]
    later = bl("audits", "runs", audit.id, "--since", since["scheduled_for"], "--json")
    assert [r["status"] for r in json.loads(later.stdout)["data"]] == ["alert"]

    neither = bl("audits", "create", "--dataset", dataset, "--rule", rule)
    assert neither.exit_code == 2 and "exactly one of --model and --series" in (
        neither.stderr
    )
    both = bl("audits", "create", "--model", model, "--dataset", dataset,
              "--every", "60", "--cron", "0 3 * * *", "--rule", rule)  # fmt: skip
    assert both.exit_code == 2 and "exactly one of --cron and --every" in both.stderr
    nightly = bl("audits", "create", "--model", model, "--dataset", dataset,
                 "--cron", "0 3 * * *", "--rule", rule, "--json")  # fmt: skip
    assert nightly.exit_code == 0, nightly.output
    assert json.loads(nightly.stdout)["schedule"] == {"cron": "0 3 * * *"}
    bad_rule = bl("audits", "create", "--model", model, "--dataset", dataset,
                  "--every", "60", "--rule", "intrinsic_dimension:twonn")  # fmt: skip
    assert bad_rule.exit_code == 2 and "METRIC:ESTIMATOR" in bad_rule.stderr
    too_often = bl("audits", "create", "--model", model, "--dataset", dataset,
                   "--every", "5", "--rule", rule)  # fmt: skip
    assert too_often.exit_code == 2 and "422 invalid_input" in too_often.stderr
