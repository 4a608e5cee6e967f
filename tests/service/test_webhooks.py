"""Webhooks: the allowlist at creation and after resolution, the HMAC-SHA256
signature, retries with backoff and the delivery log, against a local HTTP server
on 127.0.0.1 (allowlisted explicitly here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from service import webhooks
from service.settings import Settings
from tests.service.conftest import Team, ready_model_and_dataset
from tests.service.test_audits import anchor_of, audit_body, finish
from workers.scheduler import tick

SECRET = "s3cret"
ALWAYS = {  # fires on the first run: above needs no baseline
    "metric": "intrinsic_dimension",
    "estimator": "twonn",
    "layers": "bottlenecks",
    "operator": "above",
    "threshold": -1.0,
}


class Receiver:
    """A local HTTP server answering the scripted statuses, recording requests."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 5
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([500, 200]) as r:
        yield r


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_allowlist": ["127.0.0.1", "localhost"],
            "webhook_secret": SecretStr(SECRET),
            "webhook_timeout_s": 2.0,
            "webhook_backoff_s": 30.0,
            "webhook_max_attempts": 3,
        }
    )


# --- pure parts ----------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231, test case 2.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert (
        webhooks.sign("Jefe", b"what do ya want for nothing?") == f"sha256={expected}"
    )


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [webhooks.backoff_s(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert webhooks.backoff_s(30, 30) == 3600


@pytest.mark.parametrize(
    ("url", "allowlist", "ok"),
    [
        ("https://hooks.example.com/x", ["hooks.example.com"], True),
        ("https://HOOKS.example.com./x", ["hooks.example.com"], True),
        ("https://a.hooks.example.com/x", ["*.hooks.example.com"], True),
        ("https://evil.example.org/x", ["hooks.example.com"], False),
        ("https://hooks.example.com.evil.org/x", ["hooks.example.com"], False),
        ("http://127.0.0.1:9/x", ["hooks.example.com"], False),
        ("http://127.0.0.1:9/x", ["127.0.0.1"], True),
        ("http://10.1.2.3/x", ["10.1.0.0/16"], True),
        ("http://10.2.0.1/x", ["10.1.0.0/16"], False),
        ("http://[::1]/x", ["127.0.0.1"], False),
        ("ftp://hooks.example.com/x", ["hooks.example.com"], False),
        ("https://user:pw@hooks.example.com/x", ["hooks.example.com"], False),
        ("hooks.example.com/x", ["hooks.example.com"], False),
    ],
)
def test_allowlist_at_creation(url: str, allowlist: list[str], ok: bool) -> None:
    if ok:
        webhooks.check_url(url, allowlist)
    else:
        with pytest.raises(webhooks.WebhookRefused):
            webhooks.check_url(url, allowlist)


@pytest.mark.parametrize(
    ("addresses", "allowlist", "ok"),
    [
        (["93.184.216.34"], ["hooks.example.com"], True),
        (["10.0.0.5"], ["hooks.example.com"], False),  # a name that points inside
        (["93.184.216.34", "127.0.0.1"], ["hooks.example.com"], False),
        (["169.254.169.254"], ["hooks.example.com"], False),  # link-local metadata
        (["fd00::1"], ["hooks.example.com"], False),
        (["10.0.0.5"], ["hooks.example.com", "10.0.0.0/24"], True),
    ],
)
def test_every_resolved_address_is_checked_at_delivery(
    monkeypatch: pytest.MonkeyPatch,
    addresses: list[str],
    allowlist: list[str],
    ok: bool,
) -> None:
    def fake(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        assert host == "hooks.example.com"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    target = webhooks.parse_url("https://hooks.example.com/x")
    if ok:
        assert str(webhooks.resolve(target, allowlist)) == addresses[0]
    else:
        with pytest.raises(webhooks.WebhookRefused, match="not allowed"):
            webhooks.resolve(target, allowlist)


# --- through the API and the tick ------------------------------------------------


def _alerting_audit(
    client: TestClient, engine: Engine, team: Team, url: str
) -> dict[str, Any]:
    model, dataset = ready_model_and_dataset(client, engine, team)
    body = audit_body(model, dataset, rules=[ALWAYS], webhook_url=url)
    r = client.post("/v1/audits", headers=team.headers(), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_an_alert_is_delivered_signed_and_retried_with_backoff(
    client: TestClient,
    engine: Engine,
    team: Team,
    settings: Settings,
    receiver: Receiver,
    demo_result: dict[str, Any],
) -> None:
    audit = _alerting_audit(client, engine, team, receiver.url)
    t0 = anchor_of(engine, audit["id"])
    queued: list[str] = []
    tick(t0, settings=settings, send=lambda a, q: queued.append(a))
    finish(engine, queued[0], demo_result)
    first = tick(t0 + timedelta(seconds=1), settings=settings, send=lambda *a: None)
    (run_id,) = first.finished
    assert first.finished[run_id] == "alert" and first.delivered == {run_id: "pending"}
    # Not due again before the backoff (30 s after the first attempt).
    early = tick(t0 + timedelta(seconds=20), settings=settings, send=lambda *a: None)
    assert early.delivered == {} and len(receiver.requests) == 1
    later = tick(t0 + timedelta(seconds=32), settings=settings, send=lambda *a: None)
    assert later.delivered == {run_id: "delivered"}
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Bottlelens-Signature"] == f"sha256={mac}"
        payload = json.loads(body)
        assert payload["run_id"] == run_id and payload["audit_id"] == audit["id"]
        assert payload["fired"][0]["layer"] == "fc2"
    alerts = client.get(f"/v1/audits/{audit['id']}/alerts", headers=team.headers())
    delivery = alerts.json()["data"][0]["delivery"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2
    assert [e["status_code"] for e in delivery["log"]] == [500, 200]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://evil.example.org/x", "http://[::1]:9/"]
)
def test_a_host_off_the_allowlist_is_refused_at_creation(
    client: TestClient, engine: Engine, team: Team, settings: Settings, url: str
) -> None:
    client.app.state.settings = settings.model_copy(  # type: ignore[attr-defined]
        update={"webhook_allowlist": ["hooks.example.com"]}
    )
    model, dataset = ready_model_and_dataset(client, engine, team)
    body = audit_body(model, dataset, rules=[ALWAYS], webhook_url=url)
    r = client.post("/v1/audits", headers=team.headers(), json=body)
    assert r.status_code == 422 and r.json()["code"] == "webhook_refused", r.text
    assert "allowlist" in r.json()["message"]


def test_no_secret_no_webhook(
    client: TestClient, engine: Engine, team: Team, settings: Settings
) -> None:
    client.app.state.settings = settings.model_copy(update={"webhook_secret": None})  # type: ignore[attr-defined]
    model, dataset = ready_model_and_dataset(client, engine, team)
    body = audit_body(model, dataset, rules=[ALWAYS], webhook_url="http://127.0.0.1/")
    r = client.post("/v1/audits", headers=team.headers(), json=body)
    assert r.status_code == 422 and "BOTTLELENS_WEBHOOK_SECRET" in r.text


@pytest.mark.parametrize("case", ["allowlist changed", "name resolves to loopback"])
def test_a_host_not_allowed_at_delivery_is_refused_without_a_request(
    client: TestClient,
    engine: Engine,
    team: Team,
    settings: Settings,
    receiver: Receiver,
    demo_result: dict[str, Any],
    case: str,
) -> None:
    url = receiver.url
    at_delivery = settings.model_copy(
        update={"webhook_allowlist": ["hooks.example.com"]}
    )
    if case == "name resolves to loopback":
        url = url.replace("127.0.0.1", "localhost")  # a listed name, not a network
        at_delivery = settings.model_copy(update={"webhook_allowlist": ["localhost"]})
    audit = _alerting_audit(client, engine, team, url)
    t0 = anchor_of(engine, audit["id"])
    queued: list[str] = []
    tick(t0, settings=settings, send=lambda a, q: queued.append(a))
    finish(engine, queued[0], demo_result)
    report = tick(t0 + timedelta(seconds=1), settings=at_delivery, send=lambda *a: None)
    assert list(report.delivered.values()) == ["refused"]
    assert receiver.requests == []
    (alert,) = client.get(
        f"/v1/audits/{audit['id']}/alerts", headers=team.headers()
    ).json()["data"]
    assert alert["delivery"]["status"] == "refused"
    assert "not" in alert["delivery"]["log"][0]["error"]
