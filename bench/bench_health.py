"""Latency of ``GET /v1/health`` while the database routes are busy.

Starts the API (uvicorn, ``service.main:create_app``, one process) on SQLite in a
temporary folder on a free loopback port, makes a team with a key and a few hundred
analyses rows, then runs at once:

- ``--readers`` (50) clients, each sending ``--requests`` (40) ``GET /v1/health``,
  one every ``--interval`` (0.1 s) at most, as probes poll (``--interval 0``: back
  to back, which measures throughput more than latency);
- ``--db-clients`` (50) clients in a second process, each sending
  ``GET /v1/analyses?limit=50`` with the key until the health readers are done
  (at most ``--db-requests`` each).

Prints p50, p90, p99 and max of both, and the throughput. Loopback only; reports,
asserts nothing. The target is a health p99 under 100 ms: a load balancer must not
take a busy API for a dead one.

Usage::

    python bench/bench_health.py
    python bench/bench_health.py --readers 50 --requests 40 --db-clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prepare(root: Path, analyses: int) -> tuple[dict[str, str], str]:
    """Settings in the environment, a migrated database, a key and some rows."""
    env = {
        "BOTTLELENS_DATABASE_URL": f"sqlite:///{root / 'db.sqlite'}",
        "BOTTLELENS_BROKER_URL": f"sqla+sqlite:///{root / 'broker.sqlite'}",
        "BOTTLELENS_STORAGE_DIR": str(root / "storage"),
    }
    os.environ.update(env)
    from service import store
    from service.db import get_engine, session_scope, upgrade

    upgrade(env["BOTTLELENS_DATABASE_URL"])
    engine = get_engine(env["BOTTLELENS_DATABASE_URL"])
    with session_scope(engine) as s:
        team = store.create_team(s, "bench")
        _, token = store.create_api_key(s, "bench", "read,submit")
    _add_analyses(engine, team.id, analyses)
    engine.dispose()
    return env, token


def _add_analyses(engine: Any, team_id: str, n: int) -> None:
    from sqlalchemy import insert

    from service.models import AnalysisRow, DatasetRow, ModelRow

    # Rows straight in: through the API they would need a broker and a worker.
    with engine.begin() as conn:
        conn.execute(
            insert(ModelRow).values(
                id="m" * 32, team_id=team_id, sha256="0" * 64, size=1,
                format="safetensors", architecture="mlp", architecture_config={},
                status="ready",
            )
        )  # fmt: skip
        conn.execute(
            insert(DatasetRow).values(
                id="d" * 32, team_id=team_id, format="builtin", spec="sklearn:digits",
                status="ready",
            )
        )  # fmt: skip
        conn.execute(
            insert(AnalysisRow),
            [
                {
                    "id": f"{i:032x}",
                    "team_id": team_id,
                    "model_id": "m" * 32,
                    "dataset_id": "d" * 32,
                    "config": {"samples": 100},
                    "queue": "cpu",
                    "status": "succeeded",
                }
                for i in range(n)
            ],
        )


def start_api(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the API did not start in 30 s")


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """One GET on a keep-alive connection; the status. A minimal HTTP/1.1 client
    keeps the clients' own CPU time (httpx: about 1 ms a request) out of the
    figures, on a machine where clients and server share two cores."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def _clients(
    port: int,
    path: str,
    n: int,
    requests: int,
    token: str | None,
    stop: Any,
    interval_s: float = 0.0,
) -> tuple[list[float], int]:
    """``n`` clients, each on its own connection, sending up to ``requests`` GETs
    one after the other, a new one every ``interval_s`` at most."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    latencies: list[float] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(requests):
                if stop is not None and stop.is_set():
                    return
                t0 = time.perf_counter()
                try:
                    ok = await _get(reader, writer, request) == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                elapsed = time.perf_counter() - t0
                latencies.append(elapsed)
                failed += not ok
                await asyncio.sleep(max(0.0, interval_s - elapsed))
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return latencies, failed


def _db_load(
    port: int, path: str, n: int, requests: int, token: str, stop: Any, out: Any
) -> None:
    try:
        out.put(asyncio.run(_clients(port, path, n, requests, token, stop)))
    except BaseException:
        out.put(([], -1))
        raise


def _row(name: str, lat: list[float], failed: int, wall: float) -> str:
    ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return (
        f"| {name} | {len(ms)} | {failed} | {q[49]:.1f} | {q[89]:.1f} | {q[98]:.1f} "
        f"| {ms[-1]:.1f} | {len(ms) / wall:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument(
        "--interval", type=float, default=0.1,
        help="seconds between two requests of one health reader (0: back to back)",
    )  # fmt: skip
    parser.add_argument("--db-clients", type=int, default=50)
    parser.add_argument("--db-requests", type=int, default=200)
    parser.add_argument("--analyses", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        env, token = prepare(Path(tmp), args.analyses)
        port = free_port()
        api = start_api(env, port)
        try:
            ctx = mp.get_context("spawn")
            stop, out = ctx.Event(), ctx.Queue()
            db = ctx.Process(
                target=_db_load,
                args=(port, "/v1/analyses?limit=50", args.db_clients,
                      args.db_requests, token, stop, out),
            )  # fmt: skip
            db.start()
            time.sleep(2.0)  # let the database load build up first
            t0 = time.perf_counter()
            health, h_failed = asyncio.run(
                _clients(
                    port, "/v1/health", args.readers, args.requests, None, None,
                    args.interval,
                )
            )  # fmt: skip
            wall = time.perf_counter() - t0
            stop.set()
            db_lat, db_failed = out.get(timeout=300)
            db.join()
        finally:
            api.terminate()
            api.wait(timeout=30)
    print(
        f"{args.readers} health readers x {args.requests} requests, one every "
        f"{args.interval} s at most; "
        f"{args.db_clients} clients on GET /v1/analyses; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| route | requests | failed | p50 ms | p90 ms | p99 ms | max ms | req/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(_row("GET /v1/health", health, h_failed, wall))
    print(_row("GET /v1/analyses", db_lat, db_failed, wall + 2.0))


if __name__ == "__main__":
    main()
