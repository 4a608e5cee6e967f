#!/usr/bin/env bash
# The GPU path in one run (prepared for a CUDA machine; see bench/README.md, "GPU").
#
#   bash bench/gpu_check.sh [OUT_DIR]      # about 5 minutes on an H100-class GPU
#
# 1. the tests that need CUDA (they skip without a device);
# 2. the ID and MI kernels at 20k x 1024 on the GPU, timed after a warm-up, with the
#    CPU estimate beside each (same points, same value expected);
# 3. capture of every ResNet-50 call, exact and projected, on the GPU;
# 4. attribution with a real out-of-memory halving: a memory cap makes the first
#    internal batch fail, the plan is halved and the run finishes;
# 5. one analysis through a worker on the `gpu` queue (the quickstart, embedded
#    service: SQLite, a SQLite queue, one worker on both queues).
# Each step writes its output to OUT_DIR (default $OUT or ./gpu_check) and the script
# goes on after a failure; the exit status is the number of failed steps.
set -u
OUT_DIR="${1:-${OUT:-./gpu_check}}"
mkdir -p "$OUT_DIR"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
failed=0

step() {  # step NAME COMMAND...: run, keep the log, count a failure
    local name="$1"
    shift
    echo "== $name"
    local start=$SECONDS
    if "$@" >"$OUT_DIR/$name.log" 2>&1; then
        echo "   ok in $((SECONDS - start)) s"
    else
        echo "   FAILED ($?) in $((SECONDS - start)) s"
        failed=$((failed + 1))
    fi
    tail -n 25 "$OUT_DIR/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    >"$OUT_DIR/gpu.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" \
    >>"$OUT_DIR/gpu.txt" 2>&1
cat "$OUT_DIR/gpu.txt"

step tests_cuda python -m pytest -q -rs -p no:cacheprovider -k "cuda or gpu or device" \
    tests/analysis/test_intrinsic_dimension.py tests/analysis/test_attribution.py \
    tests/analysis/test_neighbors.py tests/analysis/test_capture.py

step kernels python - <<'PY'
import time

import torch

from analysis.intrinsic_dimension import MLE, TwoNN
from analysis.manifolds import make_manifold
from analysis.mutual_information import estimate_mi

dev = torch.device("cuda")


def timed(fn, repeat=5):
    fn()  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


X = make_manifold("sphere", 20000, 5, 1024, seed=0)  # (20000, 1024) float32
Xg = X.to(dev)
for name, est in (("twonn", TwoNN(n_subsamples=0)), ("mle", MLE(n_subsamples=0))):
    s, fit = timed(lambda: est.fit(Xg))
    cpu = est.fit(X).dimension_
    print(f"{name} 20000x1024 cuda median {s * 1e3:.1f} ms  estimate "
          f"{fit.dimension_:.6f} (cpu {cpu:.6f})")
for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    s, fit = timed(lambda: TwoNN(n_subsamples=0).fit(Xg))
    print(f"twonn allow_tf32={tf32}: {s * 1e3:.1f} ms, {fit.dimension_:.6f}")
torch.backends.cuda.matmul.allow_tf32 = False

g = torch.Generator().manual_seed(0)
T = torch.randn(20000, 16, generator=g, dtype=torch.float64)
Y = T[:, :8] + torch.randn(20000, 8, generator=g, dtype=torch.float64)
labels = (T[:, 0] > 0).long() + (T[:, 1] > 0).long()
for what, a, b in (("ksg 16+8", T, Y), ("ksg ross 16 + labels", T, labels)):
    s, mv = timed(lambda: estimate_mi(a.to(dev), b.to(dev), "ksg", n_subsamples=0), 3)
    cpu = estimate_mi(a, b, "ksg", n_subsamples=0).value
    print(f"{what} N=20000 cuda median {s:.3f} s  {mv.value:.6f} (cpu {cpu:.6f})")
wide = make_manifold("sphere", 20000, 5, 1024, seed=1).to(dev)
s, mv = timed(lambda: estimate_mi(wide, Xg, "ksg", n_subsamples=0), 3)
print(f"ksg 1024+1024 (PCA to max_dim) N=20000 cuda median {s:.3f} s  {mv.value:.4f}")
PY

step capture python bench/bench_capture.py --device cuda --size 224 --samples 64 \
    --batch-size 16 --repeats 3

step attribution_oom python - <<'PY'
import torch

from analysis._attr_methods import _unit_attribution
from analysis.architectures import build_model

dev = torch.device("cuda")
torch.manual_seed(0)
config = {"layers": [2, 2], "widths": [64, 128], "small_input": True,
          "num_classes": 10}
model = build_model("resnet", config).to(dev).eval()
x = torch.rand(256, 3, 32, 32, device=dev)
target = model(x).argmax(1)
# The budget admits every sample and step in one pass; a cap on this process's
# share of the GPU makes that pass run out of memory, so the plan must halve.
total = torch.cuda.get_device_properties(dev).total_memory
torch.cuda.set_per_process_memory_fraction(2 * 2**30 / total)
for method in ("conductance", "layer_ig"):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    attr, plan, _ = _unit_attribution(
        model, "layer1.0.conv2", x, method=method, target=target, n_steps=32,
        internal_batch_size=None, baseline=None, memory_budget_bytes=64 * 2**30,
    )
    first = 256 * 32
    print(method, tuple(attr.shape), plan.describe(),
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    assert plan.oom_retries > 0 and plan.internal_batch_size < first, "no halving"
PY
step attribution_bench python bench/bench_attribution.py --device cuda --samples 256

step worker_gpu_queue python - <<'PY'
from rich.console import Console

from workers.quickstart import run_quickstart

doc = run_quickstart(port=8799, samples=1000, console=Console(), timeout_s=900)
prov = doc["provenance"]
print("device", prov.get("device"), prov.get("device_name"))
print("timings_s", prov.get("timings_s"))
assert str(prov.get("device", "")).startswith("cuda"), "the analysis did not run on cuda"
PY

echo "failed steps: $failed"
exit "$failed"
