"""Captum's internal batching, sized from a memory budget, halved on CUDA OOM.

Private to :mod:`analysis.attribution`. A path method evaluates the model at
``steps`` points per sample (``n_steps`` for integrated gradients, ``n_steps + 1``
for conductance); captum's ``internal_batch_size`` cuts the ``steps x samples``
evaluations into forward+backward passes of at most that many rows. Its floor is
one step's batch (``samples``; FACTS.md: 112x a forward instead of 185x, 136 MB
instead of 5.75 GB), and for LayerConductance two steps, since it differences
consecutive steps inside one pass. Below the floor we cut the samples instead.

One row costs about ``ROW_FACTOR`` times the bytes of every leaf module's output
for one sample (the activations autograd keeps, their gradients, temporaries) plus
the input; the plan fits ``chunk x steps`` rows into the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from analysis.capture import profile

ROW_FACTOR = 3
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


def row_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Estimated bytes of one sample at one path step, forward and backward."""
    layers = profile(model, x[:1])
    widths = sum(layer.width for layer in layers if layer.is_leaf)
    per_sample = x[:1].numel()
    return ROW_FACTOR * (widths + per_sample) * x.element_size()


def plan_batches(
    n: int,
    total_steps: int,
    floor: int,
    row: int,
    budget: int,
    internal_batch_size: int | None = None,
) -> Plan:
    """The largest internal batch that fits ``budget`` (or the one asked for)."""
    if internal_batch_size is not None:
        rows = internal_batch_size
    else:
        rows = max(1, budget // max(1, row))
    if rows >= n * floor:
        chunk, steps = n, min(total_steps, rows // n)
    else:
        chunk, steps = max(1, rows // floor), floor
    return Plan(min(chunk, n), steps, floor, total_steps, row)


def run_chunked(
    call: Callable[[slice, int], Output], n: int, plan: Plan
) -> tuple[Output, Plan]:
    """``call(rows, internal_batch_size)`` for consecutive slices ``rows`` of ``n``.

    On ``torch.cuda.OutOfMemoryError`` the plan is halved (:meth:`Plan.halved`)
    and the failed slice runs again; the plan returned is the one that finished.
    Outputs (a tensor or a tuple of tensors per call) are detached and joined.
    """
    parts: list[tuple[torch.Tensor, ...]] = []
    single = True
    start = 0
    while start < n:
        stop = min(n, start + plan.chunk)
        try:
            out = call(slice(start, stop), plan.steps * (stop - start))
        except torch.cuda.OutOfMemoryError as e:
            try:
                plan = plan.halved()
            except MemoryError:
                raise e from None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        single = isinstance(out, torch.Tensor)
        parts.append((out,) if isinstance(out, torch.Tensor) else tuple(out))
        start = stop
    joined = tuple(
        torch.cat([p[i].detach() for p in parts]) for i in range(len(parts[0]))
    )
    return (joined[0] if single else joined), plan
