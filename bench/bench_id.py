"""Intrinsic dimension: bottlelens vs scikit-dimension (and DADApy) on the same points.

For each N x D it prints, per estimator, our time, the peers' times and the ratios
peer/ours, the estimates side by side, and the time of the N x N x D float32 matrix
product (chunked as our search is: the bound of any exact kNN search by a Gram
matrix) with our time / that bound. Report only: nothing is asserted.

    python bench/bench_id.py --quick                  # under a minute
    python bench/bench_id.py --n 20000 --D 1024       # one point
    python bench/bench_id.py                          # full grid (skdim: ~10 min)

DADApy is timed when importable (it pins numpy<2: see bench/README.md), or with
``--dadapy-python PATH`` in that interpreter (a venv holding DADApy alone) on the
same points, handed over in a ``.npy``; then the two alternate ``--repeat`` times
and both times are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GRID_N = (2000, 10000, 20000)
GRID_D = (64, 1024, 4096)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=list(GRID_N), help="N values")
    p.add_argument("--D", type=int, nargs="+", default=list(GRID_D), help="D values")
    p.add_argument("--quick", action="store_true", help="N=2000, D in {64, 1024}")
    p.add_argument("--methods", nargs="+", default=["twonn", "mle"])
    p.add_argument("--manifold", default="sphere", help="analysis.manifolds name")
    p.add_argument("--d", type=int, default=5, help="intrinsic dimension of the data")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=1, help="best of R for our runs")
    p.add_argument("--no-skdim", action="store_true")
    p.add_argument("--no-dadapy", action="store_true")
    p.add_argument("--dadapy-python", default=None, help="a python with DADApy")
    p.add_argument("--no-ci", action="store_true", help="skip timing our interval")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.D, args.repeat = [2000], [64, 1024], max(args.repeat, 3)
    return args


def set_threads(n: int) -> None:
    # Must run before numpy/torch load their thread pools: numpy's BLAS and torch
    # fighting over the cores once turned 0.07 s into 8.3 s (FACTS.md).
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        os.environ[var] = str(n)


def best_time(f: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from analysis.intrinsic_dimension import MLE, TwoNN
    from analysis.manifolds import make_manifold
    from analysis.neighbors import _BLOCK_BYTES

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    skdim = dadapy = None
    if not args.no_skdim:
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import skdim
    if not args.no_dadapy and not args.dadapy_python:
        try:
            import dadapy
        except ImportError:
            print("# DADApy not importable: skipped (see bench/README.md)")

    print(
        f"# torch {torch.__version__}, numpy {np.__version__}, "
        f"skdim {getattr(skdim, '__version__', '-')}, "
        f"dadapy {getattr(dadapy, '__version__', '-')}"
        + (f" (via {args.dadapy_python})" if args.dadapy_python else "")
        + f"; threads={args.threads}; "
        f"data: {args.manifold} d={args.d}, noiseless"
    )
    head = (
        f"{'N':>6} {'D':>5} {'method':<6} {'ours s':>8} {'+ci s':>7} {'skdim s':>8} "
        f"{'x':>6} {'dadapy s':>8} {'x':>6} {'ours':>8} {'skdim':>8} {'dadapy':>8} "
        f"{'ci':>15} {'matmul s':>8} {'/bound':>6}"
    )
    print(head)
    for N in args.n:
        for D in args.D:
            X = make_manifold(args.manifold, N, args.d, D, seed=0)  # (N, D)
            Xn = X.numpy()
            bound = matmul_time(X, _BLOCK_BYTES, args.repeat)
            for method in args.methods:
                row = run_one(method, X, Xn, args, skdim, dadapy, TwoNN, MLE)
                print(format_row(N, D, method, row, bound), flush=True)


def matmul_time(X: Any, block_bytes: int, repeat: int) -> float:
    import torch

    N = X.shape[0]
    chunk = max(1, min(N, block_bytes // (4 * N)))
    buf = torch.empty(chunk, N)
    XT = X.T.contiguous()

    def product() -> None:
        for s in range(0, N, chunk):
            torch.mm(X[s : s + chunk], XT, out=buf[: min(chunk, N - s)])

    return best_time(product, repeat)[0]


# Run by --dadapy-python's interpreter: best of R TwoNN fits on the saved points.
_DADAPY_CHILD = """
import json, sys, time
from importlib.metadata import version
import numpy as np, dadapy
X = np.load(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    out = dadapy.Data(X).compute_id_2NN()
    times.append(time.perf_counter() - t)
est = out[0] if isinstance(out, tuple) else out
print(json.dumps({"s": min(times), "id": float(est), "version": version("dadapy")}))
"""


def interleaved_with_dadapy(
    python: str, fit: Callable[[], Any], Xn: Any, repeat: int
) -> tuple[float, Any, float, float]:
    """Our fit and DADApy's (in ``python``, its own venv) alternately, ``repeat``
    times each: the median times, our last fit, DADApy's estimate."""
    import statistics

    import numpy as np

    ours, theirs, est, their_id = [], [], None, float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "X.npy")
        np.save(path, Xn)
        for _ in range(repeat):
            t, est = best_time(fit, 1)
            ours.append(t)
            done = subprocess.run(
                [python, "-c", _DADAPY_CHILD, path, "1"],
                capture_output=True,
                text=True,
                check=True,
            )
            out = json.loads(done.stdout.strip().splitlines()[-1])
            theirs.append(out["s"])
            their_id = out["id"]
    return statistics.median(ours), est, statistics.median(theirs), their_id


