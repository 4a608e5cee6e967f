"""``bottlelens analyze`` on a quiet machine and beside a busy process.

Trains the demo MLP once (``analysis.demo``, a few seconds), then times the command
``bottlelens analyze`` on 300 samples of sklearn:digits, run as a user runs it (a
fresh process, no thread variables set), in two conditions, interleaved:

- ``quiet``: nothing else started by the benchmark;
- ``loaded``: a second process spins a bounded busy loop on the last CPU this
  process may use (it stops by itself after ``--busy-max-s``).

It prints each run's wall time, the medians, ``loaded / quiet`` and the slowest
runs. The target is within 1.3x: the analysis must not be slowed by its thread pools
fighting a busy core (FACTS.md saw 8.9-39 s for what takes 2.2 s). Reports only, no
asserts.

Usage::

    python bench/bench_threads.py                  # 5 repeats of each
    python bench/bench_threads.py --repeats 3 --extra --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The busy loop: bounded, so a killed benchmark leaves nothing spinning.
BUSY = (
    "import time\nend = time.monotonic() + {max_s}\nwhile time.monotonic() < end: pass"
)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BOTTLELENS_THREADS",
)


def _user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARS}


def _train(workdir: Path) -> list[str]:
    from analysis.demo import train_demo_model

    trained = train_demo_model(workdir, seed=0)
    return [
        "--arch",
        trained.architecture,
        "--arch-config",
        json.dumps(trained.config),
        "--weights",
        str(trained.weights),
        "--data",
        trained.dataset,
    ]


def _start_busy(max_s: float) -> subprocess.Popen[bytes]:
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY.format(max_s=max_s)],
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    time.sleep(0.3)  # let it reach the loop
    return proc


def _time_analyze(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"analyze failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--busy-max-s", type=float, default=600.0)
    parser.add_argument(
        "--extra", nargs=argparse.REMAINDER, default=[], help="more analyze options"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        inputs = _train(Path(tmp))
        cmd = [sys.executable, "-m", "workers.cli", "analyze", *inputs]
        cmd += ["--samples", str(args.samples), "--device", "cpu", *args.extra]
        env = _user_env()
        print(
            f"cpus {sorted(os.sched_getaffinity(0))}; command: analyze "
            f"--samples {args.samples} {' '.join(args.extra)}"
        )
        _time_analyze(cmd, env)  # warm the file cache
        quiet: list[float] = []
        loaded: list[float] = []
        for i in range(args.repeats):
            quiet.append(_time_analyze(cmd, env))
            busy = _start_busy(args.busy_max_s)
            try:
                loaded.append(_time_analyze(cmd, env))
            finally:
                busy.kill()
                busy.wait()
            print(
                f"run {i + 1}: quiet {quiet[-1]:.2f} s, loaded {loaded[-1]:.2f} s",
                flush=True,
            )
    q, ld = statistics.median(quiet), statistics.median(loaded)
    print(
        f"median quiet {q:.2f} s, loaded {ld:.2f} s, loaded/quiet {ld / q:.2f}x "
        f"(target <= 1.3x); slowest quiet {max(quiet):.2f} s, loaded "
        f"{max(loaded):.2f} s"
    )


if __name__ == "__main__":
    main()
