"""Cost of capturing every layer of a ResNet-50, as a multiple of a plain forward pass.

Three runs over the same samples and batches, each in eval mode under ``no_grad``:

- ``forward``: the model alone;
- ``exact``: ``capture`` of every module call at full width (``exact=["*"]``);
- ``projected``: ``capture`` of every module call with ``budget`` (4096): every wider
  layer goes through a sparse random projection. Reported with and without the
  one-time cost of drawing the projection matrices (``build``).

Time: the best of ``--repeats`` runs, interleaved. ``--pages kept`` (the default)
runs everything under ``analysis.memory.pages_kept``, the allocator policy an
analysis runs under; ``--pages default`` under glibc's own. Memory: the peak
resident set size (RSS, sampled from /proc every 2 ms) above the RSS before the
run, next to what the stored activations and the projection matrices take;
memory the C allocator kept from an earlier run is reused without showing up
again, so the RSS rise can be below those sums. Reports only, no asserts. The
targets are a capture within 1.5x a plain forward, without projection and with
it.

The bound of an exact capture: ``first_touch`` writes as many float32 values as
``exact`` stores into freshly allocated memory (every 4 KB page faults on its first
write), ``reused`` the same into memory written before; ``ratio_bound_exact`` is
(forward + first_touch) / forward, the least any capture that keeps every output
can take.

Usage::

    python bench/bench_capture.py                         # 64x64, 64 samples
    python bench/bench_capture.py --size 224 --samples 16 --batch-size 8
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from analysis.architectures import build_model
from analysis.capture import capture, layer_seed, profile
from analysis.memory import pages_kept
from analysis.projection import SparseRandomProjection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="input H = W")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument(
        "--pages",
        choices=["kept", "default"],
        default="kept",
        help="allocator policy: an analysis's (kept) or glibc's default",
    )
    args = parser.parse_args()
    with pages_kept() if args.pages == "kept" else nullcontext():
        run(args)


def run(args: argparse.Namespace) -> None:

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model("resnet", {}).eval().to(device)  # ResNet-50, 25.6 M params
    x = torch.randn(args.samples, 3, args.size, args.size, device=device)
    batches = list(x.split(args.batch_size))
    layers = profile(model, x[:2])
    stored = {
        "exact": sum(layer.width for layer in layers),
        "projected": sum(min(layer.width, args.budget) for layer in layers),
    }

    def forward() -> None:
        with torch.no_grad():
            for xb in batches:
                model(xb)

    def exact() -> None:
        capture(model, x, batch_size=args.batch_size, exact=["*"])

    def projected() -> None:
        capture(model, x, batch_size=args.batch_size, budget=args.budget)

    nnz = [0]

    def build() -> None:
        nnz[0] = 0
        for layer in layers:
            if layer.width > args.budget:
                nnz[0] += SparseRandomProjection(
                    layer.width, args.budget, layer_seed(0, layer.name), device=device
                ).nnz

    n_exact = args.samples * stored["exact"]  # float32 values kept by `exact`
    touched = torch.ones(n_exact, device=device)

    def first_touch() -> None:
        # Writing the stored bytes into fresh memory: the page-fault bound.
        torch.empty(n_exact, device=device).fill_(1.0)

    def reused() -> None:
        # The same write into memory touched before: what the copies cost alone.
        touched.fill_(1.0)

    runs: dict[str, Callable[[], None]] = {
        "forward": forward,
        "exact": exact,
        "projected": projected,
        "build": build,
        "first_touch": first_touch,
        "reused": reused,
    }
    forward()  # warm-up: allocator, oneDNN kernels
    best = {name: float("inf") for name in runs}
    peak = dict.fromkeys(runs, 0)
    for _ in range(args.repeats):
        for name, run in runs.items():
            gc.collect()
            with peak_rss() as rss:
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
            peak[name] = max(peak[name], rss["peak"])

    report = {
        "device": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "threads": args.threads,
        "pages": args.pages,
        "input": f"{args.samples} x 3 x {args.size} x {args.size}",
        "batch_size": args.batch_size,
        "budget": args.budget,
        "module_calls": len(layers),
        "projected_layers": sum(layer.width > args.budget for layer in layers),
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "ratio_exact": round(best["exact"] / best["forward"], 2),
        "ratio_projected": round(best["projected"] / best["forward"], 2),
        # Exact capture cannot beat a forward pass plus writing what it stores
        # into fresh pages; the copy into reused pages shows what faulting costs.
        "ratio_bound_exact": round(
            (best["forward"] + best["first_touch"]) / best["forward"], 2
        ),
        "first_touch_gb_per_s": round(n_exact * 4 / best["first_touch"] / 1e9, 2),
        "reused_gb_per_s": round(n_exact * 4 / best["reused"] / 1e9, 2),
        "load_average": round(os.getloadavg()[0], 1),
        "ratio_projected_without_build": round(
            (best["projected"] - best["build"]) / best["forward"], 2
        ),
        "peak_rss_above_start_mb": {k: round(v / 2**20) for k, v in peak.items()},
        "stored_activations_mb": {
            k: round(args.samples * v * 4 / 2**20) for k, v in stored.items()
        },
        # on the CPU an int64 row + a float32 value per non-zero
        "projection_matrices_mb": round(nnz[0] * 12 / 2**20),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:32s} {value}")


@contextmanager
def peak_rss(interval: float = 0.002) -> Iterator[dict[str, int]]:
    """Peak RSS above the RSS at entry, in bytes, sampled by a thread (Linux)."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    result: dict[str, Any] = {"peak": 0}
    start = rss()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak"] = max(result["peak"], rss() - start)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(result["peak"], rss() - start)


if __name__ == "__main__":
    main()
