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
    resamples: int = 0,
    seed: int = 0,
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

    With ``resamples`` > 0 every value gets a 95% percentile-bootstrap interval
    over the N samples (``resamples`` draws of N rows with replacement, ``seed``):
    how much it would move with another draw of samples, which matters when
    ``attr`` holds a subset of the data. The plug-in ``exp(H(p))`` is biased low
    on few samples and its percentile interval covers less than 95% (0.78 on a
    simulated 32-unit layer at N=64; 0.6-0.9 against 600 samples of a trained
    small ResNet); the top-k shares' intervals held 0.87-0.95.

    Parameters
    ----------
    attr:
        (N, D) or (N, C, \\*spatial), e.g. from :func:`unit_attribution`.
    method:
        The attribution method; becomes the metric rows' ``estimator``.
    params:
        Recorded in every row's ``params`` (target rule, ``n_steps``, internal
        batch size ...), next to ``n_units`` and ``unit``.
    resamples, seed:
        Bootstrap draws of the intervals (0: no interval) and their seed.

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
    ks = [max(1, math.ceil(f * n_units)) for f in top_fractions]
    values: list[float | None] = [None] * (1 + len(ks))
    intervals: list[tuple[float | None, float | None]] = [(None, None)] * len(values)
    if reason is None:
        values = _concentration(importance[None], ks)[0].tolist()
        if resamples > 0 and n > 1:
            gen = torch.Generator().manual_seed(seed)
            draws = torch.randint(n, (resamples, n), generator=gen)  # (R, N)
            counts = torch.zeros(resamples, n, dtype=a.dtype)
            counts.scatter_add_(1, draws, torch.ones_like(counts))  # (R, N)
            boot = _concentration(counts @ per_unit.abs() / n, ks)  # (R, 1 + K)
            q = torch.tensor([0.025, 0.975], dtype=a.dtype)
            low, high = torch.nanquantile(boot, q, dim=0)  # (1 + K,) each
            intervals = list(zip(low.tolist(), high.tolist(), strict=True))
    metrics = [
        MetricValue(
            "attribution_effective_units",
            method,
            values[0],
            *intervals[0],
            n_samples=n,
            params=base,
            reason=reason,
        )
    ]
    shares: dict[str, float | None] = {}
    for i, (f, k) in enumerate(zip(top_fractions, ks, strict=True), start=1):
        shares[f"{100 * f:g}%"] = values[i]
        metrics.append(
            MetricValue(
                "attribution_topk_share",
                method,
                values[i],
                *intervals[i],
                n_samples=n,
                params={**base, "fraction": f, "k": k},
                reason=reason,
            )
        )
    return {
        "importance": importance.tolist(),
        "n_units": n_units,
        "unit": unit,
        "effective_units": values[0],
        "topk_share": shares,
        "metrics": metrics,
    }


def _concentration(importance: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """(R, U) importances -> (R, 1 + K): exp(H(p)), then the top-k shares.

    A row that sums to zero gives NaN (a bootstrap draw of all-zero samples).
    """
    total = importance.sum(1, keepdim=True)  # (R, 1)
    p = importance / total  # (R, U)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(1)  # (R,)
    ordered = p.sort(1, descending=True).values.cumsum(1)  # (R, U)
    top = ordered[:, [k - 1 for k in ks]]  # (R, K)
    out = torch.cat([entropy.exp()[:, None], top], 1)  # (R, 1 + K)
    return out.masked_fill(~(total > 0), math.nan)
