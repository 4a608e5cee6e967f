"""Submitting, listing, cancelling analyses and reading their results over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from contract.config import parse_config
from contract.errors import ContractError
from service import store
from service.db import session_scope
from service.main import create_app
from service.models import AnalysisRow
from service.queue import TaskQueue
from service.settings import Settings
from tests.service.conftest import (
    Team,
    make_team,
    ready_model_and_dataset,
    upload_model,
)

ORIGINAL_SEND = TaskQueue.send


def _submit(
    client: TestClient, team: Team, model: str, dataset: str, **config: Any
) -> Any:
    return client.post(
        "/v1/analyses",
        headers=team.headers(),
        json={"model_id": model, "dataset_id": dataset, "config": config},
    )


def _finish(engine: Engine, analysis_id: str, result: dict[str, Any]) -> None:
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis_id, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", result)


def test_submit_is_202_with_location_and_enqueued_by_name(
    client: TestClient, engine: Engine, team: Team, sent: list
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    sent.clear()
    r = _submit(client, team, model, dataset, samples=200)
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["Location"] == f"/v1/analyses/{body['id']}"
    assert (body["status"], body["progress"], body["attempt"]) == ("queued", 0.0, 0)
    # The stored config is the submitted one completed with every default.
    assert body["config"] == parse_config({"samples": 200}).to_dict()
    assert body["error"] is None
    assert sent == [
        {
            "name": "bottlelens.run_analysis",
            "args": [body["id"]],
            "queue": "gpu",
            "task_id": body["id"],
        }
    ]
    r = _submit(client, team, model, dataset, device="cpu")
    assert sent[-1]["queue"] == "cpu"
    followed = client.get(r.headers["Location"], headers=team.headers("read"))
    assert followed.status_code == 200 and followed.json()["id"] == r.json()["id"]


def test_inputs_must_be_ready(client: TestClient, engine: Engine, team: Team) -> None:
    model = upload_model(client, team).json()["id"]
    dataset = client.post(
        "/v1/datasets", headers=team.headers(), data={"spec": "sklearn:digits"}
    ).json()["id"]
    r = _submit(client, team, model, dataset)
    assert r.status_code == 409 and r.json()["code"] == "not_ready"
    assert "wait" in r.json()["message"]
    with session_scope(engine) as s:
        store.mark_upload(s, "model", model, status="ready")
    with session_scope(engine) as s:
        store.mark_upload(
            s,
            "dataset",
            dataset,
            status="rejected",
            error={"code": "invalid_input", "message": "x is not finite"},
        )
    r = _submit(client, team, model, dataset)
    assert r.status_code == 409 and "x is not finite" in r.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model_id": "m"},
        {"model_id": "m", "dataset_id": "d", "config": [1]},
        {"model_id": "m", "dataset_id": "d", "config": {"device": "tpu"}},
        {"model_id": "m", "dataset_id": "d", "extra": 1},
    ],
)
def test_bad_analysis_bodies_are_422(
    client: TestClient, team: Team, body: dict
) -> None:
    r = client.post("/v1/analyses", headers=team.headers(), json=body)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def test_non_finite_config_and_broken_json_are_422(
    client: TestClient, team: Team
) -> None:
    headers = {**team.headers(), "Content-Type": "application/json"}
    for raw in (
        '{"model_id": "m", "dataset_id": "d", "config": {"seed": NaN}}',
        "{oops",
    ):
        r = client.post("/v1/analyses", headers=headers, content=raw)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "invalid_input"


def test_oversized_analysis_body_is_413(client: TestClient, team: Team) -> None:
    huge = {"model_id": "a" * 32, "dataset_id": "b" * 32, "config": {"x": "y" * 2**21}}
    r = client.post("/v1/analyses", headers=team.headers(), json=huge)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    chunks = (b'{"model_id": "' + b"a" * 65536 for _ in range(40))  # no length
    headers = {**team.headers(), "Content-Type": "application/json"}
    r = client.post("/v1/analyses", headers=headers, content=chunks)
    assert r.status_code == 413 and r.json()["code"] == "too_large"


def test_queue_limit_is_429_with_retry_after(
    client: TestClient, engine: Engine, team: Team, settings: Settings
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    ids = [_submit(client, team, model, dataset).json()["id"] for _ in range(3)]
    r = _submit(client, team, model, dataset)
    assert r.status_code == 429 and r.json()["code"] == "queue_full"
    assert r.headers["Retry-After"] == str(settings.queue_full_retry_after_s)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(AnalysisRow)) == 3
    client.post(f"/v1/analyses/{ids[0]}/cancel", headers=team.headers())
    assert _submit(client, team, model, dataset).status_code == 202


def test_broker_down_is_503_and_leaves_no_analysis(
    engine: Engine,
    settings: Settings,
    team: Team,
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    monkeypatch.setattr(TaskQueue, "send", ORIGINAL_SEND)  # the real client
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as broken:
        r = _submit(broken, team, model, dataset)
        assert r.status_code == 503, r.text
        assert (
            r.json()["code"] == "broker_unavailable"
            and "try again" in r.json()["message"]
        )
        assert (
            broken.get("/v1/analyses", headers=team.headers("read")).json()["count"]
            == 0
        )
        r = broken.post(
            "/v1/datasets", headers=team.headers(), data={"spec": "sklearn:digits"}
        )
        assert r.status_code == 503
        assert (
            broken.get("/v1/datasets", headers=team.headers("read")).json()["count"]
            == 1
        )
        ready = broken.get("/v1/ready")
        assert ready.status_code == 503 and "broker" in ready.json()["message"]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(AnalysisRow)) == 0


def test_list_is_paginated_and_filtered(
    client: TestClient, engine: Engine, demo_result: dict
) -> None:
    team = make_team(engine, "big", max_queued_analyses=10)
    model, dataset = ready_model_and_dataset(client, engine, team)
    other_model, _ = ready_model_and_dataset(client, engine, team)
    ids = [_submit(client, team, model, dataset).json()["id"] for _ in range(3)]
    other = _submit(client, team, other_model, dataset).json()["id"]
    _finish(engine, ids[0], demo_result)
    read = team.headers("read")
    page = client.get("/v1/analyses?limit=2", headers=read).json()
    assert page["count"] == 4 and [a["id"] for a in page["data"]] == [other, ids[2]]
    page = client.get("/v1/analyses?limit=2&offset=2", headers=read).json()
    assert [a["id"] for a in page["data"]] == [ids[1], ids[0]]
    mine = client.get(f"/v1/analyses?model_id={model}", headers=read).json()
    assert mine["count"] == 3 and {a["id"] for a in mine["data"]} == set(ids)
    done = client.get(
        f"/v1/analyses?model_id={model}&status=succeeded", headers=read
    ).json()
    assert [a["id"] for a in done["data"]] == [ids[0]] and done["count"] == 1
    assert done["data"][0]["progress"] == 1.0
    r = client.get("/v1/analyses?status=sleeping", headers=read)
    assert r.status_code == 422
    assert client.get("/v1/analyses?offset=-1", headers=read).status_code == 422


def test_results_equal_the_saved_document(
    client: TestClient, engine: Engine, team: Team, demo_result: dict
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    analysis_id = _submit(client, team, model, dataset).json()["id"]
    read = team.headers("read")
    early = client.get(f"/v1/analyses/{analysis_id}/results", headers=read)
    assert early.status_code == 409 and early.json()["code"] == "no_results"
    _finish(engine, analysis_id, demo_result)
    r = client.get(f"/v1/analyses/{analysis_id}/results", headers=read)
    assert r.status_code == 200
    assert r.json() == demo_result
    assert list(r.json()) == list(demo_result)  # same key order as the CLI's file
    layers = client.get(f"/v1/analyses/{analysis_id}/layers", headers=read).json()
    assert layers == {
        "data": demo_result["layers"],
        "count": len(demo_result["layers"]),
    }
    necks = client.get(f"/v1/analyses/{analysis_id}/bottlenecks", headers=read).json()
    assert necks == {"data": demo_result["bottlenecks"], "count": 1}
    status = client.get(f"/v1/analyses/{analysis_id}", headers=read).json()
    assert status["status"] == "succeeded" and status["finished_at"] is not None


def test_cancel_marks_cancelled_and_revokes(
    client: TestClient, engine: Engine, team: Team, sent: list, demo_result: dict
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    analysis_id = _submit(client, team, model, dataset).json()["id"]
    r = client.post(f"/v1/analyses/{analysis_id}/cancel", headers=team.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert sent[-1] == {"name": "revoke", "args": [analysis_id]}
    again = client.post(f"/v1/analyses/{analysis_id}/cancel", headers=team.headers())
    assert again.status_code == 200  # idempotent
    done = _submit(client, team, model, dataset).json()["id"]
    _finish(engine, done, demo_result)
    r = client.post(f"/v1/analyses/{done}/cancel", headers=team.headers())
    assert r.status_code == 409 and r.json()["code"] == "finished"


def test_deleting_inputs_keeps_finished_analyses(
    client: TestClient, engine: Engine, team: Team, demo_result: dict
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    running = _submit(client, team, model, dataset).json()["id"]
    admin = team.headers("admin")
    r = client.delete(f"/v1/models/{model}", headers=admin)
    assert r.status_code == 409 and r.json()["code"] == "in_use"
    _finish(engine, running, demo_result)
    assert client.delete(f"/v1/models/{model}", headers=admin).status_code == 204
    assert client.delete(f"/v1/datasets/{dataset}", headers=admin).status_code == 204
    kept = client.get(f"/v1/analyses/{running}", headers=admin).json()
    assert kept["model_id"] is None and kept["dataset_id"] is None
    results = client.get(f"/v1/analyses/{running}/results", headers=admin)
    assert results.json() == demo_result


def test_artifacts_are_served_by_name_and_never_outside_their_folder(
    client: TestClient,
    engine: Engine,
    team: Team,
    demo_result: dict,
    settings: Settings,
    tmp_path,
) -> None:
    from service.storage import artifacts_dir

    model, dataset = ready_model_and_dataset(client, engine, team)
    analysis_id = _submit(client, team, model, dataset).json()["id"]
    read = team.headers("read")
    url = f"/v1/analyses/{analysis_id}/artifacts"
    assert client.get(f"{url}/fc2.png", headers=read).status_code == 409  # not done
    _finish(engine, analysis_id, demo_result)
    folder = artifacts_dir(settings.storage_dir, analysis_id)
    folder.mkdir(parents=True)
    (folder / "fc2.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (folder / "link.png").symlink_to(secret)
    r = client.get(f"{url}/fc2.png", headers=read)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == b"\x89PNG\r\n\x1a\nfake"
    for name in (
        "link.png",
        "missing.npy",
        "..%2fsecret.txt",
        "%2e%2e%2fx",
        ".hidden",
        "a..png",
    ):
        r = client.get(f"{url}/{name}", headers=read)
        assert r.status_code == 404, name
        assert "not yours" not in r.text


def test_a_config_the_worker_would_refuse_is_422_at_once_with_every_problem(
    client: TestClient, engine: Engine, team: Team, sent: list
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    sent.clear()
    bad = {
        "metrics": ["id", "entropy"],
        "samples": 1,
        "foo": 1,
        "id": {"methods": ["twonn", "nope"]},
        "mi": {"params": {"ksg": {"k": 0}}},
    }
    r = _submit(client, team, model, dataset, **bad)
    assert r.status_code == 422, r.text
    body = r.json()
    with pytest.raises(ContractError) as info:  # the CLI's and the worker's words
        parse_config(bad)
    assert body["code"] == "invalid_input"
    assert body["problems"] == info.value.problems and len(body["problems"]) == 5
    assert sent == []  # nothing was queued
    listed = client.get("/v1/analyses", headers=team.headers()).json()
    assert listed["count"] == 0


def test_unknown_architecture_config_keys_and_large_specs_are_422_at_once(
    client: TestClient, team: Team, sent: list
) -> None:
    r = upload_model(
        client, team, architecture_config='{"widths": [4, "x"], "depth": 3}'
    )
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert len(problems) == 2 and any("'depth'" in p for p in problems), problems
    r = client.post(
        "/v1/datasets",
        headers=team.headers(),
        data={"spec": "synthetic:linear?n=100000000&D=4096"},
    )
    assert r.status_code == 422 and r.json()["code"] == "too_large", r.text
    assert sent == []


def test_warnings_of_a_succeeded_run_are_in_the_api(
    client: TestClient, engine: Engine, team: Team, demo_result: dict
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    analysis = _submit(client, team, model, dataset).json()
    warned = {**demo_result, "warnings": ["probe: not run, the dataset has no labels"]}
    _finish(engine, analysis["id"], warned)
    got = client.get(f"/v1/analyses/{analysis['id']}", headers=team.headers()).json()
    assert got["status"] == "succeeded"
    assert got["warnings"] == ["probe: not run, the dataset has no labels"]
    results = client.get(
        f"/v1/analyses/{analysis['id']}/results", headers=team.headers()
    ).json()
    assert results["warnings"] == got["warnings"]
