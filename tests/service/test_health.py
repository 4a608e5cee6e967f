"""``/v1/health`` does no I/O; ``/v1/ready`` wants the database, the broker and a
worker heartbeat no older than ``worker_heartbeat_timeout_s``."""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from service import store
from service.db import session_scope
from service.main import create_app
from service.models import WorkerHeartbeatRow, utcnow
from service.routes.system import health
from service.settings import Settings
from workers.heartbeat import Heartbeat


def test_health_answers_on_the_event_loop_without_a_database(tmp_path: Path) -> None:
    assert inspect.iscoroutinefunction(health)  # not in the threadpool
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        broker_url="redis://127.0.0.1:1/0",
        storage_dir=tmp_path,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/health").json() == {"status": "ok"}
    assert (
        "503"
        not in create_app(settings).openapi()["paths"]["/v1/health"]["get"]["responses"]
    )


def test_ready_wants_a_recent_worker_heartbeat(
    client: TestClient, engine: Engine
) -> None:
    r = client.get("/v1/ready")
    body = r.json()
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert body["code"] == "not_ready"
    assert body["problems"] == [
        "no worker has sent a heartbeat in the last 60 s; start one with "
        "`celery -A workers.celery_app worker -Q gpu,cpu` "
        "(or run `bottlelens serve --embedded`)"
    ]

    with session_scope(engine) as s:
        store.record_worker_heartbeat(s, "w1@host", ["gpu", "cpu"])
    r = client.get("/v1/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "database": True,
        "broker": True,
        "workers": 1,
        "heartbeat_timeout_s": 60.0,
    }

    with engine.begin() as conn:  # the worker went silent 61 s ago
        conn.execute(
            update(WorkerHeartbeatRow).values(
                last_seen=utcnow() - timedelta(seconds=61)
            )
        )
    assert client.get("/v1/ready").status_code == 503
    with session_scope(engine) as s:
        store.record_worker_heartbeat(s, "w1@host", ["cpu"])  # the same row again
    assert client.get("/v1/ready").json()["workers"] == 1


def test_ready_names_every_missing_part(engine: Engine, settings: Settings) -> None:
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as client:
        body = client.get("/v1/ready").json()
    assert body["code"] == "not_ready"
    assert body["problems"][0] == "cannot reach the broker"
    assert "no worker" in body["problems"][1]
    assert body["message"] == "not ready: " + "; ".join(body["problems"])


def test_worker_heartbeat_thread_beats_and_leaves(engine: Engine) -> None:
    beat = Heartbeat("w2@host", ["gpu"], interval_s=0.05, engine=engine)
    beat.start()
    try:
        with session_scope(engine) as s:
            first = s.get(WorkerHeartbeatRow, "w2@host")
            assert first is not None and first.queues == "gpu"
            seen = first.last_seen
        deadline = utcnow() + timedelta(seconds=10)
        while utcnow() < deadline:
            with session_scope(engine) as s:
                row = s.get(WorkerHeartbeatRow, "w2@host")
                if row is not None and row.last_seen > seen:
                    break
        else:
            raise AssertionError("no second heartbeat in 10 s")
    finally:
        beat.stop()
    with session_scope(engine) as s:
        assert store.live_workers(s, 60) == 0
