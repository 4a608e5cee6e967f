"""Faults with real workers: SIGKILL mid-analysis, a task delivered twice, cancel.

Short leases, a short Redis visibility timeout and a one-second reconciler make the
recovery paths run in seconds; ``slow_s`` stretches the analysis so that it can be
hit while it runs.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.workers.conftest import CONFIG_FAST, wait_until

pytestmark = pytest.mark.slow

FAST_RECOVERY = {
    "lease_s": 2,
    "queued_grace_s": 1,
    "reconcile_interval_s": 1,
    "broker_visibility_timeout_s": 6,
    "task_time_limit_s": 5,
}
FINISHED = ("succeeded", "failed", "cancelled")


def _running_mid_way(stack, analysis_id: str) -> dict:
    return stack.wait_for(
        f"/v1/analyses/{analysis_id}",
        lambda a: a["status"] == "running" and a["stage"] in ("capture", "metrics"),
        timeout_s=60,
    )


def _kill(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_worker_killed_mid_analysis_is_run_again_and_succeeds(
    make_stack, inputs
) -> None:
    stack = make_stack(db="postgres", broker="redis", max_attempts=3, **FAST_RECOVERY)
    victim = stack.start_worker(slow_s=0.4)
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)

    _running_mid_way(stack, analysis_id)
    _kill(victim)
    assert stack.get(f"/v1/analyses/{analysis_id}")["status"] == "running"

    stack.start_worker(beat=True)
    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED
    )
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    layers = stack.get(f"/v1/analyses/{analysis_id}/layers")
    assert layers["count"] == len(result["layers"]) > 0  # one result set


def test_worker_killed_on_its_last_attempt_fails_as_worker_lost(
    make_stack, inputs
) -> None:
    """SQLite broker: a message taken by a killed worker never comes back by
    itself; the reconciler finds the expired lease and the claim gives up."""
    stack = make_stack(db="sqlite", broker="sqlite", max_attempts=1, **FAST_RECOVERY)
    victim = stack.start_worker(slow_s=0.4)
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)

    _running_mid_way(stack, analysis_id)
    _kill(victim)
    stack.start_worker(beat=True)
    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED
    )
    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_lost"
    assert "attempt" in done["error"]["message"]
    r = stack.http.get(f"/v1/analyses/{analysis_id}/results", headers=stack.headers)
    assert r.status_code == 409


def test_same_task_delivered_twice_to_two_workers_runs_once(make_stack, inputs) -> None:
    from service.queue import TaskQueue

    stack = make_stack(db="postgres", broker="redis")
    first = stack.start_worker(slow_s=0.2)
    second = stack.start_worker(slow_s=0.2)
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
    # The duplicate (a redelivery, a user retry): same task name and id.
    TaskQueue(stack.env["BOTTLELENS_BROKER_URL"]).run_analysis(analysis_id, "gpu")

    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED
    )
    assert done["status"] == "succeeded" and done["attempt"] == 1

    def logs() -> str:
        return stack.log_text(0) + stack.log_text(1)

    # Each delivery logs "Received task ..." and "Task ... succeeded in ...".
    wait_until(lambda: logs().count("run_analysis") >= 4, what="both deliveries")
    logs = logs()
    assert logs.count("attempt 1 by") == 1 and "attempt 2" not in logs
    # The other delivery found the live lease and comes back when it would end
    # (in case its holder was killed); by then the analysis has finished.
    assert "retry: Retry in" in logs
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    layers = stack.get(f"/v1/analyses/{analysis_id}/layers")
    assert layers["count"] == len(result["layers"])
    assert first.poll() is None and second.poll() is None


def test_cancel_stops_the_worker_and_the_status_stays_cancelled(
    make_stack, inputs
) -> None:
    stack = make_stack(db="postgres", broker="redis", lease_s=4)
    worker = stack.start_worker(slow_s=0.4)
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
    _running_mid_way(stack, analysis_id)

    r = stack.http.post(f"/v1/analyses/{analysis_id}/cancel", headers=stack.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    wait_until(
        lambda: "stopped (cancelled or lease lost)" in stack.log_text(0),
        what="the worker to stop",
    )
    after = stack.get(f"/v1/analyses/{analysis_id}")
    assert after["status"] == "cancelled" and after["error"] is None
    r = stack.http.get(f"/v1/analyses/{analysis_id}/results", headers=stack.headers)
    assert r.status_code == 409
    assert worker.poll() is None  # the worker itself goes on
