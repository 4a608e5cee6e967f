"""Memory of loading hostile dataset files, before and after the intake checks.

Builds, in a temporary folder and in 1 MiB steps (never holding the array):

- ``bomb.npz``: 600 MB of float32 zeros deflated to about 583 KB (``x.npy``);
- ``huge.npz``: an ``x.npy`` whose header declares 10^12 float32 elements.

Each is loaded in a fresh subprocess and its peak RSS read with
``resource.getrusage(RUSAGE_SELF).ru_maxrss``:

- ``import``: the interpreter with torch, numpy and ``analysis`` imported (the floor);
- ``legacy``: what ``load_dataset`` did before: the file read, the unpacked total
  compared with the 2 GiB file cap, ``numpy.load``, the float32 cast and the
  finiteness check on the whole array at once;
- ``now``: ``analysis.load_dataset`` with its default caps;
- ``admitted``: the same with the ratio cap raised to 2000, so that the 600 MB
  array passes the checks and is loaded: the cost of data the caps let through.

Run: ``OMP_NUM_THREADS=1 python bench/bench_intake.py``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MB = 1024**2
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, resource, sys, time
import numpy as np
import torch
from analysis.datasets import load_dataset
from analysis.safefiles import DEFAULT_MAX_BYTES, read_regular_file

mode, path = sys.argv[1], sys.argv[2]
start = time.perf_counter()
outcome = "loaded"
try:
    if mode == "legacy":
        data = read_regular_file(path, DEFAULT_MAX_BYTES)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            x = torch.from_numpy(npz["x"]).to(torch.float32)
        bad = ~torch.isfinite(x.reshape(len(x), -1))  # the check as it was: whole
        assert not bad.any()
    elif mode == "now":
        load_dataset(path)
    elif mode == "admitted":
        load_dataset(path, max_compression_ratio=2000)
except BaseException as e:
    outcome = f"{type(e).__name__}: {str(e)[:90]}"
elapsed = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{peak_mb:.0f}\t{elapsed:.2f}\t{outcome}")
"""


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    body = (text + " " * pad + "\n").encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def build_bomb(path: Path, n_bytes: int = 600 * 1000**2) -> None:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        f.write(npy_header("<f4", (n_bytes // 4 // 100, 100)))
        chunk = bytes(MB)
        left = n_bytes
        while left > 0:
            f.write(chunk[: min(left, MB)])
            left -= MB


def build_huge(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy_header("<f4", (10**6, 10**6)) + bytes(64))


def measure(mode: str, path: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = {"bomb.npz": build_bomb, "huge.npz": build_huge}
        print("file\tstored KB\tmode\tpeak RSS MB\ts\toutcome")
        for name, build in files.items():
            path = Path(tmp) / name
            t = time.perf_counter()
            build(path)
            kb = path.stat().st_size / 1000
            print(f"# built {name} in {time.perf_counter() - t:.1f} s", flush=True)
            for mode in ("import", "legacy", "now", "admitted"):
                print(f"{name}\t{kb:.0f}\t{mode}\t{measure(mode, path)}", flush=True)


if __name__ == "__main__":
    main()
