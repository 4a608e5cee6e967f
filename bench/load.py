"""Load figures: API latency under concurrent clients, and the drain rate of workers.

    python bench/load.py                       # both stacks, every figure (~10 min)
    python bench/load.py --stacks pg --levels 10 50 --drain 1 2 --n-drain 20

For each stack (``pg``: PostgreSQL + a Redis of its own; ``embedded``: SQLite for
the data and the queue), the API runs under uvicorn as in production (one process)
with no worker, and for 10, 50 and 200 concurrent clients each operation is timed:
``submit`` (POST /v1/analyses), ``list`` (GET /v1/analyses), ``result`` (GET
.../results of a succeeded analysis) and ``export`` (GET /v1/exports/metrics, 1,000
rows of CSV). Then analyses are queued with no worker running, 1, 2 and 4 workers
are started, and the drain rate is read from the analyses' ``finished_at``.
``--profile`` samples the API with py-spy during the heaviest level and prints
where its time goes. Everything is bounded in count and time; the clients run in
this process, on the same cores as the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos import parse  # noqa: E402
from bench.stack import CONFIG, MLP, Run, _npz, _weights  # noqa: E402


async def _level(
    base: str, token: str, clients: int, n: int, request: Any, max_s: float
) -> dict[str, Any]:
    """``n`` requests from ``clients`` concurrent clients; latency in ms."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    todo = iter(range(n))
    deadline = time.monotonic() + max_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=limits
    ) as client:

        async def one_client() -> None:
            for _ in todo:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await request(client)
                    codes[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "per_s": round(ok / wall, 1),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1)
        if latencies
        else None,
        "errors": {k: v for k, v in codes.items() if not k.startswith("2")},
    }


def _operations(ids: dict[str, Any]) -> dict[str, Any]:
    body = {"model_id": ids["model"], "dataset_id": ids["dataset"], "config": CONFIG}
    result = f"/v1/analyses/{ids['succeeded']}/results"
    return {
        "submit": lambda c: c.post("/v1/analyses", json=body),
        "list": lambda c: c.get("/v1/analyses", params={"limit": 50}),
        "result": lambda c: c.get(result),
        "export": lambda c: c.get("/v1/exports/metrics", params={"limit": 1000}),
    }


def _prepare(run: Run) -> dict[str, Any]:
    """A ready model and dataset and a few succeeded analyses, then no worker."""
    headers = {"Authorization": f"Bearer {run.token}"}
    with httpx.Client(base_url=run.base, headers=headers, timeout=60) as client:
        data = {"architecture": "mlp", "architecture_config": json.dumps(MLP)}
        model = run.upload(client, "model", _weights(1), **data)
        dataset = run.upload(client, "dataset", _npz(1))
        assert model and dataset
        run.wait_ready(client, "model", [model])
        run.wait_ready(client, "dataset", [dataset])
        body = {"model_id": model, "dataset_id": dataset, "config": CONFIG}
        ids = [client.post("/v1/analyses", json=body).json()["id"] for _ in range(3)]
        _wait_ended(run, len(ids), 180)
    _stop_workers(run)
    return {"model": model, "dataset": dataset, "succeeded": ids[0]}


def _stop_workers(run: Run) -> None:
    for name, proc in run.procs.items():
        if name.startswith("worker"):
            proc.stop(signal.SIGTERM, grace_s=20)


def _ended(run: Run) -> tuple[int, list[float]]:
    from sqlalchemy import text

    from service.db import get_engine

    with get_engine().connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, finished_at FROM analysis WHERE status IN "
                "('succeeded', 'failed')"
            )
        ).all()
    times = sorted(_seconds(r.finished_at) for r in rows if r.finished_at)
    return len(rows), times


def _seconds(at: datetime | str) -> float:
    """A timestamp as a number (SQLite hands raw SQL its text)."""
    return (datetime.fromisoformat(at) if isinstance(at, str) else at).timestamp()


def _wait_ended(run: Run, n: int, max_s: float) -> bool:
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        if _ended(run)[0] >= n:
            return True
        time.sleep(0.5)
    return False


def _forget_queued() -> None:
    """The analyses the submit figures queued go, rows and messages."""
    from sqlalchemy import text

    from service.db import get_engine
    from service.settings import get_settings
    from workers.celery_app import make_celery

    with get_engine().begin() as conn:
        conn.execute(text("DELETE FROM analysis WHERE status = 'queued'"))
    make_celery(get_settings()).control.purge()  # this stack's broker


