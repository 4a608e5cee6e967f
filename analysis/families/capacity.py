"""``capacity``: the generalisation gap of one model on a split of its dataset,
next to the intrinsic dimension at its narrowest neck.

Over a series of models that differ in neck width (the service's series, tagged
by width), the rows of every model give the gap against width
(``GET /v1/series/{id}/trajectory?metric=generalisation_gap&order=tag``).

The split (:class:`contract.families.CapacitySection`) is over the rows of the
whole dataset, not only the run's ``samples``: ``indices`` or ``fractions`` name
``[start, stop)`` of each part; ``drawn`` holds out ``held_out_fraction`` of the
rows by :func:`analysis.capacity.draw_split` with the run's seed, the split a
model trained on its first part was trained on. The section stores the split
(its kind, sizes and the sha256 of each part's indices). Each part is scored on
at most ``max_samples`` rows (a seeded subset when larger).

Rows ``generalisation_gap`` on the output layer (the last captured layer whose
per-sample shape is the model output's), one per score: ``accuracy`` (train
minus held-out, class labels) and ``loss`` (held-out minus train: cross-entropy
against class labels, mean squared error against the input for a reconstruction
or against real targets), with the 95% intervals of
:func:`analysis.capacity.generalisation_gap`. The section's ``necks`` entry is
the narrowest bottleneck with the gap rows and the ``intrinsic_dimension`` rows
that the ``id`` family wrote on it in this run; the ``necks`` family reads it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from analysis.capacity import draw_split, generalisation_gap, score_table
from analysis.errors import DataError
from analysis.families import Context, Family, register, void
from analysis.types import MetricValue
from contract.families import CapacitySection

__all__ = ["Capacity", "resolve_split"]

GAP, ID = "generalisation_gap", "intrinsic_dimension"


@register
class Capacity(Family):
    name = "capacity"

    def section(self, ctx: Context) -> dict[str, Any]:
        section: CapacitySection = ctx.section("capacity")
        whole = ctx.data_x is not None
        x = ctx.data_x if ctx.data_x is not None else ctx.xs
        y = ctx.data_y if whole else ctx.ys
        train, held, split = resolve_split(section, len(x), ctx.config.seed)
        split["over"] = "the dataset" if whole else "the run's samples"
        out_shape = _output_shape(ctx)
        target, what = _target(section.target, x, y, out_shape)
        out: dict[str, Any] = {
            "split": split,
            "target": what,
            "output_layer": None,
            "metrics": [],
            "necks": [],
            "reason": None,
        }
        # one forward pass per part serves every score
        scored = [s for s in section.scores if _scorable(s, target)]
        bs = ctx.config.batch_size
        parts = (
            score_table(ctx.model, x[train], target[train], scored, bs),
            score_table(ctx.model, x[held], target[held], scored, bs),
        )
        rows = [_row(parts, len(held), score, split, what) for score in section.scores]
        layer = _output_layer(ctx, out_shape)
        if layer is not None:
            layer.metrics += rows
            out["output_layer"] = layer.name
        dumped = [r.model_dump() for r in rows]
        out["metrics"] = dumped
        neck = min(ctx.bottlenecks, key=lambda b: b.width, default=None)
        if neck is None:
            out["reason"] = "the model has no bottleneck: the gap has no neck to sit by"
            return out
        here = next((la for la in ctx.layers if la.name == neck.layer), None)
        ids = [] if here is None else [m for m in here.metrics if m.metric == ID]
        entry_rows = [
            {**d, "layer": layer.name} if layer is not None else d for d in dumped
        ] + [{**m.model_dump(), "layer": neck.layer} for m in ids]
        out["necks"].append(
            {
                "layer": neck.layer,
                "width": neck.width,
                "metrics": entry_rows,
                "id_reason": None if ids else _no_id(ctx, here),
            }
        )
        return out

    def void_section(self, reason: str) -> dict[str, Any]:
        return {"split": None, "metrics": [], "necks": [], "reason": reason}


def resolve_split(
    section: CapacitySection, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(train indices, held-out indices, what to store)`` of ``range(n)``.

    A split that does not hold together (``CapacitySection.split_problems``) or
    that reaches past the data raises ``DataError`` naming every problem; the
    family's section then says why. Each part is cut to ``section.max_samples``
    rows by a seeded subset; the
    stored dict says the kind, the ranges or the drawn fraction and seed, each
    part's size and the sha256 of its indices (int64 little-endian).
    """
    problems = section.split_problems()
    if problems:
        raise DataError("capacity: " + "; ".join(problems))
    info: dict[str, Any] = {"kind": section.split}
    if section.split == "drawn":
        train, held = draw_split(n, section.held_out_fraction, seed)
        info.update(held_out_fraction=section.held_out_fraction, seed=seed)
    else:
        assert section.train is not None and section.held_out is not None
        scale = n if section.split == "fractions" else 1
        ends = []
        for part, (a, b) in (("train", section.train), ("held_out", section.held_out)):
            start, stop = round(a * scale), round(b * scale)
            if stop > n or stop - start < 2:
                raise DataError(
                    f"capacity.{part}: [{a}, {b}) gives rows {start}..{stop} of a "
                    f"dataset of {n}; each part needs at least 2 rows inside it"
                )
            ends.append((start, stop))
            info[part] = [a, b]
        train, held = (torch.arange(s, e) for s, e in ends)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for idx in (train, held):
        if len(idx) > section.max_samples:
            keep = torch.randperm(len(idx), generator=gen)[: section.max_samples]
            idx = idx[keep.sort().values]
        parts.append(idx)
    for part, idx in zip(("train", "held_out"), parts, strict=True):
        info[f"n_{part}"] = len(idx)
        info[f"{part}_sha256"] = hashlib.sha256(
            idx.numpy().astype("<i8").tobytes()
        ).hexdigest()
    return parts[0], parts[1], info


