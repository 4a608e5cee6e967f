"""Comparing two analyses layer by layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.service.conftest import Team, make_team, ready_model_and_dataset
from tests.service.test_series import succeed


def _analysis(
    client: TestClient,
    engine: Engine,
    team: Team,
    result: dict[str, Any] | None,
    ids: tuple[str, str] | None = None,
) -> str:
    model, dataset = ids or ready_model_and_dataset(client, engine, team)
    r = client.post(
        "/v1/analyses",
        headers=team.headers(),
        json={"model_id": model, "dataset_id": dataset},
    )
    assert r.status_code == 202, r.text
    if result is not None:
        succeed(engine, r.json()["id"], result)
    return str(r.json()["id"])


def _row(layer: dict[str, Any], metric: str, estimator: str) -> dict[str, Any]:
    return next(
        m
        for m in layer["metrics"]
        if (m["metric"], m["estimator"]) == (metric, estimator)
    )


def _compare(client: TestClient, team: Team, a: str, b: str) -> Any:
    return client.get("/v1/compare", headers=team.headers(), params={"a": a, "b": b})


@pytest.fixture
def bigger(engine: Engine) -> Team:
    return make_team(engine, "bigger", max_queued_analyses=20)


def test_difference_relative_change_overlap_and_bottlenecks(
    client: TestClient, engine: Engine, bigger: Team, demo_result: dict[str, Any]
) -> None:
    b_result = copy.deepcopy(demo_result)
    fc0 = b_result["layers"][1]
    twonn = _row(fc0, "intrinsic_dimension", "twonn")
    a_value, a_low, a_high = twonn["value"], twonn["ci_low"], twonn["ci_high"]
    # b: twice the value, its interval entirely above a's
    twonn.update(value=2 * a_value, ci_low=a_high + 1.0, ci_high=a_high + 3.0)
    mle = _row(fc0, "intrinsic_dimension", "mle")
    mle["value"] += 0.25  # a small shift: intervals still overlap
    b_result["bottlenecks"] = [{**b_result["bottlenecks"][0], "layer": "fc1"}]
    ids = ready_model_and_dataset(client, engine, bigger)
    a = _analysis(client, engine, bigger, demo_result, ids)
    b = _analysis(client, engine, bigger, b_result, ids)

    r = _compare(client, bigger, a, b)
    assert r.status_code == 200, r.text
    body = r.json()
    rows = {
        (x["layer"], x["metric"], x["estimator"], x["occurrence"]): x
        for x in body["rows"]
    }
    n_rows = sum(len(la["metrics"]) for la in demo_result["layers"])
    assert len(rows) == n_rows  # every row is in both
    shares = [
        k[3] for k in rows if k[:3] == ("fc2", "attribution_topk_share", "conductance")
    ]
    assert shares == [0, 1, 2, 3]
    changed = rows[("fc0", "intrinsic_dimension", "twonn", 0)]
    assert changed["a"] == pytest.approx(a_value, rel=1e-12)
    assert changed["difference"] == pytest.approx(a_value, rel=1e-12)
    assert changed["relative_change"] == pytest.approx(1.0, rel=1e-12)
    assert changed["intervals_overlap"] is False
    shifted = rows[("fc0", "intrinsic_dimension", "mle", 0)]
    assert shifted["difference"] == pytest.approx(0.25, abs=1e-12)
    assert shifted["intervals_overlap"] is True
    same = rows[("act0", "intrinsic_dimension", "twonn", 0)]
    assert (same["difference"], same["relative_change"]) == (0.0, 0.0)
    assert body["bottlenecks_added"] == ["fc1"]
    assert body["bottlenecks_lost"] == ["fc2"]
    assert body["architecture"] == "mlp"
    assert a_low < a_high


def test_different_layers_or_architectures_are_422_naming_them(
    client: TestClient, engine: Engine, bigger: Team, demo_result: dict[str, Any]
) -> None:
    ids = ready_model_and_dataset(client, engine, bigger)
    a = _analysis(client, engine, bigger, demo_result, ids)
    fewer = copy.deepcopy(demo_result)
    fewer["layers"] = [la for la in fewer["layers"] if la["name"] != "act2"]
    fewer["model"]["architecture_config"] = {"widths": [4]}
    b = _analysis(client, engine, bigger, fewer, ids)
    r = _compare(client, bigger, a, b)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "not_comparable"
    problems = r.json()["problems"]
    assert problems[0].startswith("architecture:") and "widths" in problems[0]
    assert problems[1:] == ["layers only in a: act2"]


def test_unfinished_is_409_and_another_teams_is_404(
    client: TestClient,
    engine: Engine,
    bigger: Team,
    other_team: Team,
    demo_result: dict[str, Any],
) -> None:
    ids = ready_model_and_dataset(client, engine, bigger)
    a = _analysis(client, engine, bigger, demo_result, ids)
    queued = _analysis(client, engine, bigger, None, ids)
    theirs = _analysis(client, engine, other_team, demo_result)
    assert _compare(client, bigger, a, queued).status_code == 409
    assert _compare(client, bigger, a, theirs).status_code == 404
    assert _compare(client, other_team, a, theirs).status_code == 404
    assert _compare(client, bigger, a, "zz").status_code == 422
