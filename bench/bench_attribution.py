"""Cost of each attribution method at a bottleneck, as a multiple of a forward pass.

Two models, each at its first bottleneck (``find_bottlenecks``):

- ``resnet``: a small torchvision-style ResNet (stages [2, 2, 2], widths
  [16, 32, 64], 3x3 stem, 10 classes) on 3 x 32 x 32 inputs, bottleneck
  ``layer1.0.conv2``;
- ``mlp``: the demo MLP (64-128-64-8-64-10, untrained) on 64 features, bottleneck
  ``fc2``.

Runs, all with the predicted class as target and ``n_steps`` path points:

- ``conductance`` / ``layer_ig``: ``unit_attribution`` (LayerConductance /
  LayerIntegratedGradients), internal batch chosen from ``--budget-mb``;
- ``gradcam``: ``gradcam_maps`` (LayerGradCam + interpolate), conv layers only;
- ``input_ig``: ``input_ig_maps`` (IntegratedGradients with convergence delta);
- ``*_one_batch``: captum called directly with ``internal_batch_size=None``
  (every path point in one pass).

Every run executes in a fresh subprocess, so its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the peak RSS (``ru_maxrss``) above
the RSS before the first call. Time: best of ``--repeats`` calls; the forward pass
(``no_grad``, eval) and one forward+backward to the input are timed in the same
process. Reports only, no asserts.

Usage::

    python bench/bench_attribution.py               # N=16, 32 steps, 2 threads
    python bench/bench_attribution.py --threads 1 --budget-mb 16
    python bench/bench_attribution.py --device cuda --samples 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

RUNS = {
    "resnet": [
        "conductance",
        "conductance_one_batch",
        "layer_ig",
        "layer_ig_one_batch",
        "gradcam",
        "input_ig",
        "input_ig_one_batch",
    ],
    "mlp": [
        "conductance",
        "conductance_one_batch",
        "layer_ig",
        "layer_ig_one_batch",
        "input_ig",
        "input_ig_one_batch",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=32)
    parser.add_argument("--budget-mb", type=float, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    parser.add_argument(
        "--one", nargs=2, metavar=("MODEL", "RUN"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args, *args.one)))
        return

    common = [
        f"--samples={args.samples}",
        f"--n-steps={args.n_steps}",
        f"--budget-mb={args.budget_mb}",
        f"--threads={args.threads}",
        f"--repeats={args.repeats}",
        f"--device={args.device}",
    ]
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"{args.threads} threads, device {args.device}; N={args.samples}, "
        f"n_steps={args.n_steps}, budget {args.budget_mb:g} MiB"
    )
    if not args.json:
        print(
            f"{'model':7s} {'run':22s} {'layer':15s} {'s':>8s} {'x fwd':>7s} "
            f"{'x(f+b)':>7s} {'ibs':>6s} {'peak MB':>8s} {'est MB':>7s}"
        )
    for model in args.models:
        for run in RUNS[model]:
            cmd = [sys.executable, __file__, "--one", model, run, *common]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{model} {run}: failed\n{out.stderr[-2000:]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if args.json:
                print(json.dumps(row))
                continue
            print(
                f"{model:7s} {run:22s} {row['layer']:15s} {row['seconds']:8.3f} "
                f"{row['x_forward']:7.1f} {row['x_forward_backward']:7.1f} "
                f"{row['internal_batch_size'] or '-':>6} {row['peak_mb']:8.1f} "
                f"{row['estimate_mb']:7.1f}"
            )


def _one(args: argparse.Namespace, model_name: str, run: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from captum.attr import (
        IntegratedGradients,
        LayerConductance,
        LayerIntegratedGradients,
    )

    from analysis._attr_batching import plan_batches, row_bytes
    from analysis.architectures import build_model
    from analysis.attribution import gradcam_maps, input_ig_maps, unit_attribution
    from analysis.bottlenecks import find_bottlenecks
    from analysis.capture import profile
    from analysis.demo import DEMO_CONFIG

    torch.manual_seed(0)
    device = torch.device(args.device)
    if model_name == "resnet":
        cfg = {
            "layers": [2, 2, 2],
            "widths": [16, 32, 64],
            "stem_width": 32,
            "small_input": True,
            "num_classes": 10,
        }
        model = build_model("resnet", cfg).eval().to(device)
        x = torch.randn(args.samples, 3, 32, 32, device=device)
    else:
        model = build_model("mlp", DEMO_CONFIG).eval().to(device)
        x = torch.randn(args.samples, 64, device=device)
    layer = find_bottlenecks(profile(model, x[:2]), model=model)[0].layer
    module = model.get_submodule(layer)
    target = model(x).argmax(1).detach()
    n, steps, budget = args.samples, args.n_steps, int(args.budget_mb * 2**20)
    row = row_bytes(model, x)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_()
        model(xg).gather(1, target[:, None]).sum().backward()

    one = {
        "conductance": lambda: LayerConductance(model, module).attribute(
            x, target=target, n_steps=steps
        ),
        "layer_ig": lambda: LayerIntegratedGradients(model, module).attribute(
            x, target=target, n_steps=steps
        ),
        "input_ig": lambda: IntegratedGradients(model).attribute(
            x, target=target, n_steps=steps, return_convergence_delta=True
        ),
    }
    ours: dict[str, Callable[[], Any]] = {
        "conductance": lambda: unit_attribution(
            model, layer, x, target=target, n_steps=steps, memory_budget_bytes=budget
        ),
        "layer_ig": lambda: unit_attribution(
            model,
            layer,
            x,
            method="integrated_gradients",
            target=target,
            n_steps=steps,
            memory_budget_bytes=budget,
        ),
        "gradcam": lambda: gradcam_maps(
            model, layer, x, target=target, memory_budget_bytes=budget
        ),
        "input_ig": lambda: input_ig_maps(
            model, x, target=target, n_steps=steps, memory_budget_bytes=budget
        ),
    }
    method = run.removesuffix("_one_batch")
    call = one[method] if run.endswith("_one_batch") else ours[method]
    if run.endswith("_one_batch"):
        rows = n * (steps + 1 if method == "conductance" else steps)
        ibs = None
    else:
        total = {"conductance": steps + 1, "gradcam": 1}.get(method, steps)
        plan = plan_batches(n, total, row, budget, overlap=method == "conductance")
        rows, ibs = plan.internal_batch_size, plan.internal_batch_size
    if method == "gradcam":
        ibs = None  # one pass per chunk of samples; captum has no internal batch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def best(fn: Callable[[], Any], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return min(times)

    forward_backward()  # warm-up: allocator, oneDNN / cuDNN kernels
    t_forward = best(forward, max(5, args.repeats))
    t_fb = best(forward_backward, max(3, args.repeats))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss()
    first = best(call, 1)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    seconds = min(first, best(call, max(1, args.repeats - 1)))
    path_steps = 1 if method == "gradcam" else steps
    return {
        "model": model_name,
        "run": run,
        "layer": layer,
        "samples": n,
        "n_steps": steps,
        "seconds": round(seconds, 4),
        "forward_s": round(t_forward, 5),
        "x_forward": round(seconds / t_forward, 1),
        # against n_steps forward+backward passes of the N samples: 1.0 = the floor
        "x_forward_backward": round(seconds / (path_steps * t_fb), 2),
        "internal_batch_size": ibs,
        "peak_mb": round(max(peak, 0) / 2**20, 1),
        # rows of one pass x the per-row estimate the budget uses
        "estimate_mb": round(rows * row / 2**20, 1),
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    main()
