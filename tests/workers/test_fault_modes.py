"""The failure modes the other fault tests leave out: the hard time limit, database
connections terminated mid-run, a kill inside the save transaction, a full storage
disk, and connections across a fork.

Faults come from ``tests.workers.fault_app`` (hooks switched on by variables) and
from PostgreSQL itself (``pg_terminate_backend``); nothing in the production code
knows about them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text

from tests.workers.conftest import CONFIG_FAST, wait_until
from tests.workers.test_faults import FINISHED, _kill, _running_mid_way

FAULT_APP = "tests.workers.fault_app"


def _children(pid: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return {int(p) for p in out.split()}


def _terminate_backends(database_url: str) -> int:
    """``pg_terminate_backend`` on every other connection to this database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def _row_counts(analysis_id: str) -> dict[str, int]:
    from service.db import session_scope
    from service.models import AnalysisExportRow, BottleneckRow, LayerRow, MetricRow

    with session_scope() as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count()).where(table.analysis_id == analysis_id)
            )
            or 0
            for table in (LayerRow, MetricRow, BottleneckRow, AnalysisExportRow)
        }


def _expected_counts(result: dict[str, Any]) -> dict[str, int]:
    return {
        "layer": len(result["layers"]),
        "metric_value": sum(len(layer["metrics"]) for layer in result["layers"]),
        "bottleneck": len(result["bottlenecks"]),
        "analysis_export": 1,
    }


NO_ROWS = {"layer": 0, "metric_value": 0, "bottleneck": 0, "analysis_export": 0}


# --- the hard time limit --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("db", "broker"), [("postgres", "redis"), ("sqlite", "sqlite")]
)
def test_hard_time_limit_fails_a_runaway_analysis_and_replaces_the_process(
    make_stack, inputs, tmp_path, db, broker
) -> None:
    """The analysis swallows the soft limit (2 s); the hard one (4 s) kills the pool
    process, the main process records ``time_limit``, and a new pool process takes
    the next task. (A solo pool enforces no time limit at all: the embedded
    worker runs a prefork pool of one for that reason.)"""
    stack = make_stack(db=db, broker=broker, task_time_limit_s=4, lease_s=60)
    worker = stack.start_worker(
        app=FAULT_APP, pool="prefork", env={"BOTTLELENS_TEST_RUNAWAY": "1"}
    )
    before = _children(worker.pid)
    assert len(before) == 1, before
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)

    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED, 60
    )
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "time_limit", done
    assert done["attempt"] == 1  # failed at once, not after the lease ran out
    # Celery logs the kill from the main process; the line may reach the file a
    # moment after the status is written.
    wait_until(
        lambda: "Hard time limit (4" in stack.log_text(0),
        timeout_s=20,
        what="the hard-limit line in the worker log",
    )

    def replaced() -> bool:
        now = _children(worker.pid)
        return len(now) == 1 and now.isdisjoint(before)

    wait_until(replaced, what="a new pool process")  # killed after the failure
    # The new process works: it validates the next upload.
    model_id = stack.upload_model(inputs.weights)
    assert stack.wait_ready("models", model_id)["status"] == "ready"
    assert worker.poll() is None
    assert _row_counts(analysis_id) == NO_ROWS


def test_the_embedded_worker_has_a_pool_that_enforces_time_limits(tmp_path) -> None:
    """A solo pool runs tasks in the worker's own process and enforces no time
    limit; the embedded worker must not use one (the test above runs its pool)."""
    from workers.embedded import Embedded, worker_command

    cmd = worker_command(Embedded(tmp_path))
    assert cmd[cmd.index("--pool") + 1] == "prefork"
    assert cmd[cmd.index("-c") + 1] == "1"


# --- database connections terminated --------------------------------------------


@pytest.mark.slow
def test_terminated_database_connections_are_survived_by_api_and_worker(
    make_stack, inputs, tmp_path
) -> None:
    """All backends are terminated twice: mid-analysis (the worker's heartbeat and
    the API reconnect through pre-ping) and inside the save transaction (its commit
    fails; the save is tried again and writes one result set)."""
    mark = tmp_path / "saving"
    stack = make_stack(db="postgres", broker="redis", lease_s=8)
    url = stack.env["BOTTLELENS_DATABASE_URL"]
    stack.start_worker(
        app=FAULT_APP,
        env={
            "BOTTLELENS_TEST_DELAY_S": "0.3",
            "BOTTLELENS_TEST_SAVE_SLEEP_S": "3",
            "BOTTLELENS_TEST_MARK": str(mark),
        },
    )
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
    _running_mid_way(stack, analysis_id)

    assert _terminate_backends(url) >= 1
    assert stack.get(f"/v1/analyses/{analysis_id}")["status"] == "running"
    wait_until(mark.exists, timeout_s=90, what="the save transaction")
    assert _terminate_backends(url) >= 1

    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED, 60
    )
    assert done["status"] == "succeeded" and done["attempt"] == 1, done
    assert "saving failed, again in" in stack.log_text(0)
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    assert _row_counts(analysis_id) == _expected_counts(result)


