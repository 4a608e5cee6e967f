"""Where the time of a whole analysis goes: per stage, quiet and loaded.

Cases:

- ``resnet``: the README's example, a small ResNet (``layers=[1, 1]``,
  ``widths=[16, 32]``, ``small_input``) on ``--samples`` 32x32 RGB images (seeded
  noise with 10 labels: the work does not depend on what the pixels show), every
  metric family;
- ``quickstart``: the quickstart's analysis, the demo MLP trained here on
  ``sklearn:digits``, the quickstart's families.

For each case it prints the seconds of every stage from the result's provenance
(``timings_s``), the memory high-water mark after it, and each stage as a multiple
of one plain forward pass over the same samples. ``--alone`` also runs each family
by itself; ``--loaded`` runs everything a second time with a process spinning on
the other core; attribution is also set beside Captum's own ``LayerConductance``
call at its defaults (50 steps, one internal batch) on the first bottleneck.
Numbers are reported, nothing is asserted. Each run also prints its CPU seconds
(all threads of this process) and the 1-minute load average at its end: with one
thread on a shared machine, the CPU seconds are what a quiet run would take.

    python bench/bench_pipeline.py                         # both cases, quiet
    python bench/bench_pipeline.py --case resnet --loaded --alone
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from analysis import analyse, build_model, load_dataset, set_threads
from analysis.datasets import Dataset
from analysis.memory import pages_kept
from contract.families import FAMILIES

RESNET = {"layers": [1, 1], "widths": [16, 32], "small_input": True, "num_classes": 10}


def _resnet_case(samples: int) -> tuple[torch.nn.Module, Dataset, list[str]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("resnet", RESNET).eval()
    x = torch.rand(samples, 3, 32, 32, generator=g)  # (N, 3, 32, 32)
    y = torch.randint(0, 10, (samples,), generator=g)
    ds = Dataset(x, y, "bench:resnet", "noise32", "0" * 64)
    return model, ds, list(FAMILIES)


def _quickstart_case(samples: int) -> tuple[torch.nn.Module, Dataset, list[str]]:
    from analysis.demo import train_demo_model
    from workers.quickstart import QUICKSTART_METRICS

    with tempfile.TemporaryDirectory() as tmp:
        trained = train_demo_model(tmp, seed=0)
        model = build_model(trained.architecture, trained.config)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(trained.weights))
    ds = load_dataset(trained.dataset)
    return model.eval(), ds, list(QUICKSTART_METRICS)


CASES: dict[str, Callable[[int], tuple[torch.nn.Module, Dataset, list[str]]]] = {
    "resnet": _resnet_case,
    "quickstart": _quickstart_case,
}


def _forward_s(model: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> float:
    """Best of three plain forward passes, under the allocator policy an analysis
    runs under (``analysis.memory.pages_kept``)."""
    with pages_kept():
        return _best_forward_s(model, x, batch)


def _best_forward_s(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(x[i : i + batch])
        best = min(best, time.perf_counter() - start)
    return best


def _run(
    model: torch.nn.Module, ds: Dataset, metrics: list[str], samples: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        result = analyse(
            model,
            ds,
            {"samples": samples, "metrics": metrics, "device": "cpu"},
            artifacts_dir=tmp,
        )
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    prov = result.provenance
    return {
        "wall": wall,
        "cpu": cpu,
        "load": os.getloadavg()[0],
        "stages": prov["timings_s"],
        "peaks": prov["memory_peaks_mb"],
    }


def _captum_conductance_s(model: torch.nn.Module, ds: Dataset, n: int) -> float | None:
    from captum.attr import LayerConductance

    from analysis.bottlenecks import find_bottlenecks
    from analysis.capture import profile

    x = ds.x[:n]
    necks = find_bottlenecks(profile(model, x[:2]), factor=2.0, model=model)
    if not necks:
        return None
    layer = dict(model.named_modules())[necks[0].layer.split("#")[0]]
    with torch.no_grad():
        target = model(x).argmax(1)
    start = time.perf_counter()
    LayerConductance(model, layer).attribute(x, target=target)
    return time.perf_counter() - start


def _table(title: str, run: dict[str, Any], forward_s: float) -> None:
    print(
        f"\n{title}: {run['wall']:.2f} s in all, {run['wall'] / forward_s:.1f}x; "
        f"CPU {run['cpu']:.2f} s; load average {run['load']:.1f}"
    )
    print(f"{'stage':<18}{'s':>9}{'x forward':>11}{'rss MB':>9}")
    for stage, seconds in run["stages"].items():
        rss = run["peaks"].get(stage, {}).get("rss", float("nan"))
        print(f"{stage:<18}{seconds:>9.2f}{seconds / forward_s:>11.1f}{rss:>9.0f}")


def _spin(until: float) -> None:
    while time.time() < until:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--metrics",
        default=None,
        help="comma-separated families instead of the case's (the README's "
        "command runs id,mi,probe,cka,attribution)",
    )
    ap.add_argument("--alone", action="store_true", help="each family by itself")
    ap.add_argument(
        "--loaded", action="store_true", help="also with the other core busy"
    )
    args = ap.parse_args()
    threads = set_threads(args.threads)
    print(f"torch threads {threads}, samples {args.samples}")
    for name in CASES if args.case == "all" else [args.case]:
        model, ds, metrics = CASES[name](args.samples)
        if args.metrics:
            metrics = args.metrics.split(",")
        n = min(args.samples, len(ds.x))
        forward_s = _forward_s(model, ds.x[:n])
        print(f"\n== {name}: plain forward of {n} samples {forward_s * 1e3:.1f} ms")
        _table(f"{name}, quiet", _run(model, ds, metrics, n), forward_s)
        if args.alone:
            for family in metrics:
                _table(
                    f"{name}, {family} alone", _run(model, ds, [family], n), forward_s
                )
        if args.loaded:
            busy = mp.Process(target=_spin, args=(time.time() + 3600,), daemon=True)
            busy.start()
            try:
                _table(f"{name}, loaded", _run(model, ds, metrics, n), forward_s)
            finally:
                busy.terminate()
        if "attribution" in metrics:
            captum_s = _captum_conductance_s(model, ds, min(n, 256))
            if captum_s is not None:
                print(
                    f"Captum LayerConductance at its defaults, first bottleneck, "
                    f"{min(n, 256)} samples: {captum_s:.2f} s"
                )


if __name__ == "__main__":
    main()
