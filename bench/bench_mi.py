"""Mutual information: bottlelens's ``ksg`` and ``gaussian`` next to benchmark-mi.

On tasks with a known mutual information it prints the true value, our estimates,
benchmark-mi's (``bmi``) on the same samples, and the times with bmi / ours. Report
only: nothing is asserted.

    python bench/bench_mi.py                      # bmi tasks when bmi imports
    python bench/bench_mi.py --n 2000 --no-bmi    # our Gaussian tasks alone
    python bench/bench_mi.py --bmi-python /tmp/bmivenv/bin/python

bmi pulls in jax and pins numpy: it lives in its own venv (bench/README.md), either
with this package installed or, with ``--bmi-python``, alone: each task is then
sampled and timed by bmi in that interpreter and its samples handed over in a
``.npz``; bmi's runs and ours then alternate for ``ROUNDS`` rounds (each the best
of ``--repeat``: jax compiles on the first call) and the medians are reported.
Without bmi the script runs our estimators on Gaussian tasks of its own with
closed-form MI.
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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BMI_TASKS = (
    "1v1-normal-0.75",
    "multinormal-dense-2-2-0.5",
    "multinormal-dense-5-5-0.5",
    "multinormal-sparse-3-3-2-2.0",
    "multinormal-sparse-5-5-2-2.0",
    "multinormal-dense-25-25-0.5",
    "student-identity-3-3-2",
    "half_cube-multinormal-sparse-5-5-2-2.0",
)


ROUNDS = 3  # --bmi-python: alternate rounds of bmi and ours, medians reported


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="samples per task")
    p.add_argument("--tasks", nargs="+", default=list(BMI_TASKS), help="bmi names")
    p.add_argument("--k", type=int, default=3, help="KSG neighbours (both sides)")
    p.add_argument(
        "--max-dim", type=int, default=64, help="our KSG PCA cap (64: none here)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="best of R (jax compiles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bmi", action="store_true")
    p.add_argument(
        "--bmi-python", default=None, help="a python with bmi, run as a subprocess"
    )
    return p.parse_args(argv)


def set_threads(n: int) -> None:
    # Before numpy, torch and jax load their pools: BLAS and torch threads fighting
    # over 2 cores once turned 0.07 s into 8.3 s.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"


def best_time(f: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def gaussian_tasks(n: int, seed: int) -> list[tuple[str, Any, Any, float]]:
    """Our own tasks when bmi is missing: ``(name, X, Y, true MI)``, float64."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for name, dx, corr in (
        ("gauss-1v1-0.75", 1, "pair"),
        ("gauss-dense-2-2-0.5", 2, "dense"),
        ("gauss-dense-5-5-0.5", 5, "dense"),
        ("gauss-dense-25-25-0.5", 25, "dense"),
    ):
        D = 2 * dx
        if corr == "pair":
            cov = np.array([[1.0, 0.75], [0.75, 1.0]])
        else:  # bmi's "dense": every off-diagonal correlation 0.5
            cov = np.full((D, D), 0.5) + 0.5 * np.eye(D)
        Z = rng.multivariate_normal(np.zeros(D), cov, size=n)
        logdet = [np.linalg.slogdet(c)[1] for c in (cov[:dx, :dx], cov[dx:, dx:], cov)]
        out.append(
            (name, Z[:, :dx], Z[:, dx:], 0.5 * (logdet[0] + logdet[1] - logdet[2]))
        )
    return out


def bmi_tasks(names: list[str], n: int, seed: int) -> list[tuple[str, Any, Any, float]]:
    import bmi
    import numpy as np

    out = []
    for name in names:
        task = bmi.benchmark.BENCHMARK_TASKS[name]
        X, Y = task.sample(n, seed=seed)
        true = task.mutual_information
        true = true() if callable(true) else true
        out.append((name, np.asarray(X, np.float64), np.asarray(Y, np.float64), true))
    return out


# Run by --bmi-python's interpreter: sample one task, time bmi's KSG and CCA on it.
_BMI_CHILD = """
import json, sys, time
import numpy as np, bmi
name, n, seed, k, repeat, path = sys.argv[1:]
task = bmi.benchmark.BENCHMARK_TASKS[name]
X, Y = (np.asarray(a, np.float64) for a in task.sample(int(n), seed=int(seed)))
true = task.mutual_information
true = true() if callable(true) else true
np.savez(path, X=X, Y=Y)
out = {"true": float(true), "version": getattr(bmi, "__version__", "?")}
ests = {
    "ksg": bmi.estimators.KSGEnsembleFirstEstimator(
        neighborhoods=(int(k),), standardize=True, metric_x="chebyshev"),
    "cca": bmi.estimators.CCAMutualInformationEstimator(),
}
for key, est in ests.items():
    times = []
    for _ in range(int(repeat)):
        t = time.perf_counter()
        value = est.estimate(X, Y)
        times.append(time.perf_counter() - t)
    out[key], out[key + "_s"] = float(value), min(times)
print(json.dumps(out))
"""


