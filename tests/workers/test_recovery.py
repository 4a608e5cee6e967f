"""A running analysis whose worker is gone is sent again by the next reconcile,
not after the queued grace: in the store, with Redis workers, and across a restart
of ``serve --embedded`` killed mid-analysis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.workers.conftest import CONFIG_FAST, ROOT, Stack, wait_until
from tests.workers.test_faults import FINISHED, _kill, _running_mid_way
from tests.workers.test_serve import _free_port, _processes_in, _user_env
from tests.workers.test_tasks import _ready_inputs

LONG_GRACE_S = 300  # the default: a running analysis must not wait for it
LEASE_S, RECONCILE_S = 3, 2
# The embedded service with the fault tests' slowed-down worker (tests.workers.
# slow_app) instead of workers.celery_app; everything else as `serve --embedded`.
SLOW_SERVE = (
    "import sys, workers.embedded as e\n"
    "command = e.worker_command\n"
    "def slow(*a, **k):\n"
    "    cmd = command(*a, **k)\n"
    "    cmd[cmd.index('workers.celery_app')] = 'tests.workers.slow_app'\n"
    "    return cmd\n"
    "e.worker_command = slow\n"
    "sys.exit(e.serve(port=int(sys.argv[1])))\n"
)


def test_expired_lease_is_sent_at_once_then_not_again(make_stack, inputs) -> None:
    from service import store
    from service.db import session_scope

    stack = make_stack(db="postgres", broker="sqlite", queued_grace_s=LONG_GRACE_S)
    model_id, dataset_id = _ready_inputs(stack, inputs)
    analysis_id = stack.submit(model_id, dataset_id, CONFIG_FAST)
    queued_too = stack.submit(model_id, dataset_id, CONFIG_FAST)
    with session_scope() as session:
        store.claim_analysis(session, analysis_id, "dead", lease_s=1, max_attempts=3)
    t0 = datetime.now(UTC)

    def todo(at: datetime) -> list[str]:
        with session_scope() as session:
            return [
                i
                for i, _ in store.analyses_to_reconcile(
                    session, now=at, queued_grace_s=LONG_GRACE_S
                )
            ]

    assert todo(t0) == []  # lease alive; the queued one is within its grace
    after = t0 + timedelta(seconds=1.5)
    assert todo(after) == [analysis_id]  # lease expired: at once, not in 300 s
    assert todo(after + timedelta(seconds=10)) == []  # sent: waits for a claim
    # A second worker claims it and dies too: sent again when that lease expires.
    later = after + timedelta(seconds=20)
    with session_scope() as session:
        job = store.claim_analysis(
            session, analysis_id, "dead2", lease_s=1, max_attempts=3, now=later
        )
    assert job is not None and job.attempt == 2
    assert todo(later + timedelta(seconds=0.5)) == []
    assert todo(later + timedelta(seconds=1.5)) == [analysis_id]
    # Sent but never claimed (the message was lost): again after the grace.
    grace_later = later + timedelta(seconds=1.5 + LONG_GRACE_S)
    assert sorted(todo(grace_later)) == sorted([analysis_id, queued_too])


@pytest.mark.slow
def test_worker_killed_is_replaced_within_a_lease_and_a_reconcile_on_redis(
    make_stack, inputs
) -> None:
    stack = make_stack(
        db="postgres",
        broker="redis",
        lease_s=LEASE_S,
        reconcile_interval_s=RECONCILE_S,
        queued_grace_s=LONG_GRACE_S,
    )
    victim = stack.start_worker(slow_s=0.3)
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
    _running_mid_way(stack, analysis_id)
    _kill(victim)
    killed = time.monotonic()

    stack.start_worker(beat=True)
    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED, 120
    )
    took = time.monotonic() - killed
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    run_s = stack.get(f"/v1/analyses/{analysis_id}/results")["provenance"]["duration_s"]
    # Worker start-up (a few s) is on top of the bound.
    assert took < LEASE_S + RECONCILE_S + run_s + 20, (took, run_s)


def _start_serve(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = _user_env() | {
        "PYTHONPATH": str(ROOT),
        "BOTTLELENS_LEASE_S": str(LEASE_S),
        "BOTTLELENS_RECONCILE_INTERVAL_S": str(RECONCILE_S),
        "BOTTLELENS_TEST_DELAY_S": "0.3",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", SLOW_SERVE, str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/v1/health", timeout=1).is_success
        except httpx.TransportError:
            return proc.poll() is not None

    wait_until(healthy, timeout_s=90, what="the embedded API")
    assert proc.poll() is None, log.read_text()


def _kill_all_in(folder: Path) -> None:
    for pid, _ in _processes_in(folder, with_pids=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_everything_in(folder: Path, serve: subprocess.Popen[bytes]) -> None:
    """SIGKILL the service, its worker and the worker's beat, as a crash would."""
    os.killpg(serve.pid, signal.SIGKILL)
    serve.wait()
    _kill_all_in(folder)
    wait_until(lambda: not _processes_in(folder), timeout_s=10, what="the kill")


@pytest.mark.slow
def test_serve_embedded_killed_mid_analysis_finishes_it_after_restart(
    tmp_path, inputs
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    procs = [_start_serve(tmp_path, port, log)]
    try:
        _wait_healthy(procs[0], base, log)
        token = (tmp_path / ".bottlelens" / "api_key").read_text().strip()
        with httpx.Client(base_url=base, timeout=30) as client:
            stack = Stack(env={}, tmp=tmp_path, client=client, token=token)  # type: ignore[arg-type]
            analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
            _running_mid_way(stack, analysis_id)
        _kill_everything_in(tmp_path, procs[0])

        procs.append(_start_serve(tmp_path, port, log))
        restarted = time.monotonic()
        _wait_healthy(procs[1], base, log)
        with httpx.Client(base_url=base, timeout=30) as client:
            stack = Stack(env={}, tmp=tmp_path, client=client, token=token)  # type: ignore[arg-type]
            done = stack.wait_for(
                f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED, 120
            )
            took = time.monotonic() - restarted
            assert done["status"] == "succeeded" and done["attempt"] == 2, done
            result = stack.get(f"/v1/analyses/{analysis_id}/results")
        run_s = result["provenance"]["duration_s"]
        # The service's own start-up (imports, migrations, the worker) comes on top.
        assert took < LEASE_S + RECONCILE_S + run_s + 25, (took, run_s)
        print(f"restart to succeeded: {took:.1f} s (run {run_s:.1f} s)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _kill_all_in(tmp_path)
