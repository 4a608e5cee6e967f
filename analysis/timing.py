"""Where the time and memory of an analysis go, stage by stage (provenance)."""

from __future__ import annotations

import contextlib
import platform
import resource
import time
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["StageTimer"]


class StageTimer:
    """Seconds spent per stage, summed over its calls, per layer within a family,
    and the memory high-water mark at the end of each stage (the process's
    resident set; on CUDA also the most the device held during the stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.layers: dict[str, dict[str, float]] = {}
        self.peaks_mb: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str, layer: str | None = None) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + spent, 4)
            if layer is not None:
                per = self.layers.setdefault(stage, {})
                per[layer] = round(per.get(layer, 0.0) + spent, 4)
            peak = self.peaks_mb.setdefault(stage, {})
            peak["rss"] = _rss_high_water_mb()
            if cuda:
                used = torch.cuda.max_memory_allocated(self.device) / 2**20
                peak["cuda"] = round(max(peak.get("cuda", 0.0), used), 1)

    def provenance(self) -> dict[str, Any]:
        return {
            "timings_s": self.seconds,
            "layer_timings_s": self.layers,
            "memory_peaks_mb": self.peaks_mb,
        }


def _rss_high_water_mb() -> float:
    """The process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)