def bmi_in_subprocess(python: str, name: str, args: argparse.Namespace) -> dict:
    """bmi's task sample and timings from another interpreter (its own venv)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "task.npz")
        argv = [name, args.n, args.seed, args.k, args.repeat, path]
        done = subprocess.run(
            [python, "-c", _BMI_CHILD, *map(str, argv)],
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(path) as f:
            out["X"], out["Y"] = f["X"], f["Y"]
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import torch
    from threadpoolctl import threadpool_limits

    from analysis.mutual_information import estimate_mi

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    have_bmi = False
    if not args.no_bmi and not args.bmi_python:
        try:
            import bmi

            have_bmi = True
        except Exception as e:  # ImportError, or jax/equinox version clashes
            print(f"# benchmark-mi not importable ({type(e).__name__}: {e}): skipped")
    child: dict[str, dict] = {}
    if args.bmi_python and not args.no_bmi:
        # one bmi run now for the samples; the timed ones alternate with ours below
        child = {t: bmi_in_subprocess(args.bmi_python, t, args) for t in args.tasks}
        tasks = [(t, c["X"], c["Y"], c["true"]) for t, c in child.items()]
    elif have_bmi:
        tasks = bmi_tasks(args.tasks, args.n, args.seed)
    else:
        tasks = gaussian_tasks(args.n, args.seed)
    print(
        f"# N={args.n}, k={args.k}, threads={args.threads}, best of {args.repeat}, "
        f"torch {torch.__version__}"
        + (f", bmi {getattr(bmi, '__version__', '?')}" if have_bmi else "")
        + (f", bmi from {args.bmi_python}" if child else "")
    )
    head = (
        f"{'task':42s} {'dims':>6s} {'true':>7s} | {'ksg':>7s} {'bmi ksg':>7s}"
        f" {'|diff|':>8s} {'ours s':>7s} {'bmi s':>7s} {'x':>5s} |"
        f" {'gauss':>7s} {'bmi cca':>7s} {'ours s':>7s} {'bmi s':>7s} {'x':>5s}"
    )
    print(head)
    for name, X, Y, true in tasks:
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        ours_ksg = partial(
            estimate_mi, Xt, Yt, "ksg", k=args.k, max_dim=args.max_dim, n_subsamples=0
        )
        ours_gauss = partial(estimate_mi, Xt, Yt, "gaussian", n_subsamples=0)
        if child:
            # rounds of (bmi in its interpreter, ours), medians of the rounds' bests
            rounds = []
            for _ in range(ROUNDS):
                c = bmi_in_subprocess(args.bmi_python, name, args)
                rounds.append(
                    (
                        *best_time(ours_ksg, args.repeat),
                        *best_time(ours_gauss, args.repeat),
                        c["ksg_s"],
                        c["cca_s"],
                    )
                )
            t_k, ours_k, t_g, ours_g = (
                statistics.median(r[0] for r in rounds),
                rounds[-1][1],
                statistics.median(r[2] for r in rounds),
                rounds[-1][3],
            )
            child[name]["ksg_s"] = statistics.median(r[4] for r in rounds)
            child[name]["cca_s"] = statistics.median(r[5] for r in rounds)
        else:
            t_k, ours_k = best_time(ours_ksg, args.repeat)
            t_g, ours_g = best_time(ours_gauss, args.repeat)
        ours_k, ours_g = ours_k.value, ours_g.value
        row = (
            f"{name:42s} {X.shape[1]:>2d}x{Y.shape[1]:<3d} {true:7.3f} | {ours_k:7.3f}"
        )
        if child:
            c = child[name]
            tb_k, bmi_k, tb_g, bmi_g = c["ksg_s"], c["ksg"], c["cca_s"], c["cca"]
        if have_bmi:
            ksg = bmi.estimators.KSGEnsembleFirstEstimator(
                neighborhoods=(args.k,), standardize=True, metric_x="chebyshev"
            )
            cca = bmi.estimators.CCAMutualInformationEstimator()
            tb_k, bmi_k = best_time(partial(ksg.estimate, X, Y), args.repeat)
            tb_g, bmi_g = best_time(partial(cca.estimate, X, Y), args.repeat)
        if have_bmi or child:
            row += (
                f" {bmi_k:7.3f} {abs(ours_k - bmi_k):8.1e} {t_k:7.3f} {tb_k:7.3f}"
                f" {tb_k / t_k:5.1f} | {ours_g:7.3f} {bmi_g:7.3f} {t_g:7.3f}"
                f" {tb_g:7.3f} {tb_g / t_g:5.1f}"
            )
        else:
            row += (
                f" {'-':>7s} {'-':>8s} {t_k:7.3f} {'-':>7s} {'-':>5s} |"
                f" {ours_g:7.3f} {'-':>7s} {t_g:7.3f} {'-':>7s} {'-':>5s}"
            )
        print(row, flush=True)


if __name__ == "__main__":
    main()
