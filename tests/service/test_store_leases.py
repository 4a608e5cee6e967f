"""Leases, attempts and results of the worker-facing store functions, on both
databases, with real concurrent sessions where the race matters."""

from __future__ import annotations

import copy
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from service import store
from service.auth import Principal
from service.db import get_engine, session_scope
from service.models import AnalysisRow, LayerRow, MetricRow, utcnow
from service.schemas import AnalysisCreate
from tests.service.conftest import Team


def _queued(engine: Engine, team: Team, *, config: dict | None = None) -> str:
    """A queued analysis of a ready model and dataset, made through the store."""
    with session_scope(engine) as s:
        model = store.create_model(
            s,
            team.id,
            sha256="ab" * 32,
            size=10,
            format="safetensors",
            architecture="mlp",
            architecture_config={"widths": [4]},
            filename="m.st",
        )
        dataset = store.create_dataset(
            s, team.id, format="builtin", spec="sklearn:digits"
        )
    for kind, object_id in (("model", model.id), ("dataset", dataset.id)):
        with session_scope(engine) as s:
            store.mark_upload(s, kind, object_id, status="ready")
    key = Principal("k", team.id, frozenset({"submit"}), 1 << 20, 100)
    body = AnalysisCreate(model_id=model.id, dataset_id=dataset.id, config=config or {})
    with session_scope(engine) as s:
        return store.create_analysis(s, key, body, retry_after_s=1).id


def _claim(engine: Engine, analysis_id: str, worker: str, **kw: Any) -> Any:
    kw.setdefault("lease_s", 60)
    kw.setdefault("max_attempts", 3)
    with session_scope(engine) as s:
        return store.claim_analysis(s, analysis_id, worker, **kw)


def _status(engine: Engine, team: Team, analysis_id: str) -> Any:
    with session_scope(engine) as s:
        return store.get_analysis(s, team.id, analysis_id)


def test_claim_returns_the_job_and_bumps_attempt(
    engine: Engine, team: Team, tmp_path: Path
) -> None:
    analysis_id = _queued(engine, team, config={"samples": 50, "device": "cpu"})
    job = _claim(engine, analysis_id, "w1", storage_dir=tmp_path)
    assert job.attempt == 1 and job.team_id == team.id
    assert job.config == {"samples": 50, "device": "cpu"}
    assert job.model.path == str(tmp_path.resolve() / "objects" / "ab" / ("ab" * 32))
    assert job.model.architecture == "mlp" and job.model.format == "safetensors"
    assert job.dataset.spec == "sklearn:digits" and job.dataset.path is None
    now = _status(engine, team, analysis_id)
    assert (now.status, now.attempt, now.stage) == ("running", 1, "claimed")
    with session_scope(engine) as s:
        assert store.analyses_to_reconcile(s, now=utcnow(), queued_grace_s=0) == []


def test_two_concurrent_claims_one_wins(engine: Engine, team: Team) -> None:
    analysis_id = _queued(engine, team)
    barrier = threading.Barrier(6)
    results: list[Any] = []
    errors: list[BaseException] = []

    def claim(worker: str) -> None:
        try:
            barrier.wait()
            results.append(_claim(engine, analysis_id, worker))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(results) == 6 and len(winners) == 1
    assert _status(engine, team, analysis_id).attempt == 1


