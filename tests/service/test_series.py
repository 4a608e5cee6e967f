"""Model series over HTTP: checkpoints, one analysis each (deduplicated), and the
trajectory of a metric over steps (or tags), on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from contract.config import parse_config
from contract.tasks import RUN_ANALYSIS
from service import store
from service.db import session_scope
from tests.service.conftest import (
    Team,
    make_team,
    ready_model_and_dataset,
    safetensors_bytes,
)


def scaled_result(demo: dict[str, Any], factor: float) -> dict[str, Any]:
    """The demo result with every metric value (and interval) times ``factor``."""
    result = copy.deepcopy(demo)
    for layer in result["layers"]:
        for row in layer["metrics"]:
            for key in ("value", "ci_low", "ci_high"):
                if row[key] is not None:
                    row[key] *= factor
    return result


def succeed(engine: Engine, analysis_id: str, result: dict[str, Any]) -> None:
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis_id, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", result)


def new_series(client: TestClient, team: Team, name: str = "run") -> str:
    r = client.post(
        "/v1/series",
        headers=team.headers(),
        json={"name": name, "architecture": "mlp", "architecture_config": {}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def checkpoint(
    client: TestClient,
    engine: Engine,
    team: Team,
    series_id: str,
    n: int,
    **place: str,
) -> str:
    """Upload weights with ``n`` floats (distinct n: distinct sha256), mark ready."""
    r = client.post(
        f"/v1/series/{series_id}/checkpoints",
        headers=team.headers(),
        files={"file": ("c.safetensors", safetensors_bytes(n))},
        data=place,
    )
    assert r.status_code == 201, r.text
    model_id = str(r.json()["model"]["id"])
    with session_scope(engine) as s:
        store.mark_upload(s, "model", model_id, status="ready")
    return model_id


def analyse(
    client: TestClient, team: Team, series_id: str, dataset: str, **config: Any
) -> Any:
    return client.post(
        f"/v1/series/{series_id}/analyses",
        headers=team.headers(),
        json={"dataset_id": dataset, "config": config},
    )


def _fc0(demo: dict[str, Any], metric: str, estimator: str) -> float:
    layer = next(la for la in demo["layers"] if la["name"] == "fc0")
    row = next(
        m
        for m in layer["metrics"]
        if (m["metric"], m["estimator"]) == (metric, estimator)
    )
    return float(row["value"])


def test_five_checkpoints_give_a_trajectory_in_step_order_with_dedup(
    client: TestClient,
    engine: Engine,
    sent: list[dict[str, Any]],
    demo_result: dict[str, Any],
) -> None:
    team = make_team(engine, "big", max_queued_analyses=20)
    _, dataset = ready_model_and_dataset(client, engine, team)
    sid = new_series(client, team)
    steps = [30, 10, 50, 20, 40]  # uploaded out of order
    models = {
        step: checkpoint(client, engine, team, sid, n=2 + i, step=str(step))
        for i, step in enumerate(steps)
    }
    r = analyse(client, team, sid, dataset)
    assert r.status_code == 202, r.text
    runs = r.json()["data"]
    assert [x["step"] for x in runs] == [10, 20, 30, 40, 50]
    assert not any(x["reused"] for x in runs)
    analyses = {x["step"]: x["analysis_id"] for x in runs}
    assert len(set(analyses.values())) == 5

    def runs_sent() -> list[str]:
        return [c["args"][0] for c in sent if c["name"] == RUN_ANALYSIS]

    assert sorted(runs_sent()) == sorted(analyses.values())

    # The same config, spelled out complete: every checkpoint reused, nothing sent.
    complete = parse_config({}).to_dict()
    again = analyse(client, team, sid, dataset, **complete).json()["data"]
    assert [(x["analysis_id"], x["reused"]) for x in again] == [
        (analyses[s], True) for s in sorted(steps)
    ]
    # A sixth checkpoint with the weights of step 10 reuses its analysis.
    checkpoint(client, engine, team, sid, n=2 + steps.index(10), step="60")
    sixth = analyse(client, team, sid, dataset).json()["data"][-1]
    assert (sixth["step"], sixth["analysis_id"], sixth["reused"]) == (
        60,
        analyses[10],
        True,
    )
    assert sorted(runs_sent()) == sorted(analyses.values())  # nothing run twice
    # Another config is another analysis for every checkpoint.
    other = analyse(client, team, sid, dataset, metrics=["id", "mi"]).json()["data"]
    assert [x["reused"] for x in other] == [False] * 5 + [True]  # 60 has 10's weights
    assert other[-1]["analysis_id"] == other[0]["analysis_id"]
    assert len(runs_sent()) == 10

    for step, analysis_id in analyses.items():  # value = step / 10 x the demo's
        succeed(engine, analysis_id, scaled_result(demo_result, step / 10))
    r = client.get(
        f"/v1/series/{sid}/trajectory",
        headers=team.headers(),
        params={
            "metric": "intrinsic_dimension",
            "estimator": "twonn",
            "dataset_id": dataset,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    fc0 = next(line for line in body["layers"] if line["layer"] == "fc0")
    base = _fc0(demo_result, "intrinsic_dimension", "twonn")
    assert [p["step"] for p in fc0["points"]] == [10, 20, 30, 40, 50, 60]
    assert [p["model_id"] for p in fc0["points"][:5]] == [
        models[s] for s in sorted(steps)
    ]
    assert [p["value"] for p in fc0["points"]] == pytest.approx(
        [base * k for k in (1, 2, 3, 4, 5, 1)], rel=1e-12
    )
    assert [line["index"] for line in body["layers"]] == sorted(
        line["index"] for line in body["layers"]
    )
    plane = {(p["layer"], p["estimator"]): p for p in body["information_plane"]}
    assert {e for (_, e) in plane} == {"ksg", "gaussian", "binning", "probe"}
    path = plane[("fc0", "ksg")]["points"]
    assert [p["step"] for p in path] == [10, 20, 30, 40, 50, 60]
    base_in = _fc0(demo_result, "mi_input", "ksg")
    base_out = _fc0(demo_result, "mi_output", "ksg")
    assert [p["mi_input"] for p in path[:5]] == pytest.approx(
        [base_in * k for k in (1, 2, 3, 4, 5)], rel=1e-12
    )
    assert path[2]["mi_output"] == pytest.approx(base_out * 3, rel=1e-12)
    # probe estimates I(T;Y) only: its path has no I(X;T)
    assert all(p["mi_input"] is None for p in plane[("fc0", "probe")]["points"])


def test_a_width_series_is_ordered_by_tag(
    client: TestClient, engine: Engine, team: Team
) -> None:
    sid = new_series(client, team, "necks")
    for n, tag in ((2, "16"), (3, "4"), (4, "8.5")):
        checkpoint(client, engine, team, sid, n=n, step="1000", tag=tag)
    r = client.get(
        f"/v1/series/{sid}/checkpoints", headers=team.headers(), params={"order": "tag"}
    )
    assert [c["tag"] for c in r.json()["data"]] == [4.0, 8.5, 16.0]
    assert (
        client.get(f"/v1/series/{sid}", headers=team.headers()).json()["checkpoints"]
        == 3
    )
    with session_scope(engine) as s:
        latest = store.latest_checkpoint(s, team.id, sid)
    assert latest == r.json()["data"][0]["model"]["id"] or latest is not None


def test_latest_checkpoint_is_the_highest_step(
    client: TestClient, engine: Engine, team: Team
) -> None:
    sid = new_series(client, team)
    ids = {
        step: checkpoint(client, engine, team, sid, n=2 + step, step=str(step))
        for step in (3, 7, 5)
    }
    with session_scope(engine) as s:
        assert store.latest_checkpoint(s, team.id, sid) == ids[7]


def test_checkpoint_form_errors_list_every_problem(
    client: TestClient, engine: Engine, team: Team
) -> None:
    sid = new_series(client, team)
    r = client.post(
        f"/v1/series/{sid}/checkpoints",
        headers=team.headers(),
        files={"file": ("c.safetensors", safetensors_bytes())},
        data={"epoch": "-1", "tag": "nan"},
    )
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert [p.split(":")[0] for p in problems] == ["epoch", "step", "tag"]


def test_series_name_is_unique_in_a_team_and_architecture_checked(
    client: TestClient, team: Team, other_team: Team
) -> None:
    new_series(client, team, "a")
    r = client.post(
        "/v1/series", headers=team.headers(), json={"name": "a", "architecture": "mlp"}
    )
    assert r.status_code == 409 and r.json()["code"] == "name_taken"
    new_series(client, other_team, "a")  # another team may use the name
    r = client.post(
        "/v1/series", headers=team.headers(), json={"name": "b", "architecture": "nope"}
    )
    assert r.status_code == 422, r.text


def test_another_teams_series_is_404_everywhere(
    client: TestClient, engine: Engine, team: Team, other_team: Team
) -> None:
    sid = new_series(client, other_team)
    checkpoint(client, engine, other_team, sid, n=2, step="1")
    _, dataset = ready_model_and_dataset(client, engine, team)
    h = team.headers()
    for r in (
        client.get(f"/v1/series/{sid}", headers=h),
        client.get(f"/v1/series/{sid}/checkpoints", headers=h),
        client.post(
            f"/v1/series/{sid}/checkpoints",
            headers=h,
            files={"file": ("c.safetensors", safetensors_bytes())},
            data={"step": "1"},
        ),
        analyse(client, team, sid, dataset),
        client.get(
            f"/v1/series/{sid}/trajectory",
            headers=h,
            params={"metric": "m", "estimator": "e", "dataset_id": dataset},
        ),
        client.delete(f"/v1/series/{sid}", headers=team.headers("admin")),
    ):
        assert r.status_code == 404, r.text
    assert client.get("/v1/series", headers=h).json()["count"] == 0


def test_deleting_a_series_keeps_its_checkpoints_as_models(
    client: TestClient, engine: Engine, team: Team
) -> None:
    sid = new_series(client, team)
    model = checkpoint(client, engine, team, sid, n=2, step="1")
    assert (
        client.delete(f"/v1/series/{sid}", headers=team.headers("admin")).status_code
        == 204
    )
    assert client.get(f"/v1/series/{sid}", headers=team.headers()).status_code == 404
    assert client.get(f"/v1/models/{model}", headers=team.headers()).status_code == 200


def test_a_fan_out_over_the_queue_limit_creates_nothing(
    client: TestClient, engine: Engine, sent: list[dict[str, Any]]
) -> None:
    small = make_team(engine, "small", max_queued_analyses=2)
    _, dataset = ready_model_and_dataset(client, engine, small)
    sid = new_series(client, small)
    for step in (1, 2, 3):
        checkpoint(client, engine, small, sid, n=1 + step, step=str(step))
    r = analyse(client, small, sid, dataset)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"]
    listed = client.get("/v1/analyses", headers=small.headers()).json()
    assert listed["count"] == 0
    assert not [c for c in sent if c["name"] == RUN_ANALYSIS]


def test_a_checkpoint_may_bring_its_own_config_of_the_architecture(
    client: TestClient, team: Team
) -> None:
    """A series of neck widths: one architecture, each checkpoint its own widths
    (ordered by tag); a config the architecture refuses is a 422 at once."""
    series_id = new_series(client, team, "widths")

    def upload(config: str, tag: str) -> Any:
        return client.post(
            f"/v1/series/{series_id}/checkpoints",
            headers=team.headers(),
            files={"file": ("c.safetensors", safetensors_bytes(int(tag) + 1))},
            data={"step": tag, "tag": tag, "architecture_config": config},
        )

    for width in (2, 8):
        r = upload(f'{{"widths": [32, {width}, 32]}}', str(width))
        assert r.status_code == 201, r.text
        assert r.json()["model"]["architecture_config"] == {"widths": [32, width, 32]}
        assert r.json()["model"]["architecture"] == "mlp"
    r = upload('{"widths": [32, 0, 32], "depth": 2}', "4")
    assert r.status_code == 422 and len(r.json()["problems"]) == 2, r.text
    listed = client.get(
        f"/v1/series/{series_id}/checkpoints?order=tag", headers=team.headers()
    ).json()
    assert [c["tag"] for c in listed["data"]] == [2.0, 8.0]
