"""A real stack for the worker tests: PostgreSQL or SQLite, Redis or the SQLite
broker, the API in-process (TestClient) and Celery workers in subprocesses.

Each test gets its own database (PostgreSQL: a copy of a migrated template) and, for
Redis, a database number nobody else uses during the run. Every worker is started
in its own process group and killed at teardown, pass or fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from contract.tasks import QUEUES

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get(
    "BOTTLELENS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_HOST = os.environ.get("BOTTLELENS_TEST_REDIS", "redis://127.0.0.1:6379")
MLP_CONFIG = {"in_features": 16, "widths": [32, 4, 32], "out_features": 3}
# Every layer, so that a run reports progress a dozen times.
CONFIG_FAST = {"samples": 300, "seed": 1, "layers": "all", "device": "cpu"}
_OWNER_KEY = "bottlelens-workers-tests-owner"


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The workers run with OMP_NUM_THREADS=1; so does this process: on 2 busy
    cores two thread pools fight (FACTS.md), and equal thread counts keep the
    reductions in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- databases and brokers ----------------------------------------------------


def _pg_exec(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test copies."""
    from service.db import get_engine, upgrade

    name = f"bl_wk_tmpl_{uuid.uuid4().hex[:8]}"
    _pg_exec(f"CREATE DATABASE {name}")
    try:
        upgrade(_pg_url(name))
        get_engine.cache_clear()
        yield name
    finally:
        _pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis database number that was empty, flagged as ours for the run."""
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_HOST}/{db}")
        if client.dbsize() == 0 and client.set(_OWNER_KEY, os.getpid(), nx=True):
            try:
                yield db
            finally:
                client.flushdb()
            return
    pytest.fail("no empty Redis database (1-15) for the worker tests")


# --- the stack ----------------------------------------------------------------


@dataclass
class Stack:
    """Settings (as environment), the API client and the workers of one test."""

    env: dict[str, str]
    tmp: Path
    client: TestClient | None = None
    token: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def http(self) -> TestClient:
        assert self.client is not None
        return self.client

    # workers

    def start_worker(
        self,
        *,
        slow_s: float | None = None,
        beat: bool = False,
        app: str | None = None,
        pool: str = "solo",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker on both queues (one process: ``pool`` solo, or prefork with one
        child); ``slow_s`` sleeps in every progress report
        (``tests.workers.slow_app``); ``beat`` runs the reconciler's schedule too;
        ``app`` and ``env`` pick another app module and add variables."""
        n = len(self.workers)
        log = self.tmp / f"worker{n}.log"
        if app is None:
            app = "workers.celery_app" if slow_s is None else "tests.workers.slow_app"
        extra_env = {} if slow_s is None else {"BOTTLELENS_TEST_DELAY_S": str(slow_s)}
        extra_env |= env or {}
        queues = ",".join(QUEUES)
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues]
        cmd += ["-c", "1", "--pool", pool, "--loglevel", "info"]
        if beat:
            cmd += ["--beat", "--schedule", str(self.tmp / f"beat{n}")]
        cmd += ["--hostname", f"w{n}-{uuid.uuid4().hex[:6]}@test", "--without-mingle"]
        cmd += ["--without-gossip", "--without-heartbeat"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        self.logs.append(log)
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log_text(n)}")
            time.sleep(0.1)
        return proc

    def log_text(self, n: int = -1) -> str:
        return self.logs[n].read_text(errors="replace")[-6000:]

    def kill_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # the API

    def upload_model(self, path: Path, config: dict[str, Any] | None = None) -> str:
        with path.open("rb") as f:
            r = self.http.post(
                "/v1/models",
                headers=self.headers,
                files={"file": (path.name, f, "application/octet-stream")},
                data={
                    "architecture": "mlp",
                    "architecture_config": json.dumps(config or MLP_CONFIG),
                },
            )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def upload_dataset(self, path: Path | None = None, spec: str | None = None) -> str:
        if path is not None:
            with path.open("rb") as f:
                r = self.http.post(
                    "/v1/datasets",
                    headers=self.headers,
                    files={"file": (path.name, f, "application/octet-stream")},
                )
        else:
            r = self.http.post(
                "/v1/datasets", headers=self.headers, data={"spec": spec}
            )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def submit(self, model_id: str, dataset_id: str, config: dict[str, Any]) -> str:
        r = self.http.post(
            "/v1/analyses",
            headers=self.headers,
            json={"model_id": model_id, "dataset_id": dataset_id, "config": config},
        )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def submit_when_ready(self, inputs: Any, config: dict[str, Any]) -> str:
        """Upload the model and the dataset of ``inputs``, wait until both are
        ready, submit an analysis with ``config``; its id."""
        model_id = self.upload_model(inputs.weights)
        dataset_id = self.upload_dataset(inputs.data)
        self.wait_ready("models", model_id)
        self.wait_ready("datasets", dataset_id)
        return self.submit(model_id, dataset_id, config)

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(path, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait_for(
        self,
        path: str,
        until: Callable[[dict[str, Any]], bool],
        timeout_s: float = 60,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            obj = self.get(path)
            if until(obj):
                return obj
            if time.monotonic() > deadline:
                logs = "\n".join(self.log_text(i) for i in range(len(self.logs)))
                raise AssertionError(f"timed out on {path}: {obj}\n{logs}")
            time.sleep(0.1)

    def wait_ready(self, kind: str, object_id: str) -> dict[str, Any]:
        obj = self.wait_for(
            f"/v1/{kind}/{object_id}", lambda o: o["status"] != "validating"
        )
        assert obj["status"] == "ready", obj
        return obj


def _settings_env(
    tmp: Path, database_url: str, broker_url: str, **overrides: Any
) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "STORAGE_DIR": str(tmp / "storage"),
        "LEASE_S": "60",
        "MAX_ATTEMPTS": "3",
        "QUEUED_GRACE_S": "60",
        "BROKER_VISIBILITY_TIMEOUT_S": "3600",
        "TASK_TIME_LIMIT_S": "600",
        "RECONCILE_INTERVAL_S": "60",
    }
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return {f"BOTTLELENS_{k}": v for k, v in env.items()} | {"OMP_NUM_THREADS": "1"}


def clear_caches() -> None:
    from service.db import get_engine
    from service.settings import get_settings

    get_engine.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def make_stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Stack]]:
    """``make_stack(db="postgres"|"sqlite", broker="redis"|"sqlite", **settings)``."""
    stacks: list[Stack] = []
    databases: list[str] = []
    redis_dbs: list[int] = []

    def make(db: str = "postgres", broker: str = "redis", **overrides: Any) -> Stack:
        from service import store
        from service.db import session_scope, upgrade
        from service.main import create_app
        from service.settings import Settings

        if db == "postgres":
            template = request.getfixturevalue("pg_template")
            name = f"bl_wk_{uuid.uuid4().hex[:12]}"
            _pg_exec(f"CREATE DATABASE {name} TEMPLATE {template}")
            databases.append(name)
            database_url = _pg_url(name)
        else:
            database_url = f"sqlite:///{tmp_path / 'bottlelens.sqlite'}"
        if broker == "redis":
            redis_dbs.append(request.getfixturevalue("redis_db"))
            broker_url = f"{REDIS_HOST}/{redis_dbs[-1]}"
        else:
            broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
        env = _settings_env(tmp_path, database_url, broker_url, **overrides)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        clear_caches()
        if db == "sqlite":
            upgrade(database_url)
        stack = Stack(env=env, tmp=tmp_path)
        stacks.append(stack)
        with session_scope() as session:
            store.create_team(session, "lab")
        with session_scope() as session:
            _, stack.token = store.create_api_key(session, "lab", "read,submit,admin")
        stack.client = TestClient(create_app(Settings()))
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.kill_workers()
            if stack.client is not None:
                stack.client.app.state.engine.dispose()  # type: ignore[attr-defined]
                stack.client.close()
        clear_caches()
        for db in redis_dbs[:1]:
            client = redis.Redis.from_url(f"{REDIS_HOST}/{db}")
            for key in client.scan_iter():
                if key != _OWNER_KEY.encode():
                    client.delete(key)
        for name in databases:
            _pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- inputs -------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    weights: Path
    data: Path


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """A tiny bottleneck MLP trained for a few steps, and labelled data (.npz)."""
    from analysis import build_model

    tmp = tmp_path_factory.mktemp("inputs")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=gen)  # (N, D)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # (N,) 3 classes
    torch.manual_seed(0)
    model = build_model("mlp", MLP_CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    weights = tmp / "tiny_mlp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = tmp / "blobs.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    return Inputs(weights, data)


def expected_result(
    inputs: Inputs, config: dict[str, Any], dataset_name: str = "dataset.npz"
) -> dict[str, Any]:
    """``analysis.analyse`` on the same files, described as the worker describes
    them (a stored dataset is named by its hash, not by a server path)."""
    from analysis import analyse, load_dataset, load_model

    model, ckpt = load_model("mlp", MLP_CONFIG, inputs.weights)
    ds = load_dataset(str(inputs.data))
    ds.spec, ds.name = f"sha256:{ds.sha256}", dataset_name
    info = ckpt.model_info("mlp", MLP_CONFIG, inputs.weights.name)
    return analyse(model, ds, config, model_info=info).to_dict()


def without_timing(result: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(result))
    for key in (
        "duration_s",
        "started_at",
        "timings_s",
        "layer_timings_s",
        "memory_peaks_mb",
    ):
        out["provenance"].pop(key, None)
    return out


def wait_until(
    check: Callable[[], bool], timeout_s: float = 30, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)
