"""``bottlelens.client.Client`` against the real app in-process (SQLite): every
method hits its route and parses the answer; errors, retries and streaming."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bottlelens.client import ApiError, Client
from contract.config import parse_config
from contract.result import REPORT_FILE
from service import store
from service.db import session_scope
from service.settings import Settings
from service.storage import artifacts_dir
from tests.client.conftest import finish, model_and_dataset
from tests.service.conftest import DATA, Team, safetensors_bytes


def test_models_and_datasets(
    connect: Any, engine: Engine, team: Team, tmp_path: Path, sent: list
) -> None:
    api = connect(team.keys["read,submit"])
    content = safetensors_bytes(300)
    weights = tmp_path / "net.safetensors"
    weights.write_bytes(content)
    model = api.upload_model(weights, "mlp", {"widths": [4, 2]})
    assert (model.sha256, model.size) == (
        hashlib.sha256(content).hexdigest(),
        len(content),
    )
    assert (model.filename, model.format, model.status) == (
        "net.safetensors",
        "safetensors",
        "validating",
    )
    assert model.architecture_config == {"widths": [4, 2]}
    assert sent[-1]["args"] == ["model", model.id]
    assert api.get_model(model.id) == model
    listed = api.list_models(limit=1)
    assert (listed.count, listed.data) == (1, [model])

    csv = tmp_path / "data.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    uploaded = api.create_dataset(csv)
    builtin = api.create_dataset(spec="sklearn:digits")
    assert (uploaded.format, uploaded.filename) == ("csv", "data.csv")
    assert (builtin.format, builtin.spec) == ("builtin", "sklearn:digits")
    assert api.get_dataset(uploaded.id) == uploaded
    datasets = api.list_datasets()
    assert datasets.count == 2 and {d.id for d in datasets.data} == {
        uploaded.id,
        builtin.id,
    }
    with pytest.raises(ValueError, match="exactly one"):
        api.create_dataset(csv, spec="sklearn:digits")

    admin = connect(team.keys["admin"])
    admin.delete_model(model.id)
    admin.delete_dataset(builtin.id)
    with pytest.raises(ApiError) as err:
        api.get_model(model.id)
    assert (err.value.status, err.value.code) == (404, "not_found")
    assert api.list_datasets().count == 1


def test_analyses_results_layers_bottlenecks_artifacts(
    connect: Any,
    engine: Engine,
    team: Team,
    tmp_path: Path,
    server: TestClient,
    demo_result: dict,
    settings: Settings,
    sent: list,
) -> None:
    api = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(api, engine, tmp_path)
    run = api.submit_analysis(model, dataset, {"samples": 200, "device": "cpu"})
    assert (run.status, run.model_id, run.dataset_id) == ("queued", model, dataset)
    assert run.config == parse_config({"samples": 200, "device": "cpu"}).to_dict()
    assert sent[-1] == {
        "name": "bottlelens.run_analysis",
        "args": [run.id],
        "queue": "cpu",
        "task_id": run.id,
    }
    other = api.submit_analysis(model, dataset)
    assert api.get_analysis(run.id) == run
    assert [a.id for a in api.list_analyses().data] == [other.id, run.id]
    assert api.list_analyses(status="succeeded").count == 0
    assert api.list_analyses(model_id=model, limit=1, offset=1).data[0].id == run.id

    cancelled = api.cancel_analysis(other.id)
    assert cancelled.status == "cancelled" and sent[-1]["name"] == "revoke"
    assert api.cancel_analysis(other.id).status == "cancelled"  # idempotent

    finish(engine, run.id, demo_result)
    with pytest.raises(ApiError) as err:
        api.cancel_analysis(run.id)
    assert (err.value.status, err.value.code) == (409, "finished")
    assert api.wait(run.id, timeout_s=0).status == "succeeded"
    raw = server.get(
        f"/v1/analyses/{run.id}/results", headers=team.headers("read")
    ).content
    assert api.results(run.id) == json.loads(raw)
    assert api.results(run.id)["provenance"] == demo_result["provenance"]
    out = io.BytesIO()
    assert api.download_results(run.id, out) == len(raw)
    assert out.getvalue() == raw
    layers = api.layers(run.id)
    assert layers.count == len(demo_result["layers"]) == 10
    assert [layer.name for layer in layers.data] == [
        layer["name"] for layer in demo_result["layers"]
    ]
    bottlenecks = api.bottlenecks(run.id)
    assert bottlenecks.count == 1
    assert bottlenecks.data[0].layer == demo_result["bottlenecks"][0]["layer"]

    folder = artifacts_dir(settings.storage_dir, run.id)
    folder.mkdir(parents=True)
    (folder / "fc2.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    png = io.BytesIO()
    assert api.download_artifact(run.id, "fc2.png", png) == 12
    assert png.getvalue() == b"\x89PNG\r\n\x1a\nfake"
    with pytest.raises(ApiError) as err:  # the name cannot leave its segment
        api.download_artifact(run.id, "../fc2.png", io.BytesIO())
    assert err.value.status == 404
    page = b"<!DOCTYPE html><html><body>report</body></html>"
    (folder / REPORT_FILE).write_bytes(page)
    html = io.BytesIO()
    assert api.download_report(run.id, html) == len(page) and html.getvalue() == page
    with pytest.raises(ApiError) as err:
        api.necks(run.id)  # the demo did not run the necks family
    assert err.value.status == 404 and "necks" in err.value.message


def test_necks(connect: Any, engine: Engine, team: Team, tmp_path: Path) -> None:
    api = connect(team.keys["read,submit"])
    run = api.submit_analysis(*model_and_dataset(api, engine, tmp_path))
    section = {"method": {"interval": "bootstrap"}, "necks": [], "reason": "none"}
    demo = json.loads((DATA / "demo_result.json").read_text())
    finish(engine, run.id, demo | {"necks": section})
    necks = api.necks(run.id)
    assert (necks.method, necks.necks, necks.reason) == (section["method"], [], "none")


def test_health_andready(
    connect: Any, engine: Engine, settings: Settings, sleeps: list[float]
) -> None:
    api = connect(None)  # no key needed
    assert api.health().status == "ok"
    with pytest.raises(ApiError) as err:
        api.ready()
    assert (err.value.status, err.value.code) == (503, "not_ready")
    assert any("no worker" in p for p in err.value.problems)
    assert sleeps == []  # not ready is an answer: not waited for
    with session_scope(engine) as s:
        store.record_worker_heartbeat(s, "celery@test", ["cpu"])
    ready = api.ready()  # the broker is the real Redis
    assert (ready.database, ready.broker, ready.workers) == (True, True, 1)


def test_errors_are_one_line_and_never_retried(
    connect: Any, engine: Engine, team: Team, other_team: Team, tmp_path: Path
) -> None:
    calls: list[str] = []
    api = connect(None)
    api._http.event_hooks["request"].append(lambda r: calls.append(r.url.path))
    with pytest.raises(ApiError) as err:
        api.list_models()
    assert (err.value.status, err.value.code) == (401, "unauthenticated")
    assert calls == ["/v1/models"]

    owner = connect(team.keys["read,submit"])
    model, dataset = model_and_dataset(owner, engine, tmp_path)
    with pytest.raises(ApiError) as err:
        connect(other_team.keys["read"]).get_model(model)
    assert (err.value.status, err.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as err:
        connect(team.keys["read"]).submit_analysis(model, dataset)
    assert (err.value.status, err.value.code) == (403, "forbidden")

    bad = {"samples": -1, "metrics": ["nope"], "id": {"k": "x"}}
    with pytest.raises(ApiError) as err:
        owner.submit_analysis(model, dataset, bad)
    e = err.value
    assert (e.status, e.code) == (422, "invalid_input") and len(e.problems) >= 2
    assert "\n" not in str(e) and str(e).startswith("422 invalid_input: ")
    assert owner.list_analyses().count == 0


def _mock(handler: Any, sleeps: list[float], **options: Any) -> Client:
    transport = httpx.MockTransport(handler)
    return Client(
        "http://api.test", "k", transport=transport, sleep=sleeps.append, **options
    )


def test_a_503_with_retry_after_is_retried_after_that_wait() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "2"}, json={"code": "busy"}),
        httpx.Response(503, headers={"Retry-After": "120"}, json={"code": "busy"}),
        httpx.Response(200, json={"status": "ok"}),
    ]
    sleeps: list[float] = []
    api = _mock(lambda request: answers.pop(0), sleeps, max_wait_s=30)
    assert api.health().status == "ok"
    assert sleeps == [2.0, 30.0] and answers == []


def test_retry_after_may_be_an_http_date() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20))
    answers = [
        httpx.Response(503, headers={"Retry-After": when}),
        httpx.Response(503, headers={"Retry-After": "soon"}),  # not a wait: raised
    ]
    sleeps: list[float] = []
    with pytest.raises(ApiError) as err:
        _mock(lambda request: answers.pop(0), sleeps).health()
    assert err.value.status == 503 and answers == []
    assert len(sleeps) == 1 and 17 <= sleeps[0] <= 20


def test_a_503_without_retry_after_or_past_the_retries_raises() -> None:
    sleeps: list[float] = []
    body = {"code": "unavailable", "message": "queue down", "problems": []}
    api = _mock(lambda request: httpx.Response(503, json=body), sleeps)
    with pytest.raises(ApiError) as err:
        api.health()
    assert str(err.value) == "503 unavailable: queue down"
    assert sleeps == []
    busy = httpx.Response(503, headers={"Retry-After": "1"}, json=body)
    api = _mock(lambda request: busy, sleeps, retries=2)
    with pytest.raises(ApiError) as err:
        api.health()
    assert err.value.status == 503 and sleeps == [1.0, 1.0]


def test_connection_errors_are_retried_a_bounded_number_of_times() -> None:
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        raise httpx.ConnectError("connection refused", request=request)

    sleeps: list[float] = []
    with pytest.raises(ApiError) as err:
        _mock(refuse, sleeps, retries=3).list_analyses()
    assert (err.value.status, err.value.code) == (None, "unreachable")
    assert "connection refused" in str(err.value) and not err.value.is_client_error
    assert seen == ["GET"] * 4 and sleeps == [0.5, 1.0, 2.0]

    def lost(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        raise httpx.ReadTimeout("timed out", request=request)

    seen.clear()
    with pytest.raises(ApiError):  # it may have reached the server: not resent
        _mock(lost, []).submit_analysis("m", "d")
    assert seen == ["POST"]


class ChunkCounter(httpx.BaseTransport):
    """Reads each request body as it streams (httpx's MockTransport reads it
    whole first): the first is answered 503 with Retry-After, the next 400."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        body = bytearray()
        for chunk in request.stream:
            self.chunks.append(len(chunk))
            body += chunk
        self.bodies.append(bytes(body))
        if len(self.bodies) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(400, json={"code": "invalid_input", "message": "x"})


