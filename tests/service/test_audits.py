"""Audits through the API and the scheduler tick, with an injected clock, on SQLite
and PostgreSQL: one run per scheduled time, catch-up, rules, errors and limits.

An analysis "finishes" here as a worker would finish it (``claim_analysis`` +
``save_results`` with the demo result, its values scaled for a changed model).
"""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from service import store
from service.audit_rules import Rows, Value, evaluate
from service.db import session_scope
from service.models import AuditRow, AuditRunRow
from service.settings import Settings
from tests.service.conftest import Team, ready_model_and_dataset
from workers.scheduler import tick

MINUTE = timedelta(minutes=1)
RULES = [
    {
        "metric": "intrinsic_dimension",
        "estimator": "twonn",
        "layers": "bottlenecks",
        "operator": "relative_change",
        "threshold": 0.2,
    },
    {
        "metric": "probe_accuracy",
        "estimator": "logistic_regression",
        "layers": "fc*",
        "operator": "below",
        "threshold": 0.05,
    },
]


def audit_body(model: str, dataset: str, **over: Any) -> dict[str, Any]:
    body = {
        "name": "nightly",
        "model": model,
        "dataset_id": dataset,
        "config": {"metrics": ["id", "probe"]},
        "schedule": {"interval_s": 60},
        "rules": RULES,
    }
    return body | over


@pytest.fixture
def inputs(client: TestClient, engine: Engine, team: Team) -> tuple[str, str]:
    return ready_model_and_dataset(client, engine, team)


def create(client: TestClient, team: Team, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/audits", headers=team.headers(), json=body)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/audits/{r.json()['id']}"
    return r.json()


def anchor_of(engine: Engine, audit_id: str) -> datetime:
    with session_scope(engine) as s:
        return s.get(AuditRow, audit_id).anchor_at  # type: ignore[union-attr]


def runs(engine: Engine, audit_id: str) -> list[AuditRunRow]:
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(AuditRunRow)
                .where(AuditRunRow.audit_id == audit_id)
                .order_by(AuditRunRow.scheduled_for)
            )
        )


def scaled(result: dict[str, Any], layer: str, metric: str, factor: float) -> dict:
    out = copy.deepcopy(result)
    for record in out["layers"]:
        for row in record["metrics"]:
            if record["name"] == layer and row["metric"] == metric:
                for key in ("value", "ci_low", "ci_high"):
                    if row[key] is not None:
                        row[key] *= factor
    return out


def finish(engine: Engine, analysis_id: str, result: dict[str, Any]) -> None:
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis_id, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", result)


def test_create_read_pause_resume_delete(
    client: TestClient, engine: Engine, team: Team, inputs: tuple[str, str]
) -> None:
    audit = create(client, team, audit_body(*inputs))
    assert audit["status"] == "active" and audit["baseline"] == "previous"
    assert audit["config"]["samples"] == 1000  # stored complete, with the defaults
    # An interval counts from the creation time: the first run is due at once.
    next_run = datetime.fromisoformat(audit["next_run_at"])
    assert next_run == anchor_of(engine, audit["id"])
    h = team.headers("read")
    assert client.get(f"/v1/audits/{audit['id']}", headers=h).json() == audit
    listed = client.get("/v1/audits", headers=h).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == audit["id"]
    r = client.post(f"/v1/audits/{audit['id']}/pause", headers=team.headers("submit"))
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = client.post(f"/v1/audits/{audit['id']}/resume", headers=team.headers("submit"))
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = client.delete(f"/v1/audits/{audit['id']}", headers=team.headers("admin"))
    assert r.status_code == 204
    assert client.get(f"/v1/audits/{audit['id']}", headers=h).status_code == 404


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"schedule": {"cron": "* * * *"}}, "5 fields"),
        ({"schedule": {"interval_s": 59}}, "at least 60"),
        ({"schedule": {"cron": "* * * * *", "interval_s": 60}}, "schedule"),
        ({"rules": []}, "rules"),
        ({"rules": [{**RULES[0], "metric": "accuracy"}]}, "metric"),
        ({"rules": [{**RULES[0], "operator": "grows"}]}, "operator"),
        ({"config": {"samples": -1}}, "samples"),
    ],
)
def test_invalid_audits_are_422_naming_the_problem(
    client: TestClient,
    team: Team,
    inputs: tuple[str, str],
    over: dict[str, Any],
    words: str,
) -> None:
    r = client.post(
        "/v1/audits", headers=team.headers(), json=audit_body(*inputs, **over)
    )
    assert r.status_code == 422, r.text
    assert words in r.text
    assert client.get("/v1/audits", headers=team.headers()).json()["count"] == 0