def _output_shape(ctx: Context) -> tuple[int, ...] | None:
    with torch.no_grad():
        was = ctx.model.training
        ctx.model.eval()
        try:
            out = ctx.model(ctx.xs[:2])
        finally:
            ctx.model.train(was)
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None


def _target(
    kind: str, x: torch.Tensor, y: torch.Tensor | None, out: tuple[int, ...] | None
) -> tuple[torch.Tensor, str]:
    if out is None:
        raise DataError("the model's output is not a tensor: no score to compare")
    size = 1
    for d in out:
        size *= d
    reconstructs = size == x[0].numel()
    if kind == "input" or (kind == "auto" and reconstructs):
        if not reconstructs:
            raise DataError(
                f"target input: the output has {size} values per sample, the input "
                f"{x[0].numel()}"
            )
        return x, "input"
    if y is None:
        raise DataError(
            "the dataset has no labels and the output is not a reconstruction: "
            "no target to score"
        )
    return y, "labels"


def _scorable(score: str, target: torch.Tensor) -> bool:
    return not (score == "accuracy" and target.is_floating_point())


def _row(
    parts: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    n_held: int,
    score: Any,
    split: dict[str, Any],
    what: str,
) -> MetricValue:
    if score not in parts[0]:
        why = (
            "accuracy needs class labels; the target is the input"
            if what == "input"
            else "accuracy needs class labels; the labels are real numbers"
        )
        return void(GAP, score, n_held, why)
    gap = generalisation_gap(parts[0][score], parts[1][score], score)
    return MetricValue(
        GAP,
        score,
        gap["gap"],
        gap["ci_low"],
        gap["ci_high"],
        n_samples=gap["n_held_out"],
        params={
            "train": gap["train"],
            "held_out": gap["held_out"],
            "n_train": gap["n_train"],
            "n_held_out": gap["n_held_out"],
            "interval": gap["interval"],
            "target": what,
            "split": split["kind"],
        },
    )


def _output_layer(ctx: Context, shape: tuple[int, ...] | None) -> Any:
    """The last captured layer whose per-sample shape is the output's."""
    found = [la for la in ctx.layers if shape is not None and tuple(la.shape) == shape]
    return found[-1] if found else None


def _no_id(ctx: Context, here: Any) -> str:
    if "id" not in ctx.config.metrics:
        return "id did not run"
    if here is None:
        return "the neck layer was not captured; add it to layers"
    return "id wrote no row at the neck"
