"""The tasks called in this process (no worker): idempotence, error codes, the
lease, the reconciler and the start-up check of the time limits."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from analysis.errors import (
    CheckpointMismatchError,
    DataError,
    InvalidInputError,
    UnsafeFileError,
)
from tests.workers.conftest import CONFIG_FAST, ROOT


def _ready_inputs(stack, inputs) -> tuple[str, str]:
    from workers.tasks import validate_upload

    model_id = stack.upload_model(inputs.weights)
    dataset_id = stack.upload_dataset(inputs.data)
    assert validate_upload.apply(args=("model", model_id)).get() == "ready"
    assert validate_upload.apply(args=("dataset", dataset_id)).get() == "ready"
    return model_id, dataset_id


def test_validate_upload_marks_ready_once(make_stack, inputs) -> None:
    from workers.tasks import validate_upload

    stack = make_stack(db="sqlite", broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    assert validate_upload.apply(args=("model", model_id)).get() == "skipped"
    assert validate_upload.apply(args=("dataset", "no-such-id")).get() == "skipped"
    dataset = stack.get(f"/v1/datasets/{dataset_id}")
    assert dataset["status"] == "ready" and dataset["n_samples"] == 600


def test_validate_upload_rejects_with_the_library_message(make_stack, tmp_path) -> None:
    from workers.tasks import validate_upload

    stack = make_stack(db="sqlite", broker="sqlite")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,0\n3,oops,1\n")
    dataset_id = stack.upload_dataset(bad)
    assert validate_upload.apply(args=("dataset", dataset_id)).get() == "rejected"
    dataset = stack.get(f"/v1/datasets/{dataset_id}")
    assert dataset["status"] == "rejected"
    assert dataset["error"]["code"] == "invalid_input"
    assert "'oops' is not a number" in dataset["error"]["message"]


class _Payload:
    """Unpickling this would create a file: the marker of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_zip_checkpoint_with_a_pickle_payload_is_rejected_never_run(
    make_stack, tmp_path
) -> None:
    """torch.save of an object whose unpickling opens a file: a zip the API cannot
    judge without torch, so the worker's weights_only load refuses it."""
    import torch

    from workers.tasks import validate_upload

    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pt"
    torch.save({"fc0.weight": _Payload(str(marker))}, bad)
    assert not marker.exists()
    stack = make_stack(db="sqlite", broker="sqlite")
    model_id = stack.upload_model(bad)
    assert validate_upload.apply(args=("model", model_id)).get() == "rejected"
    model = stack.get(f"/v1/models/{model_id}")
    assert model["status"] == "rejected"
    assert model["error"]["code"] == "unsafe_file"
    assert "state_dict" in model["error"]["message"]
    assert not marker.exists()