def test_uploads_stream_in_chunks_and_are_resent_whole(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB
    weights = tmp_path / "big.safetensors"
    weights.write_bytes(content)
    transport = ChunkCounter()
    api = Client("http://api.test", "k", transport=transport, sleep=lambda s: None)
    with pytest.raises(ApiError):
        api.upload_model(weights, "mlp")
    assert len(transport.bodies) == 2  # the 503 was retried, the 400 was not
    assert all(content in body for body in transport.bodies)
    assert max(transport.chunks) <= 64 * 1024 and len(transport.chunks) > 2 * 16


def test_url_and_key_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    monkeypatch.setenv("BOTTLELENS_URL", "http://lens.example:9000/")
    monkeypatch.setenv("BOTTLELENS_API_KEY", "secret-key")
    with Client(transport=httpx.MockTransport(record)) as api:
        api.health()
    assert str(seen[0].url) == "http://lens.example:9000/v1/health"
    assert seen[0].headers["Authorization"] == "Bearer secret-key"
    monkeypatch.delenv("BOTTLELENS_URL")
    assert Client().url == "http://127.0.0.1:8000"


def test_an_error_without_a_json_body_is_still_one_line() -> None:
    page = "<html>\n<h1>Bad gateway</h1>\n</html>"
    api = _mock(lambda request: httpx.Response(502, text=page), [])
    with pytest.raises(ApiError) as err:
        api.health()
    assert str(err.value) == "502 http_502: <html> <h1>Bad gateway</h1> </html>"


def test_the_client_imports_no_server_or_tensor_library() -> None:
    heavy = ["fastapi", "starlette", "sqlalchemy", "celery", "torch", "numpy"]
    code = (
        "import sys, bottlelens.client; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.replace("'", '"')) == []