def test_live_lease_blocks_expired_lease_is_reclaimed(
    engine: Engine, team: Team
) -> None:
    analysis_id = _queued(engine, team)
    t0 = utcnow()
    assert _claim(engine, analysis_id, "w1", lease_s=30, now=t0) is not None
    assert _claim(engine, analysis_id, "w2", now=t0 + timedelta(seconds=10)) is None
    assert _claim(engine, analysis_id, "w1", now=t0 + timedelta(seconds=10)) is None
    with session_scope(engine) as s:  # the reconciler sees it only once expired
        assert (
            store.analyses_to_reconcile(
                s, now=t0 + timedelta(seconds=10), queued_grace_s=0
            )
            == []
        )
    with session_scope(engine) as s:
        late = t0 + timedelta(seconds=31)
        assert store.analyses_to_reconcile(s, now=late, queued_grace_s=0) == [
            (analysis_id, "gpu")
        ]
    job = _claim(engine, analysis_id, "w2", now=t0 + timedelta(seconds=31))
    assert job is not None and job.attempt == 2
    with session_scope(engine) as s:  # the first worker lost its lease: it stops
        assert not store.heartbeat(
            s, analysis_id, "w1", stage="x", progress=0.5, lease_s=30
        )
    with session_scope(engine) as s:
        assert store.heartbeat(
            s, analysis_id, "w2", stage="capture", progress=0.4, lease_s=30
        )
    now = _status(engine, team, analysis_id)
    assert (now.stage, now.progress, now.attempt) == ("capture", 0.4, 2)


def test_heartbeat_extends_the_lease_and_clamps_progress(
    engine: Engine, team: Team
) -> None:
    analysis_id = _queued(engine, team)
    t0 = utcnow()
    _claim(engine, analysis_id, "w1", lease_s=10, now=t0)
    with session_scope(engine) as s:
        assert store.heartbeat(
            s,
            analysis_id,
            "w1",
            stage="id",
            progress=7.0,
            lease_s=60,
            now=t0 + timedelta(seconds=5),
        )
    assert _claim(engine, analysis_id, "w2", now=t0 + timedelta(seconds=30)) is None
    assert _status(engine, team, analysis_id).progress == 1.0
    with session_scope(engine) as s, pytest.raises(ValueError, match="finite"):
        store.heartbeat(
            s, analysis_id, "w1", stage="id", progress=float("nan"), lease_s=1
        )


def test_attempts_past_the_maximum_fail_as_worker_lost(
    engine: Engine, team: Team
) -> None:
    analysis_id = _queued(engine, team)
    t = utcnow()
    for attempt in (1, 2):
        job = _claim(
            engine, analysis_id, f"w{attempt}", lease_s=1, max_attempts=2, now=t
        )
        assert job is not None and job.attempt == attempt
        t += timedelta(seconds=5)
    assert _claim(engine, analysis_id, "w3", max_attempts=2, now=t) is None
    now = _status(engine, team, analysis_id)
    assert now.status == "failed" and now.error.code == "worker_lost"
    assert "attempts" in now.error.message and now.attempt == 2
    assert _claim(engine, analysis_id, "w4", max_attempts=9) is None  # terminal


def test_cancelled_analysis_is_not_claimed_and_stops_its_worker(
    engine: Engine, team: Team
) -> None:
    queued = _queued(engine, team)
    running = _queued(engine, team)
    _claim(engine, running, "w1")
    for analysis_id in (queued, running):
        with session_scope(engine) as s:
            assert store.cancel_analysis(s, team.id, analysis_id).status == "cancelled"
    assert _claim(engine, queued, "w2") is None
    with session_scope(engine) as s:
        assert not store.heartbeat(s, running, "w1", stage="x", progress=0.1, lease_s=9)
    with session_scope(engine) as s:
        assert not store.save_results(s, running, "w1", _minimal())
    assert _status(engine, team, running).status == "cancelled"


def _minimal() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "model": {},
        "dataset": {},
        "config": {},
        "layers": [],
        "bottlenecks": [],
        "provenance": {},
    }


