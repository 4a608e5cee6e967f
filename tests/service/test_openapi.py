"""The OpenAPI document tells the truth: every operation lists its errors, and a
bounded schemathesis run with every check finds no response that contradicts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import Engine

from service import store
from service.db import get_engine, session_scope
from service.main import create_app
from service.settings import Settings

KEYED_ERRORS = {"401", "403"}
MAX_EXAMPLES = 25
# A schema-valid upload is refused when the file is not weights or data (random
# bytes), which no schema can say: only "valid data is accepted" is left out there.
CONTENT_CHECKED = {
    "POST /v1/models": [positive_data_acceptance],
    "POST /v1/datasets": [positive_data_acceptance],
    # An architecture config has rules across keys (hidden_dim a multiple of
    # num_heads) that the schema does not say; the names are an enum.
    "POST /v1/series": [positive_data_acceptance],
    # A cron expression that never matches or runs too often, an interval under the
    # floor and a webhook host off the allowlist are settings the schema cannot say.
    "POST /v1/audits": [positive_data_acceptance],
    # The capacity split's parts must not overlap and each must have start < stop:
    # rules across values that the schema cannot say (the API refuses them at once).
    "POST /v1/analyses": [positive_data_acceptance],
}


def test_every_operation_documents_its_errors(client: TestClient) -> None:
    spec = client.get("/v1/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            where = f"{method.upper()} {path}"
            if op.get("security"):
                assert codes >= KEYED_ERRORS, where
                assert codes & {"400", "401", "403", "404", "409"} - {"422"}, where
            if path != "/v1/health":
                assert "503" in codes, where
                assert "Retry-After" in op["responses"]["503"]["headers"], where
            for code, response in op["responses"].items():
                if code >= "400":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, where
    ready = spec["paths"]["/v1/ready"]["get"]
    assert "security" not in ready and "401" not in ready["responses"]
    form = spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["schema"]["required"] == ["file", "architecture"]
    form = spec["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["schema"]["oneOf"] == [
        {"required": ["file"]},
        {"required": ["spec"]},
    ]


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    r = client.put("/v1/models")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    assert r.json()["code"] == "method_not_allowed"
    assert client.patch("/v1/models/" + "a" * 32).headers["Allow"] == "DELETE, GET"


@pytest.mark.parametrize(
    "body", [b"\xff\xfe{", b"{not json", b"[" * 100_000, b'{"model_id": 1,}']
)
def test_a_body_that_is_not_utf8_json_is_422(
    client: TestClient, team: Any, body: bytes
) -> None:
    headers = {**team.headers(), "Content-Type": "application/json"}
    r = client.post("/v1/analyses", content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input" and r.json()["problems"]


def test_422_lists_every_problem(client: TestClient, team: Any) -> None:
    r = client.post(
        "/v1/analyses", headers=team.headers(), json={"model_id": 1, "config": []}
    )
    body = r.json()
    assert r.status_code == 422 and len(body["problems"]) >= 2
    assert body["message"] == "; ".join(body["problems"])


# --- schemathesis -------------------------------------------------------------


@pytest.fixture
def fuzzed_app(
    sqlite_url: str, tmp_path: Path, sent: list[dict[str, Any]]
) -> Iterator[tuple[Any, str]]:
    """The app on the test SQLite database with a team, a key with every scope and a
    worker heartbeat; no broker (tasks are recorded)."""
    engine: Engine = get_engine(sqlite_url)
    with session_scope(engine) as s:
        store.create_team(s, "fuzz-" + tmp_path.name[-20:])
        _, token = store.create_api_key(
            s, "fuzz-" + tmp_path.name[-20:], "read,submit,admin"
        )
        store.record_worker_heartbeat(s, "fuzz@test", ["cpu", "gpu"])
    settings_ = Settings(
        database_url=sqlite_url,
        storage_dir=tmp_path / "storage",
        broker_url="redis://127.0.0.1:6379/15",
        max_upload_bytes=64 * 1024,
    )
    app = create_app(settings_)
    with TestClient(app):
        yield app, token


def test_api_conforms_to_its_schema(fuzzed_app: tuple[Any, str]) -> None:
    """Every operation, ``MAX_EXAMPLES`` generated cases each, every check."""
    app, token = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            excluded = CONTENT_CHECKED.get(operation.label, [])
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        try:
            check()
        except BaseException as exc:  # every operation's first failure, then assert
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
