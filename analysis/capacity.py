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

The interval of a gap counts the evaluation samples only (not the randomness of
training): for accuracy, Newcombe's hybrid score interval of a difference of two
independent proportions (Newcombe 1998, "Interval estimation for the difference
between independent proportions", method 10: Wilson intervals of each side
combined); for loss, the difference of two means +- 1.96 standard errors
(Welch's normal approximation). Both are 95% intervals.
"""

from __future__ import annotations

import math
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

__all__ = [
    "CapacityModel",
    "capacity_table",
    "draw_split",
    "generalisation_gap",
    "per_sample_scores",
    "score_table",
]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile

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
        ``train``, ``held_out``, ``gap`` with its 95% interval ``gap_ci`` (module
        docstring), and ``id`` (a metric row with its interval, as a dict).

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
        gap = generalisation_gap(
            per_sample_scores(entry.model, *entry.train, score, batch_size),
            per_sample_scores(entry.model, *entry.held_out, score, batch_size),
            score,
        )
        x_held = entry.held_out[0][:samples]
        layer = entry.layer or _neck(entry.model, x_held, factor)
        acts = capture(entry.model, x_held, names=[layer], batch_size=batch_size)
        row = estimate_id(acts.activations[layer], id_method, seed=seed)
        rows.append(
            {
                "width": entry.width,
                "layer": layer,
                "score": score,
                "train": gap["train"],
                "held_out": gap["held_out"],
                "gap": gap["gap"],
                "gap_ci": (gap["ci_low"], gap["ci_high"]),
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


def per_sample_scores(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    score: Literal["accuracy", "loss"],
    batch_size: int = 256,
) -> torch.Tensor:
    """Each sample's score, ``(N,)`` float64 on the CPU.

    ``accuracy``: 1 where ``argmax`` of the output is the class label ``y``, else
    0. ``loss``: the cross-entropy against class labels (integer ``y``), or the
    mean squared error over the output's elements against real targets ``y``
    (``(N, ...)`` with the output's size per sample; ``y = x`` scores a
    reconstruction). The model runs in eval mode under ``no_grad`` on its own
    device, in batches of ``batch_size``, and keeps the mode it had.
    """
    return score_table(model, x, y, (score,), batch_size)[score]


def score_table(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    scores: Sequence[Literal["accuracy", "loss"]],
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """:func:`per_sample_scores` of several ``scores`` from one forward pass per
    batch: ``{score: (N,) float64}``."""
    classes = not y.is_floating_point()
    if "accuracy" in scores and not classes:
        raise InvalidInputError("accuracy needs class labels: use score='loss'")
    device = next(
        (p.device for p in [*model.parameters(), *model.buffers()]),
        torch.device("cpu"),
    )
    was = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {score: [] for score in scores}
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                # (b, classes) or (b, ...)
                out = model(x[i : i + batch_size].to(device))
                if not isinstance(out, torch.Tensor):
                    raise InvalidInputError(
                        f"the model's output is a {type(out).__name__}, not a tensor"
                    )
                target = y[i : i + batch_size].to(device)
                for score in scores:
                    row = _per_sample(out.float(), target, score, classes)
                    parts[score].append(row.cpu())
    finally:
        model.train(was)
    return {score: torch.cat(rows).double() for score, rows in parts.items()}  # (N,)


def _per_sample(
    out: torch.Tensor, y: torch.Tensor, score: str, classes: bool
) -> torch.Tensor:
    if score == "accuracy":
        return (out.argmax(1) == y).float()  # (b,)
    if classes:
        return F.cross_entropy(out, y, reduction="none")  # (b,)
    if y[0].numel() != out[0].numel():
        raise InvalidInputError(
            f"targets of {y[0].numel()} values per sample cannot score an output of "
            f"{out[0].numel()}"
        )
    err = (out.flatten(1) - y.float().flatten(1)) ** 2  # (b, D)
    return err.mean(1)


def generalisation_gap(
    train: torch.Tensor, held_out: torch.Tensor, score: Literal["accuracy", "loss"]
) -> dict[str, Any]:
    """The gap between per-sample scores ``train`` (n1,) and ``held_out`` (n2,),
    positive when the model does better on its training data, with a 95% interval.

    ``accuracy`` (scores 0/1): ``p1 - p2`` and Newcombe's hybrid score interval
    (method 10): with Wilson intervals ``[l1, u1]``, ``[l2, u2]`` of each side,
    ``[d - sqrt((p1 - l1)^2 + (u2 - p2)^2), d + sqrt((u1 - p1)^2 + (p2 - l2)^2)]``.
    ``loss``: ``mean2 - mean1`` +- 1.96 ``sqrt(s1^2 / n1 + s2^2 / n2)``.

    Returns ``gap``, ``ci_low``, ``ci_high``, ``train``, ``held_out`` (the mean
    score of each side), ``n_train``, ``n_held_out`` and ``interval`` (its name).

    Example
    -------
    >>> g = generalisation_gap(torch.ones(70), torch.zeros(80), "accuracy")
    >>> round(g["gap"], 3)
    1.0
    """
    n1, n2 = len(train), len(held_out)
    if n1 < 2 or n2 < 2:
        raise InvalidInputError(
            f"a gap needs at least 2 samples on each side, got {n1} and {n2}"
        )
    m1, m2 = float(train.double().mean()), float(held_out.double().mean())
    if score == "accuracy":
        d = m1 - m2
        l1, u1 = _wilson(m1, n1)
        l2, u2 = _wilson(m2, n2)
        low = d - math.sqrt((m1 - l1) ** 2 + (u2 - m2) ** 2)
        high = d + math.sqrt((u1 - m1) ** 2 + (m2 - l2) ** 2)
        interval = "Newcombe hybrid score (method 10), 95%"
    else:
        d = m2 - m1
        se = math.sqrt(
            float(train.double().var()) / n1 + float(held_out.double().var()) / n2
        )
        low, high = d - Z95 * se, d + Z95 * se
        interval = "difference of means +- 1.96 standard errors (Welch), 95%"
    return {
        "gap": d,
        "ci_low": low,
        "ci_high": high,
        "train": m1,
        "held_out": m2,
        "n_train": n1,
        "n_held_out": n2,
        "interval": interval,
    }


def _wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``p`` observed on ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half
