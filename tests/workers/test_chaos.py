"""The short chaos run: 100 submissions on PostgreSQL and a Redis of its own, two
workers and two schedulers, while a worker is killed twice, the broker and the API
are restarted once and an audit fires; every invariant holds at the end
(``bench/chaos.py`` is the long version)."""

from __future__ import annotations

import os

import pytest

from tests.workers.conftest import clear_caches

pytestmark = pytest.mark.slow


def test_short_chaos_run_keeps_every_invariant(tmp_path) -> None:
    from bench.chaos import parse, run_chaos

    argv = "--stack pg --submissions 100 --clients 4 --workers 2 --schedulers 2"
    argv += " --kills 2 --broker-restarts 1 --api-restarts 1 --audits 1 --seed 3"
    args = parse([*argv.split(), "--max-time", "240", "--tmp", str(tmp_path)])
    environ = dict(os.environ)
    try:
        report = run_chaos(args)
    finally:
        os.environ.clear()
        os.environ.update(environ)
        clear_caches()
    assert report["drained"], report
    assert {k: v for k, v in report["violations"].items() if v} == {}, report
    assert report["accepted"] == 100
    assert report["counts"]["analyses"] >= 100
    assert (
        report["counts"]["succeeded"] + report["counts"]["failed"]
        == (report["counts"]["analyses"])
    )
    assert report["counts"]["uploads_rejected"] >= 2  # the misfit weights
    fired = report["faults"]
    assert fired.get("kill_worker", 0) >= 1 and fired.get("restart_api", 0) >= 1, fired
    print(report["faults"], report["counts"], report["total_s"])
