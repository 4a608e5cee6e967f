"""The rules of an audit over two analyses' metric rows: which ones fire, and where.

Pure: the store hands in the rows, this module says which fire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

BOTTLENECKS = "bottlenecks"


@dataclass(frozen=True)
class Value:
    """One metric row of one layer: the value and its interval (None: void)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    def interval(self) -> tuple[float, float] | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low, self.ci_high


@dataclass(frozen=True)
class Rows:
    """The metric rows of one analysis: ``(layer, metric, estimator) -> Value``,
    its layers in order and its bottleneck layers."""

    values: dict[tuple[str, str, str], Value]
    layers: tuple[str, ...]
    bottlenecks: frozenset[str]


def select_layers(selector: str, rows: Rows) -> list[str]:
    """``bottlenecks``, a glob (``fc*``, ``layer2.*``) or a layer's exact name."""
    if selector == BOTTLENECKS:
        return [name for name in rows.layers if name in rows.bottlenecks]
    return [name for name in rows.layers if fnmatchcase(name, selector)]


def overlap(
    a: tuple[float, float] | None, b: tuple[float, float] | None
) -> bool | None:
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def evaluate(
    rules: list[dict[str, Any]], new: Rows, baseline: Rows | None
) -> list[dict[str, Any]]:
    """Every (rule, layer) that fires, as ``FiredRow`` dicts, in rule then layer
    order. Change rules need a baseline row with a value on the same layer; a layer
    whose new value is void is skipped. ``require_no_overlap`` with a missing
    interval never fires (nothing shows the change is beyond the noise)."""
    fired: list[dict[str, Any]] = []
    for position, rule in enumerate(rules):
        key_tail = (rule["metric"], rule["estimator"])
        for layer in select_layers(rule["layers"], new):
            row = new.values.get((layer, *key_tail))
            if row is None or row.value is None:
                continue
            base = baseline.values.get((layer, *key_tail)) if baseline else None
            hit = _fires(rule, row, base)
            if hit is not None:
                fired.append({"rule": position, "layer": layer, **hit})
    return fired


def _fires(
    rule: dict[str, Any], new: Value, base: Value | None
) -> dict[str, Any] | None:
    op, threshold = rule["operator"], float(rule["threshold"])
    assert new.value is not None
    row: dict[str, Any] = {
        "metric": rule["metric"],
        "estimator": rule["estimator"],
        "operator": op,
        "threshold": threshold,
        "new_value": new.value,
        "baseline_value": base.value if base else None,
        "change": None,
    }
    if op in ("above", "below"):
        beyond = new.value > threshold if op == "above" else new.value < threshold
        interval = new.interval()
        overlaps = None if interval is None else interval[0] <= threshold <= interval[1]
        row["intervals_overlap"] = overlap(interval, base.interval()) if base else None
        if not beyond or (rule["require_no_overlap"] and overlaps is not False):
            return None
        return row
    if base is None or base.value is None:
        return None
    change = new.value - base.value
    if op == "abs_change":
        size = abs(change)
    elif base.value != 0:
        size = abs(change) / abs(base.value)
    else:
        size = math.inf if change != 0 else 0.0
    overlaps = overlap(new.interval(), base.interval())
    row["change"], row["intervals_overlap"] = change, overlaps
    if size <= threshold or (rule["require_no_overlap"] and overlaps is not False):
        return None
    return row