def run_one(method, X, Xn, args, skdim, dadapy, TwoNN, MLE) -> dict[str, Any]:
    r: dict[str, Any] = {}
    ours = TwoNN if method == "twonn" else MLE
    kw = {} if method == "twonn" else {"k": 20}
    fit = lambda: ours(n_subsamples=0, **kw).fit(X)  # noqa: E731
    if args.dadapy_python and not args.no_dadapy and method == "twonn":
        # medians of alternate runs: ours, DADApy, ours, ...
        r["ours_s"], est, r["dadapy_s"], r["dadapy"] = interleaved_with_dadapy(
            args.dadapy_python, fit, Xn, args.repeat
        )
    else:
        r["ours_s"], est = best_time(fit, args.repeat)
    r["ours"] = est.dimension_
    if not args.no_ci:
        r["ci_s"], est = best_time(lambda: ours(**kw).fit(X), 1)
        r["ci"] = est.ci_
    if skdim is not None:
        if method == "twonn":
            t, e = best_time(lambda: skdim.id.TwoNN(discard_fraction=0.1).fit(Xn), 1)
        else:
            t, e = best_time(
                lambda: skdim.id.MLE().fit(Xn, n_neighbors=20, comb="mle"), 1
            )
        r["skdim_s"], r["skdim"] = t, float(e.dimension_)
    if dadapy is not None and method == "twonn":
        t, out = best_time(lambda: dadapy.Data(Xn).compute_id_2NN(), 1)
        r["dadapy_s"] = t
        r["dadapy"] = float(out[0] if isinstance(out, tuple) else out)
    return r


def format_row(N: int, D: int, method: str, r: dict[str, Any], bound: float) -> str:
    def num(key: str, fmt: str, width: int) -> str:
        return f"{r[key]:{width}{fmt}}" if key in r else f"{'-':>{width}}"

    def ratio(key: str) -> str:
        return f"{r[key] / r['ours_s']:6.1f}" if key in r else f"{'-':>6}"

    ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if "ci" in r else "-"
    return (
        f"{N:6d} {D:5d} {method:<6} {num('ours_s', '.2f', 8)} {num('ci_s', '.2f', 7)} "
        f"{num('skdim_s', '.2f', 8)} {ratio('skdim_s')} {num('dadapy_s', '.2f', 8)} "
        f"{ratio('dadapy_s')} {num('ours', '.4f', 8)} {num('skdim', '.4f', 8)} "
        f"{num('dadapy', '.4f', 8)} {ci:>15} {bound:8.2f} {r['ours_s'] / bound:6.2f}"
    )


if __name__ == "__main__":
    main()
