"""Per-unit importance from unit attributions: effective units and top-k share.

Private to :mod:`analysis.attribution`, which re-exports :func:`unit_summary`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from analysis.errors import InvalidInputError
from analysis.types import MetricValue

TOP_FRACTIONS = (0.01, 0.05, 0.10, 0.25)


def unit_summary(
    attr: torch.Tensor,
    *,
    method: str = "conductance",
    params: Mapping[str, Any] | None = None,
    top_fractions: Sequence[float] = TOP_FRACTIONS,
) -> dict[str, Any]:
    """How concentrated a layer's attribution is over its units.

    A unit is a feature of a dense layer (N, D) and a channel of a convolutional
    one (N, C, \\*spatial), whose attribution per sample is first summed over its
    spatial positions (conductance is additive, so this is the channel's total).
    Then, with ``a[i, u]`` the attribution of unit u for sample i:

    - importance ``I[u] = mean_i |a[i, u]|``, and ``p = I / sum(I)``;
    - effective number of units ``exp(H(p))``, ``H(p) = -sum_u p[u] log p[u]``
      (Hill number of order 1): U when all U units matter equally, 1 when one
      carries everything;
    - top-k share ``sum of the k largest p[u]`` for ``k = ceil(f * U)`` (at least
      one unit) for each fraction ``f`` in ``top_fractions`` (default 1%, 5%,
      10%, 25% of the units).

    Parameters
    ----------
    attr:
        (N, D) or (N, C, \\*spatial), e.g. from :func:`unit_attribution`.
    method:
        The attribution method; becomes the metric rows' ``estimator``.
    params:
        Recorded in every row's ``params`` (target rule, ``n_steps``, internal
        batch size ...), next to ``n_units`` and ``unit``.

    Returns
    -------
    dict
        ``importance`` (list of U floats), ``n_units``, ``unit`` (``"feature"`` or
        ``"channel"``), ``effective_units`` (float or None), ``topk_share``
        ({``"1%"``: share, ...}) and ``metrics``: one ``MetricValue`` with
        ``metric="attribution_effective_units"`` and one per fraction with
        ``metric="attribution_topk_share"`` (``params["fraction"]``, ``["k"]``).
        When every attribution is zero the values are None with a reason.

    Example
    -------
    >>> s = unit_summary(unit_attribution(net, "fc1", x), method="conductance")
    >>> s["effective_units"], s["topk_share"]["10%"]
    """
    if not isinstance(attr, torch.Tensor) or attr.ndim < 2 or len(attr) < 1:
        raise InvalidInputError("unit_summary needs attributions (N, units, ...)")
    a = attr.detach().double()
    unit = "channel" if a.ndim > 2 else "feature"
    per_unit = a.sum(dim=tuple(range(2, a.ndim))) if a.ndim > 2 else a  # (N, U)
    importance = per_unit.abs().mean(0)  # (U,)
    n_units = len(importance)
    total = float(importance.sum())
    base = {**dict(params or {}), "n_units": n_units, "unit": unit}
    n = len(a)
    reason = None if total > 0 and math.isfinite(total) else "all attributions are zero"
    effective: float | None = None
    shares: dict[str, float | None] = {}
    metrics: list[MetricValue] = []
    if reason is None:
        p = importance / total  # (U,)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        effective = float(entropy.exp())
    metrics.append(
        MetricValue(
            "attribution_effective_units",
            method,
            effective,
            n_samples=n,
            params=base,
            reason=reason,
        )
    )
    ordered = importance.sort(descending=True).values
    for f in top_fractions:
        k = max(1, math.ceil(f * n_units))
        share = float(ordered[:k].sum() / total) if reason is None else None
        shares[f"{100 * f:g}%"] = share
        metrics.append(
            MetricValue(
                "attribution_topk_share",
                method,
                share,
                n_samples=n,
                params={**base, "fraction": f, "k": k},
                reason=reason,
            )
        )
    return {
        "importance": importance.tolist(),
        "n_units": n_units,
        "unit": unit,
        "effective_units": effective,
        "topk_share": shares,
        "metrics": metrics,
    }
