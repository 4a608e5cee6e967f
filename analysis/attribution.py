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
that at the smallest internal batch); GradCAM one. :func:`attribute_bottlenecks`
summarises a seeded subset of the samples (``AttributionSection.samples``), since
its cost grows with ``2 n_steps + 1`` passes per sample and bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from analysis._attr_batching import Plan
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
from analysis._attr_sanity import randomised_correlations, sanity_check
from analysis._attr_summary import TOP_FRACTIONS, unit_summary
from analysis.errors import InvalidInputError
from analysis.types import Bottleneck, MetricValue
from contract.families import AttributionSection

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


_DEFAULTS = AttributionSection()


def attribute_bottlenecks(
    model: nn.Module,
    x: torch.Tensor,
    bottlenecks: Sequence[Bottleneck],
    out_dir: str | Path,
    *,
    target: Target = None,
    n_samples: int | Literal["all"] = _DEFAULTS.samples,
    n_maps: int = _DEFAULTS.maps,
    seed: int = 0,
    n_steps: int = _DEFAULTS.steps,
    resamples: int = _DEFAULTS.resamples,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    sanity: bool = True,
) -> list[dict[str, Any]]:
    """Unit attributions, maps and the sanity check at every bottleneck.

    One permutation of the samples drawn with ``seed`` gives two nested subsets:
    its first ``n_samples`` (the summary subset; ``"all"``: every sample) and
    its first ``n_maps`` (the map subset, inside the summary subset when
    ``n_maps <= n_samples``). For each bottleneck: :func:`unit_attribution` by
    conductance and by layer integrated gradients over the summary subset, each
    summarised by :func:`unit_summary` (intervals: ``resamples`` bootstrap draws
    over that subset); the unit attributions of the map subset (computed once for
    both uses), GradCAM maps (convolutional layers) and the input
    integrated-gradients maps (the same for every bottleneck: computed once) are
    saved, and :func:`sanity_check` correlations are computed on the map subset.

    Files, all directly in ``out_dir`` (created), named from the layer name made
    safe by replacing every character outside ``[A-Za-z0-9_.-]`` with ``_`` (a
    name with ``..`` is refused; two layers that map to one name get ``-2``...):

    - shared: ``samples.npy`` (map subset indices), ``inputs.npy``,
      ``input_ig.npy``, ``input_ig_delta.npy``;
    - per layer: ``<layer>.conductance.npy``, ``<layer>.integrated_gradients.npy``
      (n_maps, \\*layer_shape), ``<layer>.gradcam.npy`` (n_maps, 1, \\*spatial)
      and ``<layer>.png``: a grid, one row per sample, columns input, GradCAM,
      input IG.

    Parameters
    ----------
    x:
        The samples (N, ...). With S summarised samples and M = ``n_maps``, each
        bottleneck costs about ``(2 n_steps + 1) max(S, M)`` forward+backward
        rows (conductance and layer IG) plus ``(3 n_steps + 2) M`` for the
        sanity check; input IG ``n_steps M`` once.
    n_samples:
        Size of the summary subset (at most N) or ``"all"``.
    target, n_steps, memory_budget_bytes:
        As in :func:`unit_attribution`.
    resamples:
        Bootstrap draws of the summary rows' intervals (0: none).
    sanity:
        Run the model-randomisation check on the map subset.

    Returns
    -------
    list[dict]
        One per bottleneck, JSON-ready apart from ``metrics`` (``MetricValue``
        rows with ``n_samples`` = S and ``params["subset_of"]`` = N;
        ``dataclasses.asdict`` each): ``layer``, ``target`` (the rule),
        ``metrics``, ``importance`` ({method: per-unit list}), ``sanity``
        ({method: mean Spearman rho or None}), ``sanity_randomised`` (module
        names), ``ig_delta_mean`` / ``ig_delta_max`` (|delta| over the map
        subset), ``internal_batch_size`` ({method: rows per pass used}),
        ``oom_retries``, ``samples`` (the map subset), ``summary_samples`` (S),
        ``files`` ({"npy": [...], "png": [...]}, relative to ``out_dir``) and
        ``error`` (None, or why this layer was skipped: a reused module, no
        such module ...).
    """
    if not isinstance(n_maps, int) or n_maps < 1:
        raise InvalidInputError(f"n_maps must be an int >= 1, got {n_maps!r}")
    if n_samples != "all" and (not isinstance(n_samples, int) or n_samples < 1):
        raise InvalidInputError(
            f'n_samples must be an int >= 1 or "all", got {n_samples!r}'
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with attribution_scope(model):
        x = prepare(model, x)
        n = len(x)
        s = n if n_samples == "all" else min(n_samples, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        rows = perm[: max(s, n_maps)].sort().values  # (U,) every sample attributed
        subset = perm[:n_maps].sort().values  # (M,) the map subset
        summary = perm[:s].sort().values  # (S,)
        xu = x[rows.to(x.device)]  # (U, ...)
        resolved = resolve_target(model, xu, _given(target, rows, n))
        # positions in rows of the map subset and of the rest of the summary
        at_maps = torch.searchsorted(rows, subset)
        in_summary = torch.isin(subset, summary)
        rest = summary[~torch.isin(summary, subset)]
        at_rest = torch.searchsorted(rows, rest)
        # the summary's rows come as maps first, then the rest: back to sample order
        order = torch.cat([subset[in_summary], rest]).argsort()
        run = _Run(
            model,
            xu[at_maps.to(x.device)],
            _sub(resolved, at_maps),
            xu[at_rest.to(x.device)],
            _sub(resolved, at_rest),
            in_summary,
            order,
            n,
            out,
            n_steps,
            seed,
            resamples,
            memory_budget_bytes,
        )
        ig, delta, ig_plan = _input_ig_maps(
            model,
            run.xs,
            target=run.rs,
            n_steps=n_steps,
            baseline=None,
            internal_batch_size=None,
            budget=memory_budget_bytes,
        )
        shared = [
            save_npy(out, "samples.npy", subset),
            save_npy(out, "inputs.npy", run.xs),
            save_npy(out, "input_ig.npy", ig),
            save_npy(out, "input_ig_delta.npy", delta),
        ]
        common = {
            "target": resolved.rule,
            "n_steps": n_steps,
            "samples": subset.tolist(),
            "summary_samples": s,
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
                records.append({**record, **_empty(), "error": str(e)})
                continue
            record |= _one_layer(run, ref, name, {"input_ig": ig}, sanity=sanity)
            record["internal_batch_size"]["input_ig"] = ig_plan.internal_batch_size
            record["files"]["npy"] = shared + record["files"]["npy"]
            records.append(record)
    return records


@dataclass(frozen=True)
class _Run:
    """What every bottleneck of one :func:`attribute_bottlenecks` call shares."""

    model: nn.Module
    xs: torch.Tensor  # (M, ...) the map subset
    rs: Resolved  # its targets
    xr: torch.Tensor  # (S - |maps in summary|, ...) the rest of the summary subset
    rr: Resolved  # their targets
    in_summary: torch.Tensor  # (M,) bool: which maps join the summary
    order: torch.Tensor  # (S,) maps-then-rest rows -> sample order
    n_total: int  # N, the samples the subsets were drawn from
    out: Path
    n_steps: int
    seed: int
    resamples: int
    budget: int

    def unit_attribution(
        self, ref: LayerRef, method: str
    ) -> tuple[torch.Tensor, torch.Tensor, Plan]:
        """The map subset's attributions (M, \\*shape) and the summary subset's
        unit totals (S, C, 1, ...) (conv) or (S, D), and the larger pass's plan."""
        maps, plan = self._attribute(ref, method, self.xs, self.rs, None)
        totals = _channel_totals(maps[self.in_summary.to(maps.device)])
        if len(self.xr):
            rest, plan = self._attribute(ref, method, self.xr, self.rr, _channel_totals)
            totals = torch.cat([totals, rest])
        return maps, totals[self.order.to(totals.device)], plan

    def _attribute(
        self,
        ref: LayerRef,
        method: str,
        x: torch.Tensor,
        target: Resolved,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> tuple[torch.Tensor, Plan]:
        attr, plan, _ = _unit_attribution(
            self.model,
            ref,
            x,
            method=method,
            target=target,
            n_steps=self.n_steps,
            internal_batch_size=None,
            baseline=None,
            memory_budget_bytes=self.budget,
            reduce=reduce,
        )
        return attr, plan


def _one_layer(
    run: _Run,
    ref: LayerRef,
    name: str,
    maps: dict[str, torch.Tensor],
    *,
    sanity: bool,
) -> dict[str, Any]:
    metrics: list[MetricValue] = []
    importance: dict[str, list[float]] = {}
    batches: dict[str, int] = {}
    retries = 0
    npy: list[str] = []
    for method in LAYER_METHODS:
        maps[method], totals, plan = run.unit_attribution(ref, method)
        params = {
            "target": run.rs.rule,
            "n_steps": run.n_steps,
            "internal_batch_size": plan.internal_batch_size,
            "baseline": "zeros",
            "subset_of": run.n_total,
        }
        summary = unit_summary(
            totals,
            method=method,
            params=params,
            resamples=run.resamples,
            seed=run.seed,
        )
        metrics += summary["metrics"]
        importance[method] = summary["importance"]
        batches[method] = plan.internal_batch_size
        retries += plan.oom_retries
        npy.append(save_npy(run.out, f"{name}.{method}.npy", maps[method]))
    columns = [("input", run.xs)]
    if ref.is_conv and run.xs.ndim == len(ref.shape) + 1:
        maps["gradcam"], plan = _gradcam_maps(
            run.model, ref, run.xs, target=run.rs, relu=True, budget=run.budget
        )
        batches["gradcam"] = plan.chunk
        npy.append(save_npy(run.out, f"{name}.gradcam.npy", maps["gradcam"]))
        columns.append(("GradCAM", maps["gradcam"]))
    columns.append(("input IG", maps["input_ig"]))
    labels = None
    if isinstance(run.rs.target, torch.Tensor):
        labels = [f"target {int(t)}" for t in run.rs.target]
    title = f"{ref.name} (target: {run.rs.rule})"
    png = save_grid(run.out, f"{name}.png", columns, title, labels)
    correlations: dict[str, float | None] = {}
    above: list[str] = []
    if sanity:
        rho, above = randomised_correlations(
            run.model, ref, run.xs, run.rs, maps, run.n_steps, run.seed, run.budget
        )
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


def _empty() -> dict[str, Any]:
    return {
        "metrics": [],
        "importance": {},
        "sanity": {},
        "sanity_randomised": [],
        "internal_batch_size": {},
        "oom_retries": 0,
        "files": {"npy": [], "png": []},
    }


def _channel_totals(attr: torch.Tensor) -> torch.Tensor:
    if attr.ndim <= 2:
        return attr
    return attr.sum(dim=tuple(range(2, attr.ndim)), keepdim=True)  # (B, C, 1, ...)


def _given(target: Target, rows: torch.Tensor, n: int) -> Target:
    """A per-sample target tensor (N,) cut to ``rows``; other targets as given."""
    if not isinstance(target, torch.Tensor):
        return target
    t = target.reshape(-1)
    if len(t) != n:
        raise InvalidInputError(
            f"target holds {len(t)} indices for {n} samples; give one each"
        )
    return t[rows.to(t.device)]


def _sub(resolved: Resolved, at: torch.Tensor) -> Resolved:
    """``resolved`` for the rows ``at`` of the samples it was resolved on."""
    target = resolved.target
    if isinstance(target, torch.Tensor):
        target = target[at.to(target.device)]
    return Resolved(resolved.forward, target, resolved.rule)


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 1
    while candidate in used:
        k += 1
        candidate = f"{name}-{k}"
    used.add(candidate)
    return candidate
