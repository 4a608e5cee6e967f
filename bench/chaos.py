"""Chaos run: many submissions while workers, the broker and the API are killed and
restarted at seeded moments and audits fire, then the invariants.

    python bench/chaos.py --stack pg --submissions 1000 --clients 6 --workers 2
    python bench/chaos.py --stack embedded --submissions 1000

Loopback only. ``pg``: a database of its own on the PostgreSQL server
(``--pg``, dropped at the end) and a Redis it starts on a free port (never the
machine's); ``embedded``: SQLite for the data and the queue. Every process is
started in its own process group and killed on exit. Every loop is bounded in count
and in time (``--max-time``). Prints the counts of each invariant and exits 1 on
any violation (2 when the run did not drain in time).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos_checks import integrity  # noqa: E402

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
RULE = {
    "metric": "intrinsic_dimension",
    "estimator": "twonn",
    "layers": "*",
    "operator": "abs_change",
    "threshold": 1e-6,
}


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
        worker = "worker -Q gpu,cpu -c 1 --pool solo --without-mingle -l warning"
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

    def client(
        self, n: int, plan: list[dict[str, Any]], models: list[str], datasets: list[str]
    ) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            for step in plan:
                if step.get("upload"):
                    kind, body, data = step["upload"]
                    self.upload(client, kind, body, **data)
                body = {
                    "model_id": models[step["model"]],
                    "dataset_id": datasets[step["dataset"]],
                    "config": CONFIG,
                }
                r = self.call(client, "POST", "/v1/analyses", json=body)
                if r is not None and r.status_code == 202:
                    with self.lock:
                        self.accepted.append(str(r.json()["id"]))

    # --- faults ---------------------------------------------------------------

    def fault_loop(self, rng: random.Random, plan: list[tuple[int, str]]) -> None:
        """Each fault fires when the run's progress (submissions accepted plus
        analyses ended, out of twice the submissions) passes its seeded point, or
        not at all if the run ends first."""
        from sqlalchemy import text

        from service.db import get_engine

        engine = get_engine()
        pending = list(plan)
        while pending and not self.stop_faults.wait(0.5):
            with contextlib.suppress(Exception), engine.connect() as conn:
                ended = conn.execute(
                    text(
                        "SELECT count(*) FROM analysis WHERE status IN "
                        "('succeeded','failed','cancelled')"
                    )
                ).scalar_one()
                while pending and pending[0][0] <= ended + len(self.accepted):
                    self.fire(rng, pending.pop(0)[1])

    def fire(self, rng: random.Random, kind: str) -> None:
        self.faults[kind] += 1
        if kind == "kill_worker":
            names = [n for n in self.procs if n.startswith("worker")]
            proc = self.procs[rng.choice(names)]
            proc.stop(signal.SIGKILL)
            time.sleep(rng.uniform(0.5, 3))
            proc.start()
        elif kind == "restart_broker":
            proc = self.procs["redis"]
            proc.stop(signal.SIGTERM)
            time.sleep(rng.uniform(1, 4))
            proc.start()
        elif kind == "restart_api":
            proc = self.procs["api"]
            proc.stop(signal.SIGTERM, grace_s=15)
            proc.start()
            self.wait_api()
        elif kind == "audit":
            self.create_audit()

    def create_audit(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {
            "name": "chaos",
            "model": self.models[0],
            "dataset_id": self.datasets[0],
            "config": CONFIG,
            "schedule": {"interval_s": 3},
            "rules": [RULE],
        }
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            r = self.call(client, "POST", "/v1/audits", json=body)
            if r is not None and r.status_code == 201:
                self.audits.append(str(r.json()["id"]))


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


def plan_clients(
    rng: random.Random, n: int, clients: int
) -> list[list[dict[str, Any]]]:
    """Each client's submissions: a ready model and dataset each; every 20th also
    uploads a new dataset, every 50th a model whose weights do not fit (rejected)."""
    plans: list[list[dict[str, Any]]] = [[] for _ in range(clients)]
    for i in range(n):
        step: dict[str, Any] = {"model": rng.randrange(2), "dataset": rng.randrange(2)}
        if i % 50 == 49:
            bad = {
                "architecture": "mlp",
                "architecture_config": json.dumps({**MLP, "widths": [8, 2, 8]}),
            }
            step["upload"] = ("model", _weights(i), bad)
        elif i % 20 == 19:
            step["upload"] = ("dataset", _npz(1000 + i), {})
        plans[i % clients].append(step)
    return plans


def plan_faults(rng: random.Random, args: argparse.Namespace) -> list[tuple[int, str]]:
    kinds = ["kill_worker"] * args.kills + ["restart_api"] * args.api_restarts
    kinds += ["audit"] * args.audits
    if args.stack == "pg":
        kinds += ["restart_broker"] * args.broker_restarts
    at = sorted(int(rng.uniform(0.02, 0.8) * 2 * args.submissions) for _ in kinds)
    rng.shuffle(kinds)
    return list(zip(at, kinds, strict=True))


def drained(run: Run) -> bool:
    from sqlalchemy import text

    from service.db import get_engine

    sql = (
        "SELECT (SELECT count(*) FROM analysis WHERE status IN ('queued','running'))"
        " + (SELECT count(*) FROM model WHERE status = 'validating')"
        " + (SELECT count(*) FROM dataset WHERE status = 'validating')"
        " + (SELECT count(*) FROM audit_run WHERE status IN ('pending','running'))"
    )
    with contextlib.suppress(Exception), get_engine().connect() as conn:
        return conn.execute(text(sql)).scalar_one() == 0
    return False


def run_chaos(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; its report (``violations`` maps each invariant to a count)."""
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="bl-chaos-", dir=args.tmp))
    run = Run(args, folder)
    started = time.monotonic()
    deadline = started + args.max_time
    try:
        run.setup()
        headers = {"Authorization": f"Bearer {run.token}"}
        with httpx.Client(base_url=run.base, headers=headers, timeout=30) as client:
            data = {"architecture": "mlp", "architecture_config": json.dumps(MLP)}
            run.models = [
                m
                for s in (1, 2)
                if (m := run.upload(client, "model", _weights(s), **data))
            ]
            run.datasets = [
                d for s in (1, 2) if (d := run.upload(client, "dataset", _npz(s)))
            ]
            run.wait_ready(client, "model", run.models)
            run.wait_ready(client, "dataset", run.datasets)
        plans = plan_clients(rng, args.submissions, args.clients)
        faults = threading.Thread(
            target=run.fault_loop,
            args=(random.Random(args.seed + 1), plan_faults(rng, args)),
        )
        threads = [
            threading.Thread(
                target=run.client, args=(n, plan, run.models, run.datasets)
            )
            for n, plan in enumerate(plans)
        ]
        faults.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        submitted_s = time.monotonic() - started
        while not drained(run) and time.monotonic() < deadline:
            time.sleep(1)
        run.stop_faults.set()
        faults.join(60)
        for proc in run.procs.values():  # every fault is over: all parts up
            if not proc.alive():
                proc.start()
        with httpx.Client(base_url=run.base, headers=headers, timeout=30) as client:
            run.wait_api()
            for audit_id in run.audits:
                run.call(client, "POST", f"/v1/audits/{audit_id}/pause")
        while not drained(run) and time.monotonic() < deadline:
            time.sleep(1)
        finished = drained(run)
        took = time.monotonic() - started
        for name, proc in run.procs.items():
            if name != "redis":
                proc.stop(signal.SIGTERM, grace_s=10)
        report = integrity(os.environ["BOTTLELENS_DATABASE_URL"], folder / "storage")
        report |= {
            "stack": args.stack,
            "seed": args.seed,
            "submissions": args.submissions,
            "accepted": len(set(run.accepted)),
            "drained": finished,
            "faults": dict(run.faults),
            "answers": dict(run.answers),
            "submit_s": round(submitted_s, 1),
            "total_s": round(took, 1),
            "folder": str(folder),
        }
        return report
    finally:
        run.teardown()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", choices=["pg", "embedded"], default="pg")
    p.add_argument("--submissions", type=int, default=1000)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--schedulers", type=int, default=2)
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--broker-restarts", type=int, default=3)
    p.add_argument("--api-restarts", type=int, default=3)
    p.add_argument("--audits", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-time", type=float, default=1800)
    p.add_argument("--tmp", default=None, help="where the run's folder goes")
    p.add_argument("--keep", action="store_true", help="keep the folder (logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = run_chaos(args)
    print(json.dumps(report, indent=1, default=str))
    bad = {k: v for k, v in report["violations"].items() if v}
    print("violations:", bad or "none")
    if not report["drained"]:
        print("NOT DRAINED within --max-time", file=sys.stderr)
    elif not bad and not args.keep:
        shutil.rmtree(report["folder"], ignore_errors=True)
    return 2 if not report["drained"] else 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
