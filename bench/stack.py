"""The stack a bench runs against, in processes of its own: PostgreSQL (a database
of its own, dropped at the end; ``BOTTLELENS_TEST_PG`` names the server) and a Redis
started on a free port (never the machine's), or the embedded stack (SQLite for the
data and the queue); the API under uvicorn, solo workers and beat schedulers, each
in its own process group and killed at the end. Used by ``bench/chaos.py`` and
``bench/load.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from contract.tasks import QUEUES

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


PG_ADMIN = os.environ.get(
    "BOTTLELENS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
MLP = {"in_features": 16, "widths": [32, 4, 32], "out_features": 3}
CONFIG = {
    "samples": 100,
    "seed": 0,
    "layers": "auto",
    "device": "cpu",
    "metrics": ["id"],
    "id": {"methods": ["twonn", "pca90"]},
}
# Short leases and graces so that recovery takes seconds; no team limit in the way.
SETTINGS = {
    "LEASE_S": 4,
    "MAX_ATTEMPTS": 6,
    "QUEUED_GRACE_S": 6,
    "RECONCILE_INTERVAL_S": 2,
    "BROKER_VISIBILITY_TIMEOUT_S": 120,
    "TASK_TIME_LIMIT_S": 100,
    "SCHEDULER_TICK_S": 2,
    "AUDIT_MIN_INTERVAL_S": 1,
    "MAX_QUEUED_ANALYSES": 100_000,
    "MAX_AUDIT_RUNS_PER_DAY": 100_000,
    "WORKER_HEARTBEAT_INTERVAL_S": 2,
}
QUIET = ["--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A restartable process in its own group."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGKILL, grace_s: float = 10.0) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):  # the group's leftovers
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


@dataclass
class Run:
    args: argparse.Namespace
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    database: str = ""
    base: str = ""
    token: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    stop_faults: threading.Event = field(default_factory=threading.Event)
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    audits: list[str] = field(default_factory=list)

    # --- the stack ------------------------------------------------------------

    def setup(self) -> None:
        a, storage = self.args, self.folder / "storage"
        if a.stack == "pg":
            import psycopg

            self.database = f"bl_chaos_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {self.database}")
            db_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.database}"
            port = free_port()
            redis = f"--port {port} --bind 127.0.0.1 --appendonly no --daemonize no"
            self.add("redis", ["redis-server", *redis.split(), "--save", ""], {})
            broker = f"redis://127.0.0.1:{port}/0"
        else:
            db_url = f"sqlite:///{self.folder / 'bottlelens.sqlite'}"
            broker = f"sqla+sqlite:///{self.folder / 'broker.sqlite'}"
        settings = {
            "DATABASE_URL": db_url,
            "BROKER_URL": broker,
            "STORAGE_DIR": str(storage),
            **SETTINGS,
        }
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("BOTTLELENS_")
        }
        self.env |= {f"BOTTLELENS_{k}": str(v) for k, v in settings.items()}
        self.env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        os.environ.update(
            {k: v for k, v in self.env.items() if k.startswith("BOTTLELENS_")}
        )
        from service import store
        from service.db import get_engine, session_scope, upgrade
        from service.settings import get_settings

        get_settings.cache_clear()
        get_engine.cache_clear()
        upgrade(db_url)
        with session_scope() as session:
            store.create_team(session, "chaos")
        with session_scope() as session:
            _, self.token = store.create_api_key(session, "chaos", "read,submit,admin")
        if "redis" in self.procs:
            self.procs["redis"].start()
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        uvicorn = f"-m uvicorn service.main:create_app --factory --port {port}"
        self.add("api", [sys.executable, *uvicorn.split(), *QUIET]).start()
        celery = [sys.executable, *["-m", "celery", "-A", "workers.celery_app"]]
        worker = f"worker -Q {','.join(QUEUES)} -c 1 --pool solo --without-mingle"
        worker += " -l warning"
        for n in range(a.workers):
            name = f"worker{n}"
            cmd = [*celery, *worker.split(), "--hostname", f"{name}@%h"]
            self.add(name, cmd).start()
        for n in range(a.schedulers):
            beat = [
                "beat",
                "-l",
                "warning",
                "--schedule",
                str(self.folder / f"beat{n}"),
            ]
            self.add(f"scheduler{n}", [*celery, *beat]).start()
        self.wait_api()

    def add(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(
            name, cmd, self.env if env is None else env, self.folder / f"{name}.log"
        )
        self.procs[name] = proc
        return proc

    def wait_api(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base}/v1/health", timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start:\n{self.tail('api')}")

    def tail(self, name: str) -> str:
        return self.procs[name].log.read_text(errors="replace")[-3000:]

    def teardown(self) -> None:
        for proc in self.procs.values():
            proc.stop(signal.SIGKILL, grace_s=5)
        if self.database:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    # --- clients --------------------------------------------------------------

    def call(
        self, client: httpx.Client, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        """One request, tried again (bounded) while the API restarts or the broker
        is down; None when it never got through."""
        for attempt in range(60):
            try:
                r = client.request(method, path, **kw)
            except httpx.TransportError:
                self.count("transport_error")
            else:
                self.count(str(r.status_code))
                if r.status_code not in (429, 502, 503):
                    return r
            time.sleep(min(2.0, 0.1 * (attempt + 1)))
            for value in kw.get("files", {}).values():
                value[1].seek(0)
        return None

    def count(self, what: str) -> None:
        with self.lock:
            self.answers[what] += 1

    def upload(
        self, client: httpx.Client, kind: str, body: bytes, **data: str
    ) -> str | None:
        files = {"file": (f"x.{kind}", io.BytesIO(body), "application/octet-stream")}
        r = self.call(client, "POST", f"/v1/{kind}s", files=files, data=data)
        return str(r.json()["id"]) if r is not None and r.status_code == 201 else None

    def wait_ready(self, client: httpx.Client, kind: str, ids: list[str]) -> None:
        deadline = time.monotonic() + 120
        for object_id in ids:
            while time.monotonic() < deadline:
                r = self.call(client, "GET", f"/v1/{kind}s/{object_id}")
                if r is not None and r.json()["status"] != "validating":
                    break
                time.sleep(0.3)


def _weights(seed: int) -> bytes:
    import torch
    from safetensors.torch import save

    from analysis import build_model

    torch.manual_seed(seed)
    model = build_model("mlp", MLP)
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def _npz(seed: int, n: int = 200) -> bytes:
    gen = np.random.default_rng(seed)
    x = gen.normal(size=(n, 16)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)).astype(np.int64)
    out = io.BytesIO()
    np.savez(out, x=x, y=y)
    return out.getvalue()
