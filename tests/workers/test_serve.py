"""The service commands of the CLI: db upgrade, teams, keys, serve --embedded and
quickstart, run as a user would (the last two as real processes on real ports)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.workers.conftest import clear_caches, wait_until
from workers.cli import app

runner = CliRunner()
QUICKSTART = [sys.executable, "-m", "workers.cli", "quickstart"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user_env() -> dict[str, str]:
    """The environment of a user who set nothing for bottlelens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTTLELENS_")}
    return env | {"OMP_NUM_THREADS": "1"}


def _processes_in(folder: Path, *, with_pids: bool = False) -> list:
    """Processes (other than this one) whose working directory is ``folder``: their
    command lines, or ``(pid, command line)`` pairs."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append((int(entry.name), cmdline.decode(errors="replace")))
        except OSError:
            continue
    return found if with_pids else [c for _, c in found]


@pytest.fixture
def sqlite_env(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("BOTTLELENS_DATABASE_URL", url)
    clear_caches()
    yield url
    clear_caches()


def test_db_upgrade_teams_and_keys(sqlite_env) -> None:
    from service import store
    from service.db import session_scope

    out = runner.invoke(app, ["db", "upgrade"])
    assert out.exit_code == 0, out.output
    assert runner.invoke(app, ["teams", "create", "lab"]).exit_code == 0
    again = runner.invoke(app, ["teams", "create", "lab"])
    assert again.exit_code == 2 and "exists already" in again.output

    out = runner.invoke(app, ["keys", "create", "--team", "lab", "--scopes", "read"])
    assert out.exit_code == 0, out.output
    token = out.stdout.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    with session_scope() as session:
        record = store.get_api_key(session, key_id)
    assert record is not None and record.scopes == ("read",) and not record.revoked

    bad = runner.invoke(app, ["keys", "create", "--team", "lab", "--scopes", "root"])
    assert bad.exit_code == 2 and "scopes must be some of" in bad.output
    nobody = runner.invoke(app, ["keys", "create", "--team", "nobody"])
    assert nobody.exit_code == 2 and "not found" in nobody.output

    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    with session_scope() as session:
        assert store.get_api_key(session, key_id).revoked  # type: ignore[union-attr]
    twice = runner.invoke(app, ["keys", "revoke", key_id])
    assert twice.exit_code == 2 and "revoked already" in twice.output


@pytest.mark.slow
def test_serve_embedded_prints_a_working_key_and_stops_on_ctrl_c(tmp_path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "serve",
                "--embedded",
                "--port",
                f"{port}",
            ],
            cwd=tmp_path,
            env=_user_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/v1/health", timeout=1).is_success
            except httpx.TransportError:
                return proc.poll() is not None

        wait_until(healthy, timeout_s=60, what="the embedded API")
        assert proc.poll() is None, log.read_text()
        key_file = tmp_path / ".bottlelens" / "api_key"
        token = key_file.read_text().strip()
        assert token in log.read_text()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        r = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["count"] == 0
        # Ready once the embedded worker's first heartbeat is in.
        wait_until(
            lambda: httpx.get(f"{base}/v1/ready", timeout=10).status_code == 200,
            timeout_s=60,
            what="a worker heartbeat",
        )
        assert httpx.get(f"{base}/v1/ready", timeout=10).json()["workers"] == 1
        wait_until(
            lambda: len(_processes_in(tmp_path)) >= 3,  # serve, worker, beat
            timeout_s=60,
            what="the worker",
        )

        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0, log.read_text()
        wait_until(lambda: not _processes_in(tmp_path), timeout_s=10, what="exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_quickstart_runs_the_rest_api_end_to_end_and_stops(tmp_path) -> None:
    port = _free_port()
    started = time.monotonic()
    try:
        out = subprocess.run(
            [*QUICKSTART, "--port", f"{port}", "--samples", "300"],
            cwd=tmp_path,
            env=_user_env() | {"COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        leftover = _processes_in(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert leftover == []
    text = out.stdout
    assert "per-layer intrinsic dimension" in text and "twonn" in text
    assert "bottlenecks" in text and "fc2" in text  # the demo's 8-wide layer
    assert f"http://127.0.0.1:{port}/v1/analyses/" in text and "/results" in text
    # the URLs and a curl line with the key come while the service still answers
    assert text.index("/report -o report.html") < text.index("stopping the service")
    assert 'curl -H "Authorization: Bearer bl_' in text
    report = tmp_path / ".bottlelens" / "quickstart-report.html"
    assert report.read_text().count('data-figure="') >= 5
    assert time.monotonic() - started < 300