# --- a kill inside the save transaction -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("db", "broker"), [("postgres", "redis"), ("sqlite", "sqlite")]
)
def test_kill_inside_the_save_transaction_leaves_no_half_result(
    make_stack, inputs, tmp_path, db, broker
) -> None:
    mark = tmp_path / "saving"
    stack = make_stack(
        db=db,
        broker=broker,
        lease_s=2,
        reconcile_interval_s=1,
        queued_grace_s=1,
        broker_visibility_timeout_s=6,
        task_time_limit_s=5,
    )
    victim = stack.start_worker(
        app=FAULT_APP,
        env={"BOTTLELENS_TEST_SAVE_SLEEP_S": "60", "BOTTLELENS_TEST_MARK": str(mark)},
    )
    analysis_id = stack.submit_when_ready(inputs, CONFIG_FAST)
    wait_until(mark.exists, timeout_s=90, what="the save transaction")
    # The rows are written (flushed) and the transaction is open: kill it now.
    _kill(victim)
    running = stack.get(f"/v1/analyses/{analysis_id}")
    assert running["status"] == "running", running
    r = stack.http.get(f"/v1/analyses/{analysis_id}/results", headers=stack.headers)
    assert r.status_code == 409
    assert _row_counts(analysis_id) == NO_ROWS

    stack.start_worker(beat=True)
    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}", lambda a: a["status"] in FINISHED, 90
    )
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    result = stack.get(f"/v1/analyses/{analysis_id}/results")
    assert _row_counts(analysis_id) == _expected_counts(result)
    assert stack.get(f"/v1/analyses/{analysis_id}/layers")["count"] == len(
        result["layers"]
    )


# --- a full disk ----------------------------------------------------------------


@contextlib.contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``folder`` when this process may mount one (root);
    False otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("where", ["tmpfs", "patched"])
def test_a_full_storage_disk_answers_507_and_keeps_nothing(
    make_stack, tmp_path, monkeypatch, where
) -> None:
    """A 2 MB upload into a 1 MB tmpfs (or, without root, a write that raises
    ENOSPC): 507 with the error body, no file left in the storage folder, no row."""
    storage = tmp_path / "storage"
    with _small_disk(storage, "1m") as mounted:
        if where == "tmpfs" and not mounted:
            pytest.skip("cannot mount a tmpfs here (not root)")
        if where == "patched":
            from service import storage as storage_module

            def full(self: Any, data: bytes, start: int, end: int) -> None:
                if self.file is not None:
                    raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(storage_module._Parts, "data", full)
        stack = make_stack(db="sqlite", broker="sqlite")
        big = tmp_path / "big.safetensors"
        big.write_bytes(b"\0" * (2 * 1024 * 1024))
        with big.open("rb") as f:
            r = stack.http.post(
                "/v1/models",
                headers=stack.headers,
                files={"file": (big.name, f, "application/octet-stream")},
                data={"architecture": "mlp", "architecture_config": "{}"},
            )
        assert r.status_code == 507, r.text
        assert r.json()["code"] == "insufficient_storage"
        assert set(r.json()) == {"code", "message", "problems"}
        assert _files_under(storage) == []
        assert stack.get("/v1/models")["count"] == 0


# --- fork safety ----------------------------------------------------------------


def _backend_pid_in_child(reset: bool) -> tuple[int, int]:
    """(parent's backend pid, child's backend pid): the child is forked with the
    parent's pooled connection checked in, then runs the worker's
    ``worker_process_init`` handler (``reset``) or not, and queries."""
    from service.db import get_engine

    engine = get_engine()
    with engine.connect() as conn:
        parent_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any cleanup
        code = 0
        try:
            os.close(read)
            if reset:
                from workers.celery_app import _reset_after_fork

                _reset_after_fork()
            with engine.connect() as conn:
                child_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            os.write(write, str(child_pid).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and child
    with engine.connect() as conn:  # the parent's own connection still works
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() > 0
    return parent_pid, int(child)


def test_a_forked_worker_process_opens_its_own_database_connection(
    make_stack,
) -> None:
    """Without the ``worker_process_init`` handler the child takes the parent's
    pooled connection (same backend); with it, a new one."""
    make_stack(db="postgres", broker="redis")
    parent, child = _backend_pid_in_child(reset=False)
    assert child == parent  # what the handler prevents: one socket, two processes
    from service.db import get_engine

    get_engine().dispose()  # the shared socket may be in any state now
    parent, child = _backend_pid_in_child(reset=True)
    assert child != parent


def test_prefork_processes_use_their_own_connections(make_stack, inputs) -> None:
    """A real prefork worker: its pool process's backend is not its main
    process's (the main process connects first, at start: the reconciler)."""
    stack = make_stack(db="postgres", broker="redis")
    worker = stack.start_worker(pool="prefork")
    model_id = stack.upload_model(inputs.weights)  # validated by the pool process
    stack.wait_ready("models", model_id)
    (child,) = _children(worker.pid)
    url = stack.env["BOTTLELENS_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, client_port FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    ports = {port for _, port in rows}
    mains, children = _sockets_of(worker.pid), _sockets_of(child)
    assert mains & ports and children & ports, (rows, mains, children)
    assert not mains & children


def _sockets_of(pid: int) -> set[int]:
    """Local TCP ports of ``pid``'s sockets to 127.0.0.1:5432."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, inode = parts[1], parts[2], parts[9]
        if inode in inodes and remote.endswith(":1538"):  # port 5432
            ports.add(int(local.split(":")[1], 16))
    return ports
