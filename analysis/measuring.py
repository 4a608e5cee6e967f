"""Running the metric families over an analysis's captures: per layer, then the
families' own sections, failing small (a family that fails on a layer leaves every
other row; its own rows there are ``null`` with the reason and a warning)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from analysis.errors import BottlelensError
from analysis.families import Context, Family
from analysis.result import LayerResult
from analysis.timing import StageTimer
from analysis.types import LayerInfo, MetricValue

__all__ = ["measure_layers", "measure_sections"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: profile, capture, metrics, then the
name of each family with a section (cka, attribution, ...)."""


def measure_layers(
    ctx: Context,
    families: list[Family],
    neck_layers: set[str],
    report: Progress,
    warnings: list[str],
    timer: StageTimer,
    fatal: tuple[type[BaseException], ...],
) -> None:
    """Every per-layer family on every captured layer, into ``ctx.layers``.

    A family that fails on a layer leaves that layer's other rows in place; its
    own rows there are ``null`` with the reason, and a warning names it.
    """
    report("metrics", 0, len(ctx.layer_infos))
    measured: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for done, info in enumerate(ctx.layer_infos, start=1):
        acts = ctx.activations[info.name]  # (n, stored_width)
        twin = _identical_to(acts, measured)
        if twin is not None:
            metrics = _copied_rows(ctx, twin)
        else:
            measured.setdefault(tuple(acts.shape), []).append((info.name, acts))
            metrics = []
            for family in families:
                with timer(family.name, info.name):
                    try:
                        metrics += family.layer_rows(ctx, info, acts)
                    except fatal:
                        raise
                    except Exception as exc:
                        reason = _failure(exc)
                        warnings.append(
                            f"{family.name} failed on {info.name}: {reason}"
                        )
                        metrics += family.void_rows(ctx, reason)
        ctx.layers.append(_layer_result(info, info.name in neck_layers, metrics))
        report("metrics", done, len(ctx.layer_infos))


def _identical_to(
    acts: torch.Tensor, measured: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]]
) -> str | None:
    """The earlier layer whose stored activations equal ``acts`` exactly (an
    identity, a dropout in eval, an in-place activation captured twice), if any."""
    for name, other in measured.get(tuple(acts.shape), []):
        if torch.equal(acts, other):
            return name
    return None


def _copied_rows(ctx: Context, twin: str) -> list[MetricValue]:
    """The rows of layer ``twin``, for a layer whose outputs equal its: measured
    once, each copy flagged ``identical`` with ``params["identical_to"]``."""
    source = next(layer for layer in ctx.layers if layer.name == twin)
    rows = []
    for row in source.metrics:
        copy = row.model_copy(deep=True)
        copy.params["identical_to"] = twin
        copy.flags = [*copy.flags, "identical"]
        rows.append(copy)
    return rows


def measure_sections(
    ctx: Context,
    families: list[Family],
    report: Progress,
    warnings: list[str],
    timer: StageTimer,
    fatal: tuple[type[BaseException], ...],
) -> dict[str, Any]:
    """The families' own sections, each after the families it reads (``after``);
    a failure keeps the rest and says why."""
    sections = ctx.sections
    for family in _after_order(families):
        key = family.spec.section
        if key is None:
            continue
        report(family.name, 0, 1)
        with timer(family.name):
            try:
                sections[key] = family.section(ctx)
            except fatal:
                raise
            except Exception as exc:
                reason = _failure(exc)
                warnings.append(f"{family.name} failed: {reason}")
                sections[key] = family.void_section(reason)
        report(family.name, 1, 1)
    return sections


def _after_order(families: list[Family]) -> list[Family]:
    """``families`` in their order, except that each comes after those named in
    its spec's ``after`` (a stable topological order; ``after`` has no cycles)."""
    pending, done = list(families), []
    while pending:
        ready = next(
            f
            for f in pending
            if not any(g.name in f.spec.after for g in pending if g is not f)
        )
        pending.remove(ready)
        done.append(ready)
    return done


def _failure(exc: Exception) -> str:
    """A failure as a row's reason: the library's own message, or the type."""
    if isinstance(exc, BottlelensError):
        return str(exc)
    log.warning("a metric family failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _layer_result(
    info: LayerInfo, is_bottleneck: bool, metrics: list[MetricValue]
) -> LayerResult:
    return LayerResult(
        name=info.name,
        index=info.index,
        module=info.module,
        shape=list(info.shape),
        width=info.width,
        is_bottleneck=is_bottleneck,
        projected_to=info.projected_to,
        projection=info.projection,
        metrics=metrics,
    )
