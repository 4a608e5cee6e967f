"""Captum's internal batching, sized from a memory budget, halved on CUDA OOM.

Private to :mod:`analysis.attribution`. A path method evaluates the model at
``steps`` points per sample (``n_steps`` for integrated gradients, ``n_steps + 1``
for conductance); captum's ``internal_batch_size`` cuts the ``steps x samples``
evaluations into forward+backward passes of at most that many rows. Its floor is
one step's batch (``samples``; FACTS.md: 112x a forward instead of 185x, 136 MB
instead of 5.75 GB), and for LayerConductance two steps, since it differences
consecutive steps inside one pass. Below the floor we cut the samples instead.

One row is costed at ``ROW_FACTOR`` (1.5) times the bytes of every leaf module's
output for one sample plus the input. Measured on the CPU with parameter gradients
off (bench/bench_attribution.py, a small ResNet at 32 x 32): 0.7 times that sum per
row, so the estimate leaves a factor of about 2 for what it does not see (the
attributions kept, cuDNN workspaces, allocator slack). The plan fits
``chunk x steps`` rows into the budget.

On the CPU a pass also holds at most ``CPU_PASS_BYTES`` (320 MiB) of estimated
rows: a bigger pass costs more per row, not less. Measured on the README's ResNet
(4.8 MiB a row, one thread, CPU seconds): LayerConductance 2.2 ms a row in passes
of 66 rows, 2.9 ms in passes of 132 to 264.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from analysis.capture import profile

ROW_FACTOR = 1.5
CPU_PASS_BYTES = 320 * 2**20
Output = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Plan:
    """``chunk`` samples per captum call, ``steps`` path points per internal batch."""

    chunk: int
    steps: int
    floor: int  # fewest steps per internal batch the method accepts
    total_steps: int
    row_bytes: int
    oom_retries: int = 0

    @property
    def internal_batch_size(self) -> int:
        return self.chunk * self.steps

    def halved(self) -> Plan:
        """Half the rows of an internal batch: fewer steps first, then fewer samples."""
        if self.steps > self.floor:
            return replace(
                self,
                steps=max(self.floor, self.steps // 2),
                oom_retries=self.oom_retries + 1,
            )
        if self.chunk > 1:
            return replace(
                self, chunk=self.chunk // 2, oom_retries=self.oom_retries + 1
            )
        raise MemoryError("one sample at the fewest steps does not fit")

    def describe(self) -> dict[str, int]:
        return {
            "internal_batch_size": self.internal_batch_size,
            "samples_per_call": self.chunk,
            "steps_per_batch": self.steps,
            "oom_retries": self.oom_retries,
        }


def max_rows(x: torch.Tensor, row: int) -> int | None:
    """Rows of ``row`` bytes in ``CPU_PASS_BYTES`` for inputs on the CPU; no cap
    on an accelerator."""
    return max(1, CPU_PASS_BYTES // max(1, row)) if x.device.type == "cpu" else None


def row_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Estimated bytes of one sample at one path step, forward and backward."""
    layers = profile(model, x[:1])
    widths = sum(layer.width for layer in layers if layer.is_leaf)
    per_sample = x[:1].numel()
    return int(ROW_FACTOR * (widths + per_sample) * x.element_size())


def plan_batches(
    n: int,
    total_steps: int,
    row: int,
    budget: int,
    internal_batch_size: int | None = None,
    *,
    overlap: bool = False,
    max_rows: int | None = None,
) -> Plan:
    """The largest internal batch that fits ``budget`` and ``max_rows`` (or the
    one asked for).

    ``overlap``: consecutive internal batches share one path point (conductance),
    so a batch needs two points and one of every ``steps`` is computed twice.
    Such a method takes whole paths of as many samples as fit, when one path
    fits, so no point is computed twice; below that and ``n`` samples x 4 points
    it takes fewer samples per call with 4 points each (a third more passes)
    rather than all samples with 2 (twice the passes). An
    ``internal_batch_size`` given is used as captum would, all samples per call,
    unless it is below the method's floor.
    """
    floor, good = (2, 4) if overlap else (1, 1)
    asked = internal_batch_size is not None
    if asked:  # as captum reads it: all samples if it can
        good = floor
    good = min(good, max(floor, total_steps))
    rows = internal_batch_size or max(1, budget // max(1, row))
    if max_rows is not None and not asked:
        rows = min(rows, max_rows)
    if overlap and not asked and total_steps <= rows < n * total_steps:
        chunk, steps = rows // total_steps, total_steps
    elif rows >= n * good:
        chunk, steps = n, min(total_steps, rows // n)
    else:
        steps = max(floor, min(good, rows))
        chunk = max(1, rows // steps)
    return Plan(min(chunk, n), steps, floor, total_steps, row)


def run_chunked(
    call: Callable[[slice, int], Output],
    n: int,
    plan: Plan,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[Output, Plan]:
    """``call(rows, internal_batch_size)`` for consecutive slices ``rows`` of ``n``.

    On ``torch.cuda.OutOfMemoryError`` the plan is halved (:meth:`Plan.halved`)
    and the failed slice runs again; the plan returned is the one that finished.
    Outputs (a tensor or a tuple of tensors per call) are detached, passed
    through ``reduce`` (per chunk, so only reduced chunks are kept) and joined.
    """
    parts: list[tuple[torch.Tensor, ...]] = []
    single = True
    start = 0
    while start < n:
        stop = min(n, start + plan.chunk)
        out: Output | None = None
        try:
            out = call(slice(start, stop), plan.steps * (stop - start))
        except torch.cuda.OutOfMemoryError as e:
            try:
                plan = plan.halved()
            except MemoryError:
                raise e from None
        if out is None:
            # outside the except block: its traceback no longer pins the tensors
            # of the failed pass, so the cache can give their memory back
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        single = isinstance(out, torch.Tensor)
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        chunk = tuple(t.detach() for t in outs)
        parts.append(chunk if reduce is None else tuple(reduce(t) for t in chunk))
        start = stop
    joined = tuple(
        torch.cat([p[i] for p in parts]).contiguous() for i in range(len(parts[0]))
    )  # row-major whatever layout the passes ran in
    return (joined[0] if single else joined), plan