def test_save_results_twice_gives_one_result_set(
    engine: Engine, team: Team, demo_result: dict
) -> None:
    analysis_id = _queued(engine, team)
    _claim(engine, analysis_id, "w1")
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", demo_result)
    with session_scope(engine) as s:
        assert not store.save_results(s, analysis_id, "w2", demo_result)
    with session_scope(engine) as s:
        layers = s.scalar(select(func.count()).select_from(LayerRow))
        metrics = s.scalar(select(func.count()).select_from(MetricRow))
        assert layers == len(demo_result["layers"])
        assert metrics == sum(len(layer["metrics"]) for layer in demo_result["layers"])
        assert store.get_results(s, team.id, analysis_id) == demo_result
    now = _status(engine, team, analysis_id)
    assert (now.status, now.progress, now.stage) == ("succeeded", 1.0, "done")
    with session_scope(engine) as s:  # a late failure report changes nothing
        store.fail_analysis(s, analysis_id, code="oom", message="out of memory")
    assert _status(engine, team, analysis_id).status == "succeeded"


def test_concurrent_save_results_write_one_set(
    engine: Engine, team: Team, demo_result: dict
) -> None:
    analysis_id = _queued(engine, team)
    _claim(engine, analysis_id, "w1")
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def save(worker: str) -> None:
        barrier.wait()
        try:
            with session_scope(engine) as s:
                outcomes.append(store.save_results(s, analysis_id, worker, demo_result))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=save, args=(w,)) for w in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes, key=str) == [False, True]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(LayerRow)) == len(
            demo_result["layers"]
        )


def test_malformed_or_non_finite_results(
    engine: Engine, team: Team, demo_result: dict
) -> None:
    analysis_id = _queued(engine, team)
    _claim(engine, analysis_id, "w1")
    broken = copy.deepcopy(demo_result)
    del broken["layers"][2]["width"]
    with session_scope(engine) as s, pytest.raises(ValueError, match=r"layers\[2\]"):
        store.save_results(s, analysis_id, "w1", broken)
    assert _status(engine, team, analysis_id).status == "running"  # nothing written
    odd = copy.deepcopy(demo_result)
    odd["layers"][0]["metrics"][0].update(value=float("nan"), ci_high=float("inf"))
    odd["layers"][0]["metrics"][1]["params"]["scale"] = float("-inf")
    odd["similarity"] = {"cka": [[1.0, float("nan")]]}  # a section this version lacks
    odd["layers"][1]["mi_input"] = 0.5  # a layer field this version lacks
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", odd)
    with session_scope(engine) as s:
        got = store.get_results(s, team.id, analysis_id)
    first = got["layers"][0]["metrics"][0]
    assert first["value"] is None and first["ci_high"] is None
    assert first["reason"] == "non-finite value, ci_high"
    assert got["layers"][0]["metrics"][1]["params"]["scale"] is None
    assert got["similarity"] == {"cka": [[1.0, None]]}
    assert got["layers"][1]["mi_input"] == 0.5
    assert list(got)[-2:] == ["similarity", "attribution"]


def test_fail_analysis_and_reconcile_queued(engine: Engine, team: Team) -> None:
    first = _queued(engine, team)
    second = _queued(engine, team, config={"device": "cpu"})
    with session_scope(engine) as s:
        store.fail_analysis(s, first, code="invalid_config", message="unknown key 'x'")
    now = _status(engine, team, first)
    assert now.status == "failed" and now.error.code == "invalid_config"
    later = utcnow() + timedelta(seconds=100)
    with session_scope(engine) as s:
        assert store.analyses_to_reconcile(s, now=utcnow(), queued_grace_s=60) == []
    with session_scope(engine) as s:
        assert store.analyses_to_reconcile(s, now=later, queued_grace_s=60) == [
            (second, "cpu")
        ]
    with session_scope(engine) as s:  # stamped: not again within the grace
        assert store.analyses_to_reconcile(s, now=later, queued_grace_s=60) == []


