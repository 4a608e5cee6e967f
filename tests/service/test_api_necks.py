"""``GET /v1/analyses/{id}/necks``: the stored necks section, team-scoped."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from contract.necks import QUESTIONS, Answer, NecksResult, NeckSummary, Source
from service import store
from service.db import session_scope
from tests.service.conftest import Team, ready_model_and_dataset


def _necks() -> dict[str, Any]:
    source = Source(layer="fc1", metric="intrinsic_dimension", estimator="twonn")
    compresses = Answer(
        question="compresses",
        metric="intrinsic_dimension",
        estimator="twonn",
        step="act0->fc1",
        value=-5.4,
        ci_low=-6.6,
        ci_high=-4.3,
        verdict="compresses",
        sources=[source],
    )
    answers = {q: Answer(question=q, reason="not run") for q in QUESTIONS}
    answers["compresses"] = compresses
    neck = NeckSummary(
        layer="fc1",
        block="",
        entering="act0",
        leaving="fc2",
        compression=[compresses],
        answers=answers,
    )
    section = NecksResult(method={"change_interval": "conservative"}, necks=[neck])
    return section.model_dump()


def _succeeded(
    client: TestClient, engine: Engine, team: Team, result: dict[str, Any]
) -> str:
    model, dataset = ready_model_and_dataset(client, engine, team)
    r = client.post(
        "/v1/analyses",
        headers=team.headers(),
        json={"model_id": model, "dataset_id": dataset, "config": {}},
    )
    analysis = r.json()["id"]
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis, "w1", result)
    return analysis


def test_the_necks_section_comes_back_as_saved(
    client: TestClient,
    engine: Engine,
    team: Team,
    other_team: Team,
    demo_result: dict,
) -> None:
    section = _necks()
    analysis = _succeeded(client, engine, team, {**demo_result, "necks": section})
    r = client.get(f"/v1/analyses/{analysis}/necks", headers=team.headers("read"))
    assert r.status_code == 200, r.text
    assert r.json() == section
    assert r.json()["necks"][0]["answers"]["compresses"]["verdict"] == "compresses"
    theirs = client.get(
        f"/v1/analyses/{analysis}/necks", headers=other_team.headers("read")
    )
    assert theirs.status_code == 404 and theirs.json()["code"] == "not_found"


def test_a_result_without_necks_is_404_and_an_unfinished_one_409(
    client: TestClient, engine: Engine, team: Team, demo_result: dict
) -> None:
    assert "necks" not in demo_result
    analysis = _succeeded(client, engine, team, demo_result)
    r = client.get(f"/v1/analyses/{analysis}/necks", headers=team.headers("read"))
    assert r.status_code == 404
    assert "necks in metrics" in r.json()["message"]
    model, dataset = ready_model_and_dataset(client, engine, team)
    queued = client.post(
        "/v1/analyses",
        headers=team.headers(),
        json={"model_id": model, "dataset_id": dataset, "config": {}},
    ).json()["id"]
    early = client.get(f"/v1/analyses/{queued}/necks", headers=team.headers("read"))
    assert early.status_code == 409 and early.json()["code"] == "no_results"