def _drain(run: Run, ids: dict[str, Any], workers: int, n: int) -> dict[str, Any]:
    """Queue ``n`` analyses with no worker, start ``workers`` and time the drain."""
    _forget_queued()
    before, _ = _ended(run)
    headers = {"Authorization": f"Bearer {run.token}"}
    body = {"model_id": ids["model"], "dataset_id": ids["dataset"], "config": CONFIG}
    with httpx.Client(base_url=run.base, headers=headers, timeout=60) as client:
        for _ in range(n):
            run.call(client, "POST", "/v1/analyses", json=body)
    worker = run.procs["worker0"]
    started = []
    for k in range(workers):
        proc = run.add(f"worker{k}", [*worker.cmd[:-2], "--hostname", f"d{k}@%h"])
        proc.start()
        started.append(proc)
    t0 = time.monotonic()
    done = _wait_ended(run, before + n, max_s=60 + 10 * n)
    wall = time.monotonic() - t0
    _, times = _ended(run)
    times = times[before:]
    for proc in started:
        proc.stop(signal.SIGTERM, grace_s=20)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    return {
        "workers": workers,
        "analyses": n,
        "drained": done,
        "wall_s": round(wall, 1),
        "per_s_steady": round(steady, 2) if steady else None,
    }


def _profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    if shutil.which("py-spy") is None:
        return None
    cmd = ["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "50"]
    cmd += ["--format", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _summarise_profile(raw: Path, top: int = 10) -> dict[str, list[Any]]:
    """Where the API's samples are: ``self`` the innermost frame, ``service`` our
    own frames anywhere on the stack (inclusive); shares of all samples."""
    total, inner, ours = 0, Counter[str](), Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [f.split("site-packages/")[-1] for f in stack.split(";")]
        inner[frames[-1]] += int(n)
        for frame in set(frames):
            if "service/" in frame and "site-packages" not in frame:
                ours[frame] += int(n)
    share = max(total, 1)
    return {
        "self": [(k, round(v / share, 3)) for k, v in inner.most_common(top)],
        "service": [(k, round(v / share, 3)) for k, v in ours.most_common(top)],
    }


def measure(stack: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bl-load-"))
    run = Run(parse(["--stack", stack, "--workers", "1", "--schedulers", "0"]), folder)
    out: dict[str, Any] = {"stack": stack, "api": {}, "drain": []}
    try:
        run.setup()
        ids = _prepare(run)
        ops = _operations(ids)
        heaviest = max(args.levels)
        for op in args.ops:
            out["api"][op] = []
            for clients in args.levels:
                n = min(max(3 * clients, args.requests), 4 * args.requests)
                prof = None
                if args.profile and clients == heaviest and op == "submit":
                    raw = folder / f"{op}.raw"
                    assert run.procs["api"].popen is not None
                    prof = _profile(run.procs["api"].popen.pid, 8, raw)
                level = asyncio.run(
                    _level(run.base, run.token, clients, n, ops[op], args.max_s)
                )
                if prof is not None:
                    prof.wait(60)
                    if raw.exists():
                        out.setdefault("profile", {})[op] = _summarise_profile(raw)
                        print(json.dumps(out["profile"][op], indent=1), flush=True)
                out["api"][op].append(level)
                print(stack, op, level, flush=True)
        for workers in args.drain:
            drained = _drain(run, ids, workers, args.n_drain)
            out["drain"].append(drained)
            print(stack, "drain", drained, flush=True)
    finally:
        run.teardown()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stacks", nargs="+", default=["pg", "embedded"])
    p.add_argument("--levels", nargs="+", type=int, default=[10, 50, 200])
    p.add_argument("--ops", nargs="+", default=["submit", "list", "result", "export"])
    p.add_argument("--requests", type=int, default=200, help="per level, at least")
    p.add_argument("--max-s", type=float, default=30, help="per level, at most")
    p.add_argument("--drain", nargs="*", type=int, default=[1, 2, 4])
    p.add_argument("--n-drain", type=int, default=30)
    p.add_argument("--profile", action="store_true", help="py-spy on the API")
    args = p.parse_args(argv)
    results = [measure(stack, args) for stack in args.stacks]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
