"""Attribution at the bottlenecks, with Captum.

Which units of a bottleneck carry the decision, where in the input it looks, and
whether those maps depend on what the network learned:

- :func:`unit_attribution`: per-sample, per-unit attribution of the target output
  to a layer (``LayerConductance`` or ``LayerIntegratedGradients``);
- :func:`unit_summary`: per-unit importance, the effective number of units and the
  share of the top units, as :class:`~analysis.types.MetricValue` rows;
- :func:`gradcam_maps` (convolutional layers) and :func:`input_ig_maps` (every
  model): maps over the input;
- :func:`sanity_check`: the model-randomisation test of Adebayo et al. 2018;
- :func:`attribute_bottlenecks`: all of it for each bottleneck, maps saved as
  ``.npy`` and PNG.

Every function runs the model in eval mode with parameter gradients and in-place
modules turned off, and restores modes, ``requires_grad`` flags and ``inplace``
flags afterwards; captum's hooks are removed also when the model raises. Memory:
captum's ``internal_batch_size`` is chosen from a byte budget (``None``), and
halved on ``torch.cuda.OutOfMemoryError``.

Cost, per method and sample: conductance and layer / input integrated gradients
take ``n_steps`` forward+backward passes (conductance ``n_steps + 1``, and twice
that at the smallest internal batch); GradCAM one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis._attr_core import (
    LayerRef,
    Resolved,
    Target,
    attribution_scope,
    resolve_layer,
    resolve_target,
)
from analysis._attr_files import safe_name, save_grid, save_npy
from analysis._attr_methods import (
    DEFAULT_MEMORY_BUDGET,
    LAYER_METHODS,
    _gradcam_maps,
    _input_ig_maps,
    _unit_attribution,
    gradcam_maps,
    input_ig_maps,
    prepare,
    unit_attribution,
)
from analysis._attr_sanity import (
    layers_above,
    randomised_correlations,
    sanity_check,
)
from analysis.errors import InvalidInputError
from analysis.types import Bottleneck, MetricValue

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "TOP_FRACTIONS",
    "attribute_bottlenecks",
    "gradcam_maps",
    "input_ig_maps",
    "sanity_check",
    "unit_attribution",
    "unit_summary",
]

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


def attribute_bottlenecks(
    model: nn.Module,
    x: torch.Tensor,
    bottlenecks: Sequence[Bottleneck],
    out_dir: str | Path,
    *,
    target: Target = None,
    n_maps: int = 16,
    seed: int = 0,
    n_steps: int = 32,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    sanity: bool = True,
) -> list[dict[str, Any]]:
    """Unit attributions, maps and the sanity check at every bottleneck.

    For each bottleneck: :func:`unit_attribution` by conductance and by layer
    integrated gradients over all of ``x``, each summarised by
    :func:`unit_summary`; for a fixed subset of ``n_maps`` samples (drawn with
    ``seed``) the unit attributions, GradCAM maps (convolutional layers) and the
    input integrated-gradients maps (the same for every bottleneck: computed once)
    are saved, and :func:`sanity_check` correlations are computed on that subset.

    Files, all directly in ``out_dir`` (created), named from the layer name made
    safe by replacing every character outside ``[A-Za-z0-9_.-]`` with ``_`` (a
    name with ``..`` is refused; two layers that map to one name get ``-2``...):

    - shared: ``samples.npy`` (subset indices), ``inputs.npy``, ``input_ig.npy``,
      ``input_ig_delta.npy``;
    - per layer: ``<layer>.conductance.npy``, ``<layer>.integrated_gradients.npy``
      (n_maps, \\*layer_shape), ``<layer>.gradcam.npy`` (n_maps, 1, \\*spatial)
      and ``<layer>.png``: a grid, one row per sample, columns input, GradCAM,
      input IG.

    Parameters
    ----------
    x:
        The samples (N, ...); every bottleneck costs about
        ``2 (n_steps + 1) N + 3 n_steps n_maps`` forward+backward rows.
    bottlenecks:
        From :func:`analysis.bottlenecks.find_bottlenecks`.
    target, n_steps, memory_budget_bytes:
        As in :func:`unit_attribution`.
    sanity:
        Run the model-randomisation check (it triples the cost on the subset).

    Returns
    -------
    list[dict]
        One per bottleneck, JSON-ready apart from ``metrics`` (``MetricValue``
        rows; ``dataclasses.asdict`` each): ``layer``, ``target`` (the rule),
        ``metrics``, ``importance`` ({method: per-unit list}), ``sanity``
        ({method: mean Spearman rho or None}), ``sanity_randomised`` (module
        names), ``ig_delta_mean`` / ``ig_delta_max`` (|delta| over the subset),
        ``internal_batch_size`` ({method: rows per pass used}), ``oom_retries``,
        ``samples``, ``files`` ({"npy": [...], "png": [...]}, relative to
        ``out_dir``) and ``error`` (None, or why this layer was skipped: a
        reused module, no such module ...).
    """
    if not isinstance(n_maps, int) or n_maps < 1:
        raise InvalidInputError(f"n_maps must be an int >= 1, got {n_maps!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with attribution_scope(model):
        x = prepare(model, x)
        resolved = resolve_target(model, x, target)
        gen = torch.Generator().manual_seed(seed)
        subset = torch.randperm(len(x), generator=gen)[:n_maps].sort().values
        xs = x[subset.to(x.device)]
        rs = Resolved(resolved.forward, _take(resolved.target, subset), resolved.rule)
        ig, delta, ig_plan = _input_ig_maps(
            model,
            xs,
            target=rs,
            n_steps=n_steps,
            baseline=None,
            internal_batch_size=None,
            budget=memory_budget_bytes,
        )
        shared = [
            save_npy(out, "samples.npy", subset),
            save_npy(out, "inputs.npy", xs),
            save_npy(out, "input_ig.npy", ig),
            save_npy(out, "input_ig_delta.npy", delta),
        ]
        common = {
            "target": resolved.rule,
            "n_steps": n_steps,
            "samples": subset.tolist(),
            "ig_delta_mean": float(delta.abs().mean()),
            "ig_delta_max": float(delta.abs().max()),
        }
        used: set[str] = set()
        records = []
        for b in bottlenecks:
            record: dict[str, Any] = {"layer": b.layer, **common, "error": None}
            try:
                ref = resolve_layer(model, b.layer, x)
                name = _unique(safe_name(b.layer), used)
            except InvalidInputError as e:
                records.append({**record, "metrics": [], "error": str(e)})
                continue
            record |= _one_layer(
                model,
                ref,
                x,
                resolved,
                subset,
                xs,
                rs,
                out,
                name,
                {"input_ig": ig},
                ig_plan.internal_batch_size,
                n_steps=n_steps,
                seed=seed,
                budget=memory_budget_bytes,
                sanity=sanity,
            )
            record["files"]["npy"] = shared + record["files"]["npy"]
            records.append(record)
    return records


def _one_layer(
    model: nn.Module,
    ref: LayerRef,
    x: torch.Tensor,
    resolved: Resolved,
    subset: torch.Tensor,
    xs: torch.Tensor,
    rs: Resolved,
    out: Path,
    name: str,
    maps: dict[str, torch.Tensor],
    ig_batch: int,
    *,
    n_steps: int,
    seed: int,
    budget: int,
    sanity: bool,
) -> dict[str, Any]:
    metrics: list[MetricValue] = []
    importance: dict[str, list[float]] = {}
    batches = {"input_ig": ig_batch}
    retries = 0
    npy: list[str] = []
    for method in LAYER_METHODS:
        attr, plan, _ = _unit_attribution(
            model,
            ref,
            x,
            method=method,
            target=resolved,
            n_steps=n_steps,
            internal_batch_size=None,
            baseline=None,
            memory_budget_bytes=budget,
        )
        params = {
            "target": resolved.rule,
            "n_steps": n_steps,
            "internal_batch_size": plan.internal_batch_size,
            "baseline": "zeros",
        }
        summary = unit_summary(attr, method=method, params=params)
        metrics += summary["metrics"]
        importance[method] = summary["importance"]
        batches[method] = plan.internal_batch_size
        retries += plan.oom_retries
        maps[method] = attr[subset.to(attr.device)]
        npy.append(save_npy(out, f"{name}.{method}.npy", maps[method]))
    columns = [("input", xs)]
    if ref.is_conv and xs.ndim == len(ref.shape) + 1:
        maps["gradcam"], plan = _gradcam_maps(
            model, ref, xs, target=rs, relu=True, budget=budget
        )
        batches["gradcam"] = plan.chunk
        npy.append(save_npy(out, f"{name}.gradcam.npy", maps["gradcam"]))
        columns.append(("GradCAM", maps["gradcam"]))
    columns.append(("input IG", maps["input_ig"]))
    png = save_grid(out, f"{name}.png", columns, f"{ref.name} (target: {rs.rule})")
    correlations: dict[str, float | None] = {}
    above: list[str] = []
    if sanity:
        above = layers_above(model, ref.name, xs)
        rho = randomised_correlations(model, ref, xs, rs, maps, n_steps, seed, budget)
        correlations = {k: (v if math.isfinite(v) else None) for k, v in rho.items()}
    return {
        "metrics": metrics,
        "importance": importance,
        "sanity": correlations,
        "sanity_randomised": above,
        "internal_batch_size": batches,
        "oom_retries": retries,
        "files": {"npy": npy, "png": [png]},
    }


def _take(target: torch.Tensor | int | None, rows: torch.Tensor) -> Any:
    if isinstance(target, torch.Tensor):
        return target[rows.to(target.device)]
    return target


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 1
    while candidate in used:
        k += 1
        candidate = f"{name}-{k}"
    used.add(candidate)
    return candidate