def test_another_teams_model_is_404(
    client: TestClient, engine: Engine, team: Team, other_team: Team
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, other_team)
    r = client.post(
        "/v1/audits", headers=team.headers(), json=audit_body(model, dataset)
    )
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_the_team_limit_on_audits_is_429(
    client: TestClient, team: Team, inputs: tuple[str, str], settings: Settings
) -> None:
    client.app.state.settings = settings.model_copy(update={"max_audits_per_team": 2})  # type: ignore[attr-defined]
    for _ in range(2):
        create(client, team, audit_body(*inputs))
    r = client.post("/v1/audits", headers=team.headers(), json=audit_body(*inputs))
    assert r.status_code == 429 and r.json()["code"] == "audit_limit"
    assert int(r.headers["Retry-After"]) > 0


def test_a_changed_model_alerts_with_the_rows_that_fired(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
    sent: list[dict[str, Any]],
    demo_result: dict[str, Any],
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    queued: list[str] = []

    def send(analysis_id: str, queue: str) -> None:
        queued.append(analysis_id)

    # First run: nothing to compare with (baseline "previous"), so it passes.
    first = tick(t0 + timedelta(seconds=5), settings=settings, send=send)
    assert len(first.inserted) == len(first.started) == len(queued) == 1
    finish(engine, queued[0], demo_result)
    assert tick(t0 + timedelta(seconds=6), settings=settings, send=send).finished == {
        first.inserted[0]: "pass"
    }
    # Second run: the same values pass.
    tick(t0 + MINUTE, settings=settings, send=send)
    finish(engine, queued[1], demo_result)
    tick(t0 + MINUTE, settings=settings, send=send)
    # Third: TwoNN at the bottleneck (fc2) 1.5x, probe accuracy of fc1 tiny.
    changed = scaled(demo_result, "fc2", "intrinsic_dimension", 1.5)
    changed = scaled(changed, "fc1", "probe_accuracy", 0.01)
    tick(t0 + 2 * MINUTE, settings=settings, send=send)
    finish(engine, queued[2], changed)
    tick(t0 + 2 * MINUTE + timedelta(seconds=1), settings=settings, send=send)
    body = client.get(f"/v1/audits/{audit['id']}/runs", headers=team.headers()).json()
    assert [r["status"] for r in body["data"]] == ["pass", "pass", "alert"]
    assert body["data"][2]["baseline_analysis_id"] == queued[1]
    fired = body["data"][2]["fired"]
    base = {
        (layer["name"], m["metric"], m["estimator"]): m
        for layer in demo_result["layers"]
        for m in layer["metrics"]
    }
    twonn = base[("fc2", "intrinsic_dimension", "twonn")]
    probe = base[("fc1", "probe_accuracy", "logistic_regression")]
    assert fired == [
        {
            "rule": 0,
            "layer": "fc2",
            "metric": "intrinsic_dimension",
            "estimator": "twonn",
            "operator": "relative_change",
            "baseline_value": pytest.approx(twonn["value"]),
            "new_value": pytest.approx(1.5 * twonn["value"]),
            "threshold": 0.2,
            "change": pytest.approx(0.5 * twonn["value"]),
            "intervals_overlap": fired[0]["intervals_overlap"],
        },
        {
            "rule": 1,
            "layer": "fc1",
            "metric": "probe_accuracy",
            "estimator": "logistic_regression",
            "operator": "below",
            "baseline_value": pytest.approx(probe["value"]),
            "new_value": pytest.approx(0.01 * probe["value"]),
            "threshold": 0.05,
            "change": None,
            "intervals_overlap": fired[1]["intervals_overlap"],
        },
    ]
    alerts = client.get(f"/v1/audits/{audit['id']}/alerts", headers=team.headers())
    assert [a["id"] for a in alerts.json()["data"]] == [body["data"][2]["id"]]
    assert alerts.json()["data"][0]["delivery"] is None  # no webhook
    since = body["data"][1]["scheduled_for"]
    later = client.get(
        f"/v1/audits/{audit['id']}/runs",
        params={"since": since},
        headers=team.headers(),
    ).json()
    assert [r["id"] for r in later["data"]] == [body["data"][2]["id"]]


def test_two_schedulers_and_a_jumping_clock_make_one_run_per_period(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    settings = settings.model_copy(update={"max_queued_analyses": 10})
    sent_ids: list[str] = []
    lock = threading.Lock()

    def send(analysis_id: str, queue: str) -> None:
        with lock:
            sent_ids.append(analysis_id)

    def ticks_at_once(now: datetime) -> None:
        threads = [
            threading.Thread(
                target=tick, args=(now,), kwargs={"settings": settings, "send": send}
            )
            for _ in range(2)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)

    ticks_at_once(t0 + timedelta(seconds=1))  # period 0
    ticks_at_once(t0 + timedelta(seconds=30))  # still period 0
    ticks_at_once(t0 + MINUTE)  # period 1
    # Down for 10 periods: one catch-up run, for the latest one (t0 + 11 min).
    ticks_at_once(t0 + 11 * MINUTE + timedelta(seconds=20))
    # The clock jumps back 8 minutes, then forward again: nothing new.
    ticks_at_once(t0 + 3 * MINUTE)
    ticks_at_once(t0 + 11 * MINUTE + timedelta(seconds=50))
    ticks_at_once(t0 + 12 * MINUTE)  # period 12
    slots = [r.scheduled_for for r in runs(engine, audit["id"])]
    assert slots == [t0, t0 + MINUTE, t0 + 11 * MINUTE, t0 + 12 * MINUTE]
    assert len(sent_ids) == len(set(sent_ids)) == 4  # one analysis each


def test_a_stale_scheduler_loses_the_insert_quietly(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    assert len(tick(t0, settings=settings, send=lambda *a: None).inserted) == 1
    with session_scope(engine) as s:  # as if it had read the audit before that tick
        s.get(AuditRow, audit["id"]).next_run_at = t0  # type: ignore[union-attr]
    with session_scope(engine) as s:
        assert store.claim_due_audit_runs(s, now=t0, max_runs_per_day=100) == []
    assert len(runs(engine, audit["id"])) == 1


def test_paused_audits_make_no_run_and_resume_without_catch_up(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    client.post(f"/v1/audits/{audit['id']}/pause", headers=team.headers())
    assert tick(t0 + 5 * MINUTE, settings=settings, send=lambda *a: None).inserted == []
    with session_scope(engine) as s:
        store.resume_audit(
            s, team.id, audit["id"], settings=settings, now=t0 + 5 * MINUTE
        )
    assert tick(t0 + 5 * MINUTE, settings=settings, send=lambda *a: None).inserted == []
    tick(t0 + 6 * MINUTE, settings=settings, send=lambda *a: None)
    assert [r.scheduled_for for r in runs(engine, audit["id"])] == [t0 + 6 * MINUTE]


def test_a_deleted_model_ends_the_run_in_error(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    r = client.delete(f"/v1/models/{inputs[0]}", headers=team.headers("admin"))
    assert r.status_code == 204
    report = tick(t0, settings=settings, send=lambda *a: None)
    assert report.started == []
    (run,) = client.get(
        f"/v1/audits/{audit['id']}/runs", headers=team.headers()
    ).json()["data"]
    assert run["status"] == "error" and run["error"]["code"] == "input_deleted"
    assert "model was deleted" in run["error"]["message"]


def test_a_failed_analysis_ends_the_run_in_error(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    queued: list[str] = []
    tick(t0, settings=settings, send=lambda a, q: queued.append(a))
    with session_scope(engine) as s:
        store.fail_analysis(s, queued[0], code="out_of_memory", message="too big")
    assert tick(t0, settings=settings, send=lambda *a: None).finished
    (run,) = runs(engine, audit["id"])
    assert run.status == "error" and run.error_code == "analysis_failed"
    assert "out_of_memory too big" in (run.error_message or "")


def test_runs_over_the_daily_limit_are_skipped_and_resume_is_429(
    client: TestClient,
    engine: Engine,
    team: Team,
    inputs: tuple[str, str],
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"max_audit_runs_per_day": 2})
    client.app.state.settings = limited  # type: ignore[attr-defined]
    audit = create(client, team, audit_body(*inputs))
    t0 = anchor_of(engine, audit["id"])
    for k in range(3):
        tick(t0 + k * MINUTE, settings=limited, send=lambda *a: None)
    statuses = [(r.status, r.error_code) for r in runs(engine, audit["id"])]
    assert statuses == [("running", None), ("running", None), ("error", "run_limit")]
    client.post(f"/v1/audits/{audit['id']}/pause", headers=team.headers())
    r = client.post(f"/v1/audits/{audit['id']}/resume", headers=team.headers())
    assert r.status_code == 429 and r.json()["code"] == "audit_limit"
    assert 0 < int(r.headers["Retry-After"]) <= 86400


# --- the rules alone -------------------------------------------------------------


def _rows(values: dict[str, tuple[float | None, float, float]]) -> Rows:
    return Rows(
        values={
            (layer, "intrinsic_dimension", "twonn"): Value(*v)
            for layer, v in values.items()
        },
        layers=tuple(values),
        bottlenecks=frozenset({"fc2"}),
    )


def _rule(**over: Any) -> dict[str, Any]:
    rule = {**RULES[0], "require_no_overlap": False}
    return rule | over


def test_rules_select_layers_and_respect_intervals() -> None:
    base = _rows({"fc1": (4.0, 3.5, 4.5), "fc2": (2.0, 1.9, 2.1), "head": (0.0, 0, 0)})
    new = _rows({"fc1": (5.0, 4.4, 5.6), "fc2": (3.0, 2.9, 3.1), "head": (0.5, 0, 1)})
    fired = evaluate([_rule(layers="fc*")], new, base)
    # fc1: +25% > 20%; fc2: +50%; head is not an fc*.
    assert [(f["layer"], f["change"]) for f in fired] == [("fc1", 1.0), ("fc2", 1.0)]
    assert [f["intervals_overlap"] for f in fired] == [True, False]
    strict = evaluate([_rule(layers="fc*", require_no_overlap=True)], new, base)
    assert [f["layer"] for f in strict] == ["fc2"]  # fc1's intervals overlap
    assert [f["layer"] for f in evaluate([_rule()], new, base)] == ["fc2"]
    # A zero baseline: any change is infinitely relative, none is no change.
    assert [f["layer"] for f in evaluate([_rule(layers="head")], new, base)] == ["head"]
    assert evaluate([_rule(layers="head")], base, base) == []
    # abs_change at 1.0 is not exceeded by a change of exactly 1.0.
    assert evaluate([_rule(operator="abs_change", threshold=1.0)], new, base) == []


def test_above_and_below_need_no_baseline() -> None:
    new = _rows({"fc1": (5.0, 4.4, 5.6), "fc2": (3.0, 2.9, 3.1)})
    above = [_rule(layers="*", operator="above", threshold=4.5)]
    assert [f["layer"] for f in evaluate(above, new, None)] == ["fc1"]
    # With require_no_overlap the interval must lie wholly above: 4.4 < 4.5.
    above[0]["require_no_overlap"] = True
    assert evaluate(above, new, None) == []
    below = [
        _rule(layers="*", operator="below", threshold=3.05, require_no_overlap=True)
    ]
    assert evaluate(below, new, None) == []  # 3.1 > 3.05
    below[0]["threshold"] = 3.2
    assert [f["layer"] for f in evaluate(below, new, None)] == ["fc2"]
    # Change rules without a baseline and void values never fire.
    assert evaluate([_rule(layers="*")], new, None) == []
    void = _rows({"fc2": (None, 0, 0)})
    assert evaluate([_rule(operator="above", threshold=-1)], void, None) == []
