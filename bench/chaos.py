"""Chaos run: many submissions while workers, the broker and the API are killed and
restarted at seeded moments and audits fire, then the invariants.

    python bench/chaos.py --stack pg --submissions 1000 --clients 6 --workers 2
    python bench/chaos.py --stack embedded --submissions 1000

Loopback only; the stack is ``bench/stack.py``'s (``pg``: PostgreSQL and a Redis of
its own; ``embedded``: SQLite for the data and the queue), every process in its own
group and killed on exit. Every loop is bounded in count and in time
(``--max-time``). Prints the counts of each invariant and exits 1 on any violation
(2 when the run did not drain in time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chaos_checks import integrity  # noqa: E402
from bench.stack import CONFIG, MLP, Run, _npz, _weights  # noqa: E402

RULE = {
    "metric": "intrinsic_dimension",
    "estimator": "twonn",
    "layers": "*",
    "operator": "abs_change",
    "threshold": 1e-6,
}


class ChaosRun(Run):
    """The stack, its clients and its faults."""

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


def drained(run: ChaosRun) -> bool:
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
    run = ChaosRun(args, folder)
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
