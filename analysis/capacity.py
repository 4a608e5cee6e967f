"""Capacity: does a narrower neck overfit less? The generalisation gap of models of
one family that differ in neck width, next to the intrinsic dimension at the neck.

For each model: its score on the train split and on the held-out split, the gap,
and the ID of its neck's activations on the held-out split. The gap is positive
when the model does better on the data it was trained on: train minus held-out
accuracy, or held-out minus train loss (cross-entropy for class labels, mean
squared error otherwise). The neck is the model's narrowest bottleneck
(:func:`analysis.bottlenecks.find_bottlenecks`) unless one is named. Splits are
the user's own (``(x, y)`` pairs) or drawn by :func:`draw_split` from a seed that
the caller stores with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from analysis.bottlenecks import find_bottlenecks
from analysis.capture import capture, profile
from analysis.errors import InvalidInputError
from analysis.intrinsic_dimension import estimate_id

__all__ = ["CapacityModel", "capacity_table", "draw_split"]

Split = tuple[torch.Tensor, torch.Tensor]  # (x (N, ...), y (N,) or (N, k))


@dataclass
class CapacityModel:
    """One model of the series: its neck ``width``, the model, its train and
    held-out splits, and optionally the neck's record name (``layer``)."""

    width: int
    model: nn.Module
    train: Split
    held_out: Split
    layer: str | None = None


def draw_split(
    n: int, held_out: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train indices, held-out indices)`` of ``range(n)``, a seeded permutation.

    Store ``seed`` and ``held_out`` with the table: the same pair gives the same
    split.
    """
    if not 0 < held_out < 1:
        raise InvalidInputError(f"held_out must be in (0, 1), got {held_out}")
    m = max(1, round(n * held_out))
    if m >= n:
        raise InvalidInputError(f"{n} samples cannot give a held-out part and a rest")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[m:].sort().values, perm[:m].sort().values


def capacity_table(
    series: Sequence[CapacityModel | tuple[Any, ...]],
    *,
    score: Literal["accuracy", "loss"] = "accuracy",
    id_method: str = "twonn",
    factor: float = 2.0,
    samples: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The generalisation gap and the ID at the neck of every model, by width.

    Parameters
    ----------
    series:
        :class:`CapacityModel` entries, or tuples ``(width, model, train,
        held_out[, layer])`` with splits ``(x, y)``; one family, different neck
        widths.
    score:
        ``"accuracy"`` (class labels) or ``"loss"``.
    id_method:
        An estimator of ``analysis.intrinsic_dimension.ID_ESTIMATORS``.
    factor:
        The bottleneck factor used to find each model's neck.
    samples:
        At most this many held-out samples feed the ID (the first ones).
    seed:
        Seed of the ID's subsampling interval.

    Returns
    -------
    list[dict]
        One row per model in increasing width: ``width``, ``layer``, ``score``,
        ``train``, ``held_out``, ``gap``, and ``id`` (a metric row with its
        interval, as a dict).

    Example
    -------
    >>> rows = capacity_table([(w, net_w, (xt, yt), (xh, yh)) for w, net_w in nets])
    >>> [(r["width"], round(r["gap"], 3)) for r in rows]
    """
    if score not in ("accuracy", "loss"):
        raise InvalidInputError(f"score must be 'accuracy' or 'loss', got {score!r}")
    entries = [e if isinstance(e, CapacityModel) else CapacityModel(*e) for e in series]
    if not entries:
        raise InvalidInputError("capacity_table needs at least one model")
    rows = []
    for entry in sorted(entries, key=lambda e: e.width):
        train = _score(entry.model, *entry.train, score, batch_size)
        held = _score(entry.model, *entry.held_out, score, batch_size)
        x_held = entry.held_out[0][:samples]
        layer = entry.layer or _neck(entry.model, x_held, factor)
        acts = capture(entry.model, x_held, names=[layer], batch_size=batch_size)
        row = estimate_id(acts.activations[layer], id_method, seed=seed)
        rows.append(
            {
                "width": entry.width,
                "layer": layer,
                "score": score,
                "train": train,
                "held_out": held,
                "gap": train - held if score == "accuracy" else held - train,
                "id": row.model_dump(),
            }
        )
    return rows


def _neck(model: nn.Module, x: torch.Tensor, factor: float) -> str:
    found = find_bottlenecks(profile(model, x[:2]), factor=factor, model=model)
    if not found:
        raise InvalidInputError(
            "the model has no bottleneck at this factor: name its neck (layer=...)"
        )
    return min(found, key=lambda b: b.width).layer


def _score(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, score: str, batch_size: int
) -> float:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.cat(
                [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            )  # (N, classes) or (N, ...)
    finally:
        model.train(was)
    classes = not y.is_floating_point()
    if score == "accuracy":
        if not classes:
            raise InvalidInputError("accuracy needs class labels: use score='loss'")
        return float((out.argmax(1) == y).float().mean())
    if classes:
        return float(F.cross_entropy(out.float(), y))
    return float(F.mse_loss(out.float(), y.float().reshape(out.shape)))