def test_last_hidden_layer_metric_across_analyses(
    engine: Engine, team: Team, demo_result: dict
) -> None:
    ids = [_queued(engine, team) for _ in range(2)]
    with session_scope(engine) as s:
        model_id = s.scalar(
            select(AnalysisRow.model_id).where(AnalysisRow.id == ids[0])
        )
    for analysis_id in ids:  # both analyses of the same model (ids differ per call)
        with session_scope(engine) as s:
            s.get(AnalysisRow, analysis_id).model_id = model_id
        _claim(engine, analysis_id, "w")
        with session_scope(engine) as s:
            store.save_results(s, analysis_id, "w", demo_result)
    with session_scope(engine) as s:
        rows = store.layer_metric_across_analyses(s, team.id, model_id)
        named = store.layer_metric_across_analyses(
            s, team.id, model_id, layer="fc2", estimator="mle"
        )
    hidden = demo_result["layers"][-2]
    want = hidden["metrics"][0]["value"]
    assert {r.analysis_id for r in rows} == set(ids)
    assert all(r.layer == hidden["name"] and r.value == want for r in rows)
    fc2 = next(layer for layer in demo_result["layers"] if layer["name"] == "fc2")
    assert [r.value for r in named] == [fc2["metrics"][1]["value"]] * 2


def test_sqlite_connections_wait_and_write_immediately(sqlite_url: str) -> None:
    engine = get_engine(sqlite_url)
    with session_scope(engine) as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # A read first would make the transaction deferred: a later write could lose a
    # race with "database is locked" whatever the timeout, so it is refused.
    with session_scope(engine) as s, pytest.raises(RuntimeError, match="first"):
        s.execute(text("SELECT 1"))
        store.revoke_api_key(s, "0" * 16)


def test_lease_expires_in_only_under_a_live_lease(engine: Engine, team: Team) -> None:
    analysis_id = _queued(engine, team)
    t0 = utcnow()
    with session_scope(engine) as s:
        assert store.lease_expires_in(s, analysis_id, now=t0) is None  # queued
    _claim(engine, analysis_id, "w1", lease_s=30, now=t0)
    with session_scope(engine) as s:
        left = store.lease_expires_in(s, analysis_id, now=t0 + timedelta(seconds=10))
        expired = store.lease_expires_in(s, analysis_id, now=t0 + timedelta(seconds=30))
        assert store.lease_expires_in(s, "0" * 32, now=t0) is None  # gone
    assert left == pytest.approx(20.0, abs=1e-3) and expired is None
    with session_scope(engine) as s:
        store.cancel_analysis(s, team.id, analysis_id)
    with session_scope(engine) as s:
        assert store.lease_expires_in(s, analysis_id, now=t0) is None  # cancelled


def test_uploads_left_validating_are_reconciled_once_per_grace(
    engine: Engine, team: Team
) -> None:
    with session_scope(engine) as s:
        model = store.create_model(
            s,
            team.id,
            sha256="cd" * 32,
            size=10,
            format="safetensors",
            architecture="mlp",
            architecture_config={"widths": [4]},
            filename="m.st",
        )
        dataset = store.create_dataset(s, team.id, format="builtin", spec="x:y")
        done = store.create_dataset(s, team.id, format="builtin", spec="x:z")
    with session_scope(engine) as s:
        store.mark_upload(s, "dataset", done.id, status="ready")
    t0 = utcnow()
    later = t0 + timedelta(seconds=100)
    with session_scope(engine) as s:
        assert store.uploads_to_reconcile(s, now=t0, grace_s=60) == []
    with session_scope(engine) as s:
        assert store.uploads_to_reconcile(s, now=later, grace_s=60) == [
            ("model", model.id),
            ("dataset", dataset.id),
        ]
    with session_scope(engine) as s:  # stamped: not again within the grace
        assert store.uploads_to_reconcile(s, now=later, grace_s=60) == []
    with session_scope(engine) as s:
        store.mark_upload(s, "model", model.id, status="ready")
    with session_scope(engine) as s:  # validated meanwhile: only the dataset is left
        assert store.uploads_to_reconcile(
            s, now=later + timedelta(seconds=61), grace_s=60, limit=5
        ) == [("dataset", dataset.id)]
    with session_scope(engine) as s:
        assert store.get_upload_for_validation(s, "model", model.id) is None
