"""The app around the routes: health, readiness, OpenAPI, error shapes, streaming."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from service.main import HTTP_STATUS, create_app
from service.queue import TaskQueue
from service.settings import Settings
from tests.service.conftest import Team


def test_health_ready_and_openapi(client: TestClient) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    r = client.get("/v1/ready")  # the real Redis and the test database, no worker
    assert r.status_code == 503 and r.json()["code"] == "not_ready"
    spec = client.get("/v1/openapi.json").json()
    assert spec["info"]["title"] == "bottlelens"
    form = spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]
    assert "file" in form["multipart/form-data"]["schema"]["properties"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_database_down_is_503_not_500(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:5432/bottlelens_no_such_db",
        storage_dir=tmp_path,
        broker_url="redis://127.0.0.1:6379/15",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.get("/v1/ready")
        assert r.status_code == 503 and "database" in r.json()["message"]
        r = client.get(
            "/v1/models", headers={"Authorization": "Bearer bl_0123456789abcdef_x"}
        )
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable"


def test_errors_are_code_and_message_json(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/nowhere")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = client.put("/v1/health")
        assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
        r = client.get("/v1/boom")
        assert r.status_code == 500
        assert r.json() == {
            "code": "internal",
            "message": "internal error; the server log has the details",
            "problems": [],
        }
    assert set(HTTP_STATUS.values()) == {401, 403, 404, 409, 413, 422, 429, 503, 507}


def test_oversized_body_is_refused_before_it_is_all_read(
    client: TestClient, team: Team, settings: Settings
) -> None:
    """Drive the ASGI app directly and count the body chunks it asked for."""
    app = client.app
    chunk = b"\x00" * 8192
    total = 40  # 320 KiB against a 64 KiB cap
    asked = 0
    sent: list[dict[str, Any]] = []
    head = (
        b'--b\r\nContent-Disposition: form-data; name="architecture"\r\n\r\nmlp\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
    )

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        body = head if asked == 1 else chunk
        return {"type": "http.request", "body": body, "more_body": asked < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    key = team.keys["read,submit"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "client": ("t", 1),
        "server": ("t", 80),
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"multipart/form-data; boundary=b"),
        ],
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert asked < total / 2  # stopped soon after the cap, not at the end
    assert not any(settings.storage_dir.rglob("upload-*"))


@pytest.fixture
def empty_redis_db() -> Iterator[int]:
    """An empty Redis database, claimed with a key so that parallel runs skip it."""
    for db in range(13, 0, -1):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0 and client.set(
            "bottlelens-test-owner", "service", nx=True
        ):
            try:
                yield db
            finally:
                client.flushdb()
            return
    pytest.skip("no empty Redis database")


def test_tasks_reach_a_real_broker_by_name(empty_redis_db: int) -> None:
    """Without a worker: read the messages back from Redis and check them."""
    queue = TaskQueue(f"redis://127.0.0.1:6379/{empty_redis_db}")
    queue.run_analysis("a" * 32, "cpu")
    queue.validate_upload("model", "m" * 32)
    client = redis.Redis(host="127.0.0.1", port=6379, db=empty_redis_db)
    messages = [json.loads(raw) for raw in client.lrange("cpu", 0, -1)]
    headers = sorted((m["headers"]["task"], m["headers"]["id"]) for m in messages)
    assert headers[0] == ("bottlelens.run_analysis", "a" * 32)
    assert headers[1][0] == "bottlelens.validate_upload"
    bodies = [json.loads(base64.b64decode(m["body"]))[0] for m in messages]
    assert sorted(bodies) == [["a" * 32], ["model", "m" * 32]]
    assert queue.ping() and queue.revoke("a" * 32)


@pytest.mark.parametrize("url", ["mysql://x/y", "oracle://z"])
def test_settings_fail_fast_on_unsupported_databases(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        Settings(database_url=url)
    assert Settings(database_url="postgresql://u@h/d").database_url.startswith(
        "postgresql+psycopg://"
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models/%00", None),
        ("GET", "/v1/analyses/%00/results", None),
        ("GET", "/v1/datasets/" + "x" * 5000, None),
        ("GET", "/v1/analyses?model_id=%00", None),
        ("GET", "/v1/models?offset=100000000000000000000", None),
        ("GET", "/v1/models?limit=abc", None),
        ("POST", "/v1/analyses", {"model_id": "\x00", "dataset_id": "a"}),
        (
            "POST",
            "/v1/analyses",
            {
                "model_id": "a" * 32,
                "dataset_id": "b" * 32,
                "config": {"seed": 10**40, "name": "\x00"},
            },
        ),
        ("POST", "/v1/analyses/%00/cancel", None),
        ("DELETE", "/v1/models/..%2F..%2Fetc", None),
    ],
)
def test_hostile_client_input_is_never_a_500(
    client: TestClient, team: Team, method: str, path: str, body: Any
) -> None:
    r = client.request(method, path, headers=team.headers("admin"), json=body)
    assert r.status_code in (404, 422), r.text
    assert set(r.json()) == {"code", "message", "problems"}