def test_run_analysis_twice_saves_one_result_set(make_stack, inputs) -> None:
    from workers.tasks import run_analysis

    stack = make_stack(db="postgres", broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    assert run_analysis.apply(args=(analysis_id,)).get() == "succeeded"
    assert run_analysis.apply(args=(analysis_id,)).get() == "skipped"
    done = stack.get(f"/v1/analyses/{analysis_id}")
    assert done["status"] == "succeeded" and done["attempt"] == 1
    layers = stack.get(f"/v1/analyses/{analysis_id}/layers")
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    assert layers["count"] == len(result["layers"]) > 0


@pytest.mark.parametrize(
    ("config", "code", "words"),
    [
        ({"layers": "nope*"}, "invalid_input", "match no layer"),
    ],
)
def test_a_domain_error_fails_the_analysis_with_code_and_message(
    make_stack, inputs, config, code, words
) -> None:
    from workers.tasks import run_analysis

    stack = make_stack(db="sqlite", broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, {"device": "cpu", **config})
    assert run_analysis.apply(args=(analysis_id,)).get() == "failed"
    failed = stack.get(f"/v1/analyses/{analysis_id}")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == code and words in failed["error"]["message"]


def test_error_codes_and_failures() -> None:
    from workers.tasks import _failure, error_code

    assert error_code(UnsafeFileError("x")) == "unsafe_file"
    assert error_code(CheckpointMismatchError("x")) == "checkpoint_mismatch"
    assert error_code(DataError("x")) == "data_error"
    assert error_code(InvalidInputError("x")) == "invalid_input"
    assert error_code(KeyError("x")) == "internal_error"
    code, message = _failure(SoftTimeLimitExceeded())
    assert code == "time_limit" and "BOTTLELENS_TASK_TIME_LIMIT_S" in message
    assert _failure(MemoryError())[0] == "out_of_memory"


def test_lease_renewal_refused_after_cancel_stops_the_work(make_stack, inputs) -> None:
    from service import store
    from service.db import session_scope
    from workers.lease import AnalysisStopped, Lease

    stack = make_stack(db="postgres", broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    with session_scope() as session:
        job = store.claim_analysis(
            session, analysis_id, "w1", lease_s=30, max_attempts=3
        )
    assert job is not None and job.dataset.format == "npz"

    lease = Lease(analysis_id, "w1", lease_s=30)
    lease.report("capture", 1, 2)
    assert lease.renew() is True
    running = stack.get(f"/v1/analyses/{analysis_id}")
    assert running["stage"] == "capture" and 0.05 < running["progress"] < 0.35
    stack.http.post(f"/v1/analyses/{analysis_id}/cancel", headers=stack.headers)
    assert lease.renew() is False
    with pytest.raises(AnalysisStopped):
        lease.report("metrics", 1, 4)
    assert stack.get(f"/v1/analyses/{analysis_id}")["status"] == "cancelled"


def test_lease_thread_keeps_the_lease_alive(make_stack, inputs) -> None:
    from service import store
    from service.db import session_scope
    from workers.lease import Lease

    stack = make_stack(db="sqlite", broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    with session_scope() as session:
        store.claim_analysis(session, analysis_id, "w1", lease_s=1, max_attempts=3)
    with Lease(analysis_id, "w1", lease_s=1):
        time.sleep(2.5)  # no progress report at all, as in one long estimate
        with session_scope() as session:
            assert (
                store.claim_analysis(
                    session, analysis_id, "w2", lease_s=1, max_attempts=3
                )
                is None
            )  # still held by w1


def test_reconcile_sends_stuck_analyses_again(make_stack, inputs, monkeypatch) -> None:
    from service import store
    from service.db import session_scope
    from workers import tasks

    sent: list[tuple[tuple[str, ...], str]] = []
    monkeypatch.setattr(
        tasks.run_analysis,
        "apply_async",
        lambda args, queue: sent.append((tuple(args), queue)),
    )
    stack = make_stack(db="postgres", broker="sqlite", queued_grace_s=1)
    model_id, dataset_id = _ready_inputs(stack, inputs)
    queued = stack.submit(model_id, dataset_id, CONFIG_FAST)  # cpu queue
    running = stack.submit(model_id, dataset_id, {"samples": 50})  # gpu queue
    with session_scope() as session:
        store.claim_analysis(session, running, "dead", lease_s=0.5, max_attempts=3)
    assert tasks.reconcile_now() == 0  # within the grace, lease alive
    time.sleep(1.2)
    assert tasks.reconcile_now() == 2
    assert sorted(sent) == sorted([((queued,), "cpu"), ((running,), "gpu")])
    assert tasks.reconcile_now() == 0  # stamped: not again within the grace
    with session_scope() as session:
        todo = store.analyses_to_reconcile(
            session, now=datetime.now(UTC), queued_grace_s=1
        )
    assert todo == []


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_reconcile_sends_uploads_left_validating_again(
    make_stack, inputs, monkeypatch, db
) -> None:
    from workers import tasks

    sent: list[tuple[tuple[str, ...], str]] = []
    monkeypatch.setattr(
        tasks.validate_upload,
        "apply_async",
        lambda args, queue: sent.append((tuple(args), queue)),
    )
    stack = make_stack(db=db, broker="sqlite", queued_grace_s=1)
    model_id = stack.upload_model(inputs.weights)  # no worker: its message is lost
    assert tasks.reconcile_now() == 0  # within the grace
    time.sleep(1.1)
    assert tasks.reconcile_now() == 1
    assert sent == [(("model", model_id), "cpu")]
    assert tasks.reconcile_now() == 0  # stamped: not again within the grace
    assert tasks.validate_upload(*sent[0][0]) == "ready"
    assert tasks.validate_upload("model", model_id) == "skipped"  # delivered twice


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_delivery_meeting_a_live_lease_comes_back_when_it_ends(
    make_stack, inputs, monkeypatch, db
) -> None:
    from celery.exceptions import Retry

    from service import store
    from service.db import session_scope
    from workers import tasks

    retries: list[dict] = []

    def retry(**options) -> Retry:
        retries.append(options)
        return Retry("back later")

    monkeypatch.setattr(tasks.run_analysis, "retry", retry)
    stack = make_stack(db=db, broker="sqlite")
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    with session_scope() as session:  # a worker that was then killed
        assert store.claim_analysis(
            session, analysis_id, "killed", lease_s=30, max_attempts=3
        )
    with pytest.raises(Retry):
        tasks.run_analysis(analysis_id)
    assert len(retries) == 1
    assert 29 <= retries[0]["countdown"] <= 30
    assert retries[0]["max_retries"] == tasks.LEASE_RETRIES
    assert tasks.lease_retry_countdown(analysis_id, tasks.LEASE_RETRIES) is None
    r = stack.http.post(f"/v1/analyses/{analysis_id}/cancel", headers=stack.headers)
    assert r.status_code == 200, r.text
    assert tasks.run_analysis(analysis_id) == "skipped"  # cancelled: dropped
    assert len(retries) == 1


def test_time_limit_at_or_above_visibility_timeout_is_refused_at_start(
    tmp_path,
) -> None:
    from service.settings import Settings
    from workers.celery_app import WorkerConfigError, make_celery

    with pytest.raises(WorkerConfigError, match="must be below"):
        make_celery(Settings(task_time_limit_s=600, broker_visibility_timeout_s=600))
    bad = {
        "BOTTLELENS_TASK_TIME_LIMIT_S": "7200",
        "BOTTLELENS_BROKER_VISIBILITY_TIMEOUT_S": "3600",
        "BOTTLELENS_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'b.sqlite'}",
    }
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **bad},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "BOTTLELENS_TASK_TIME_LIMIT_S (7200 s) must be below" in out.stderr


def test_overall_progress_is_monotone_and_bounded() -> None:
    from workers.lease import overall_progress

    steps = [("loading", 0, 1), ("profile", 0, 1), ("profile", 1, 1)]
    steps += [("capture", i, 4) for i in range(5)] + [("capture", 3, -1)]
    steps += [("metrics", i, 7) for i in range(8)]
    steps += [("cka", 1, 1), ("attribution", 0, 1), ("attribution", 1, 1)]
    values = [overall_progress(*s) for s in steps if s[2] > 0]
    assert values == sorted(values) and values[0] >= 0 and values[-1] < 1
    assert overall_progress("capture", 3, -1) == overall_progress("capture", 0, 1)


def test_each_queue_is_bound_to_its_own_exchange() -> None:
    """A task the workers send (the reconciler) lands in its queue only, as the
    API's sends do: a GPU analysis must never reach a CPU worker."""
    from workers.celery_app import QUEUES, ROUTES, app

    for name in QUEUES:
        queue = app.amqp.queues[name]
        assert (queue.exchange.name, queue.routing_key) == (name, name)
    route = app.amqp.router.route({"queue": "gpu"}, "bottlelens.run_analysis")
    assert route["queue"].exchange.name == "gpu"
    assert ROUTES["bottlelens.validate_upload"]["queue"] == "cpu"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1


def test_run_job_writes_attribution_maps_into_the_artifacts_dir(tmp_path) -> None:
    """Metrics added to the library reach the worker without worker changes: the
    attribution family gets the artifacts directory the task passes."""
    from analysis.demo import train_demo_model
    from service.schemas import DatasetRef, ModelRef
    from workers.tasks import run_job

    demo = train_demo_model(tmp_path / "demo", epochs=5, seed=0)
    model = ModelRef(
        path=str(demo.weights),
        architecture=demo.architecture,
        architecture_config=demo.config,
        format="safetensors",
        sha256="0" * 64,
        filename=demo.weights.name,
    )
    data = DatasetRef(path=None, spec="sklearn:digits", format="builtin", sha256=None)
    config = {
        "samples": 80,
        "device": "cpu",
        "metrics": ["id", "attribution", "cka"],
        "id": {"methods": ["twonn"]},
        "attribution": {"maps": 2, "steps": 8},
    }
    result = run_job(model, data, config, artifacts_dir=tmp_path / "art")
    (entry,) = result["attribution"]
    assert entry["error"] is None
    assert all((tmp_path / "art" / f).is_file() for f in entry["files"]["png"])
    assert result["similarity"]["matrix"] is not None
    assert result["config"]["device"] == "cpu"


def test_the_worker_checks_uploads_against_the_teams_limit(make_stack, inputs) -> None:
    """The settings' limit is below the files, the team's own is above: the API
    takes them and so does the worker; a limit lowered later rejects them."""
    from sqlalchemy import update

    from service import store
    from service.db import session_scope
    from service.models import TeamRow
    from workers.tasks import run_analysis, validate_upload

    size = inputs.weights.stat().st_size
    stack = make_stack(db="sqlite", broker="sqlite", max_upload_bytes=size - 1)
    with session_scope() as session:
        store.create_team(session, "big", max_upload_bytes=1024**2)
    with session_scope() as session:
        _, stack.token = store.create_api_key(session, "big", "read,submit")
    model_id = stack.upload_model(inputs.weights)
    dataset_id = stack.upload_dataset(inputs.data)
    later_id = stack.upload_model(inputs.weights)
    assert validate_upload.apply(args=("model", model_id)).get() == "ready"
    assert validate_upload.apply(args=("dataset", dataset_id)).get() == "ready"
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    assert run_analysis.apply(args=(analysis_id,)).get() == "succeeded"

    with session_scope() as session:
        session.execute(
            update(TeamRow).where(TeamRow.name == "big").values(max_upload_bytes=100)
        )
    assert validate_upload.apply(args=("model", later_id)).get() == "rejected"
    rejected = stack.get(f"/v1/models/{later_id}")
    assert rejected["error"]["code"] == "too_large", rejected
