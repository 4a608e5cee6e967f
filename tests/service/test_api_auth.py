"""The auth matrix over the whole route table: 401, 403, and 404 for other teams."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service import store
from service.db import session_scope
from tests.service.conftest import Team, ready_model_and_dataset, safetensors_bytes

# (method, path template, scope it needs). {model}, {dataset}, {analysis} are ids.
ROUTES = [
    ("POST", "/v1/models", "submit"),
    ("GET", "/v1/models", "read"),
    ("GET", "/v1/models/{model}", "read"),
    ("DELETE", "/v1/models/{model}", "admin"),
    ("POST", "/v1/datasets", "submit"),
    ("GET", "/v1/datasets", "read"),
    ("GET", "/v1/datasets/{dataset}", "read"),
    ("DELETE", "/v1/datasets/{dataset}", "admin"),
    ("POST", "/v1/analyses", "submit"),
    ("GET", "/v1/analyses", "read"),
    ("GET", "/v1/analyses/{analysis}", "read"),
    ("GET", "/v1/analyses/{analysis}/results", "read"),
    ("GET", "/v1/analyses/{analysis}/layers", "read"),
    ("GET", "/v1/analyses/{analysis}/bottlenecks", "read"),
    ("GET", "/v1/analyses/{analysis}/necks", "read"),
    ("GET", "/v1/analyses/{analysis}/artifacts/fc2.png", "read"),
    ("GET", "/v1/analyses/{analysis}/report", "read"),
    ("POST", "/v1/analyses/{analysis}/cancel", "submit"),
    ("POST", "/v1/series", "submit"),
    ("GET", "/v1/series", "read"),
    ("GET", "/v1/series/{series}", "read"),
    ("DELETE", "/v1/series/{series}", "admin"),
    ("POST", "/v1/series/{series}/checkpoints", "submit"),
    ("GET", "/v1/series/{series}/checkpoints", "read"),
    ("POST", "/v1/series/{series}/analyses", "submit"),
    ("GET", "/v1/series/{series}/trajectory", "read"),
    ("GET", "/v1/compare", "read"),
    ("GET", "/v1/exports/metrics", "read"),
    ("POST", "/v1/audits", "submit"),
    ("GET", "/v1/audits", "read"),
    ("GET", "/v1/audits/{audit}", "read"),
    ("DELETE", "/v1/audits/{audit}", "admin"),
    ("POST", "/v1/audits/{audit}/pause", "submit"),
    ("POST", "/v1/audits/{audit}/resume", "submit"),
    ("GET", "/v1/audits/{audit}/runs", "read"),
    ("GET", "/v1/audits/{audit}/alerts", "read"),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ROUTES]
# A key that lacks the scope a route needs.
LACKING = {"read": "submit", "submit": "read", "admin": "read,submit"}
MISSING = {
    "model": "0" * 32,
    "dataset": "1" * 32,
    "analysis": "2" * 32,
    "series": "3" * 32,
    "audit": "4" * 32,
}


def _call(
    client: TestClient, method: str, template: str, ids: dict[str, str], headers: dict
) -> Any:
    path = template.format(**ids)
    if (method, template) == ("POST", "/v1/models"):
        return client.post(
            path,
            headers=headers,
            data={"architecture": "mlp"},
            files={"file": ("m.safetensors", safetensors_bytes())},
        )
    if (method, template) == ("POST", "/v1/datasets"):
        return client.post(path, headers=headers, data={"spec": "sklearn:digits"})
    if (method, template) == ("POST", "/v1/analyses"):
        body = {"model_id": ids["model"], "dataset_id": ids["dataset"], "config": {}}
        return client.post(path, headers=headers, json=body)
    if (method, template) == ("POST", "/v1/series"):
        body = {"name": "s", "architecture": "mlp"}
        return client.post(path, headers=headers, json=body)
    if template.endswith("/checkpoints") and method == "POST":
        files = {"file": ("m.safetensors", safetensors_bytes())}
        return client.post(path, headers=headers, data={"step": "1"}, files=files)
    if template.endswith("/analyses") and method == "POST":
        return client.post(path, headers=headers, json={"dataset_id": ids["dataset"]})
    if (method, template) == ("POST", "/v1/audits"):
        return client.post(path, headers=headers, json=_audit(ids))
    params: dict[str, str] = {}
    if template.endswith("/trajectory"):
        params = {"metric": "m", "estimator": "e", "dataset_id": ids["dataset"]}
    if template == "/v1/compare":
        params = {"a": ids["analysis"], "b": ids["analysis"]}
    return client.request(method, path, headers=headers, params=params)


def _audit(ids: dict[str, str]) -> dict[str, Any]:
    rule = {"metric": "intrinsic_dimension", "estimator": "twonn"}
    return {
        "model": ids["model"],
        "dataset_id": ids["dataset"],
        "schedule": {"interval_s": 3600},
        "rules": [{**rule, "operator": "above", "threshold": 1.0}],
    }


def test_the_table_covers_every_route(client: TestClient) -> None:
    paths = client.get("/v1/openapi.json").json()["paths"]
    served = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if path not in ("/v1/health", "/v1/ready")
    }
    table = {
        (
            m,
            p.replace("{model}", "{model_id}")
            .replace("{dataset}", "{dataset_id}")
            .replace("{analysis}", "{analysis_id}")
            .replace("{series}", "{series_id}")
            .replace("{audit}", "{audit_id}")
            .replace("fc2.png", "{name}"),
        )
        for m, p, _ in ROUTES
    }
    assert served == table


@pytest.mark.parametrize(("method", "template", "scope"), ROUTES, ids=ROUTE_IDS)
def test_no_wrong_or_revoked_key_is_401(
    client: TestClient,
    engine: Engine,
    team: Team,
    method: str,
    template: str,
    scope: str,
) -> None:
    key = team.keys["admin"]
    cases = {
        "no key": {},
        "not bearer": {"Authorization": "Basic Zm9vOmJhcg=="},
        "not ours": {"Authorization": "Bearer abc"},
        "wrong key": {"Authorization": f"Bearer {key[:-4]}AAAA"},
        "revoked key": {"Authorization": f"Bearer {key}"},
    }
    for case, headers in cases.items():
        if case == "revoked key":
            with session_scope(engine) as s:
                assert store.revoke_api_key(s, key.split("_")[1])
        r = _call(client, method, template, MISSING, headers)
        assert r.status_code == 401, (case, r.text)
        assert r.json()["code"] == "unauthenticated" and r.json()["message"]
        assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "template", "scope"), ROUTES, ids=ROUTE_IDS)
def test_missing_scope_is_403(
    client: TestClient, team: Team, method: str, template: str, scope: str
) -> None:
    r = _call(client, method, template, MISSING, team.headers(LACKING[scope]))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and scope in r.json()["message"]


@pytest.fixture
def theirs(client: TestClient, engine: Engine, other_team: Team) -> dict[str, str]:
    """Objects of another team: ready model and dataset, a succeeded analysis."""
    model, dataset = ready_model_and_dataset(client, engine, other_team)
    r = client.post(
        "/v1/analyses",
        headers=other_team.headers(),
        json={"model_id": model, "dataset_id": dataset},
    )
    analysis = r.json()["id"]
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        minimal = {
            "schema_version": 1,
            "model": {},
            "dataset": {},
            "config": {},
            "layers": [],
            "bottlenecks": [],
            "provenance": {},
        }
        assert store.save_results(s, analysis, "w1", minimal)
    series = client.post(
        "/v1/series",
        headers=other_team.headers(),
        json={"name": "theirs", "architecture": "mlp"},
    ).json()["id"]
    audit = client.post(
        "/v1/audits",
        headers=other_team.headers(),
        json=_audit({"model": model, "dataset": dataset}),
    ).json()["id"]
    return {
        "model": model,
        "dataset": dataset,
        "analysis": analysis,
        "series": series,
        "audit": audit,
    }


@pytest.mark.parametrize(("method", "template", "scope"), ROUTES, ids=ROUTE_IDS)
def test_another_teams_object_is_404_like_a_missing_one(
    client: TestClient,
    team: Team,
    other_team: Team,
    theirs: dict[str, str],
    method: str,
    template: str,
    scope: str,
) -> None:
    admin = team.headers("admin")
    if "{" not in template:  # lists and creates: their objects are invisible
        r = _call(client, method, template, theirs, admin)
        if template == "/v1/compare":
            assert r.status_code == 404, r.text
        elif template == "/v1/exports/metrics":
            assert r.status_code == 200 and r.text.count("\n") == 1  # header only
        elif method == "GET":
            assert r.status_code == 200 and r.json() == {"data": [], "count": 0}
            filtered = client.get(
                f"{template}?model_id={theirs['model']}", headers=admin
            )
            assert filtered.json()["count"] == 0
        elif template in ("/v1/analyses", "/v1/audits"):
            assert r.status_code == 404, r.text
        else:
            assert r.status_code == 201  # an upload of our own
        return
    r = _call(client, method, template, theirs, admin)
    missing = _call(client, method, template, MISSING, admin)
    assert r.status_code == missing.status_code == 404, r.text
    assert r.json()["code"] == missing.json()["code"] == "not_found"
    kind = (
        template.split("/")[2]
        .rstrip("s")
        .replace("analyse", "analysis")
        .replace("serie", "series")
    )
    assert r.json()["message"] == missing.json()["message"].replace(
        MISSING[kind], theirs[kind]
    )
    # and the owner still sees it
    assert (
        client.get(
            f"/v1/{template.split('/')[2]}/{theirs[kind]}", headers=other_team.headers()
        ).status_code
        == 200
    )
