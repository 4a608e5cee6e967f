"""The thread policy, each case in a fresh interpreter (thread pools are global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
REPORT = """
import json, os, torch
from threadpoolctl import threadpool_info
print(json.dumps({
    "torch": torch.get_num_threads(),
    "interop": torch.get_num_interop_threads(),
    "blas": sorted({p["num_threads"] for p in threadpool_info()
                    if p["user_api"] == "blas"}),
    "omp_env": os.environ.get("OMP_NUM_THREADS"),
    "blas_env": os.environ.get("OPENBLAS_NUM_THREADS"),
}))
"""


def _run(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    out = subprocess.run(
        [sys.executable, "-c", code + REPORT],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CORES = len(os.sched_getaffinity(0))
pytestmark = pytest.mark.slow  # each case starts an interpreter that imports torch


def test_default_is_the_cores_divided_among_processes_with_one_blas_thread() -> None:
    code = (
        "import os, numpy\nfrom analysis.threads import set_threads\n"
        "assert set_threads(processes=2) == max(1, len(os.sched_getaffinity(0)) // 2)\n"
    )
    got = _run(code)
    assert got["torch"] == max(1, CORES // 2) and got["interop"] == 1
    assert got["blas"] in ([1], [])  # numpy's OpenBLAS: one thread
    assert got["omp_env"] == str(got["torch"]) and got["blas_env"] == "1"


def test_only_the_cores_this_process_may_use_count() -> None:
    code = (
        "import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from analysis.threads import set_threads\nassert set_threads() == 1\n"
    )
    assert _run(code)["torch"] == 1


def test_an_explicit_count_and_the_environment() -> None:
    code = "from analysis.threads import set_threads\nassert set_threads(3) == 3\n"
    assert _run(code)["torch"] == 3
    code = "from analysis.threads import set_threads\nassert set_threads() == 2\n"
    assert _run(code, OMP_NUM_THREADS="2")["torch"] == 2
    code = "from analysis.threads import set_threads\nset_threads(2)\nset_threads(2)\n"
    assert _run(code)["torch"] == 2  # twice: the second does nothing


def test_the_worker_splits_the_cores_among_its_processes() -> None:
    code = (
        "from types import SimpleNamespace\n"
        "import workers.celery_app as c\n"
        "c._on_worker_init(sender=SimpleNamespace(concurrency=2))\n"
    )
    got = _run(code)
    assert got["torch"] == max(1, CORES // 2) and got["interop"] == 1
    assert got["blas"] in ([1], []) and got["blas_env"] == "1"
    assert _run(code, OMP_NUM_THREADS="1")["torch"] == 1  # the user's wins


def test_a_count_below_one_is_refused() -> None:
    from analysis.threads import set_threads

    with pytest.raises(ValueError, match="at least 1"):
        set_threads(0)
    with pytest.raises(ValueError, match="at least 1"):
        set_threads(processes=0)
