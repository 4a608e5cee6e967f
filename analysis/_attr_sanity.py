"""Model-randomisation sanity check of attribution maps (Adebayo et al. 2018).

Private to :mod:`analysis.attribution`, which re-exports :func:`sanity_check`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from analysis._attr_core import (
    LayerRef,
    ReconstructionLoss,
    Resolved,
    Target,
    attribution_scope,
    resolve_layer,
    resolve_target,
)
from analysis._attr_methods import (
    DEFAULT_MEMORY_BUDGET,
    _gradcam_maps,
    _input_ig_maps,
    _unit_attribution,
    prepare,
)
from analysis.capture import profile
from analysis.errors import InvalidInputError
from analysis.hooks import module_name

SANITY_METHODS = ("conductance", "integrated_gradients", "gradcam", "input_ig")


def sanity_check(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    *,
    target: Target = None,
    methods: Sequence[str] | None = None,
    n_steps: int = 32,
    seed: int = 0,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, float]:
    """Rank correlation of each method's maps before and after randomising the top.

    The cascading model-parameter randomisation test of Adebayo et al. 2018
    ("Sanity Checks for Saliency Maps"), cut at ``layer``: a deep copy of the model
    gets every module that runs after ``layer`` re-initialised (its first call
    completes after ``layer``'s in :func:`analysis.capture.profile` order;
    ``layer`` itself, the blocks that contain it and modules also called before it
    are kept), with ``reset_parameters()`` under ``torch.manual_seed(seed)``
    (a module without it gets Gaussian weights of its old mean and std). The maps
    are recomputed for the *same* targets as the original (the argmax of the
    original model for ``target=None``), and for each method the Spearman rank
    correlation between original and randomised map is taken per sample over
    every map entry (ties get average ranks) and averaged over samples.

    A method whose maps explain the network's computation should change when
    the layers it passes through change: a correlation near 1 says the map
    mostly shows the input (or the kept lower layers), not what the top learned.

    Parameters
    ----------
    methods:
        Among ``"conductance"``, ``"integrated_gradients"`` (unit attributions at
        ``layer``), ``"gradcam"`` (convolutional layers only) and ``"input_ig"``
        (integrated gradients over the input); ``None`` = every one that applies.
    x, target, n_steps, memory_budget_bytes:
        As in :func:`analysis.attribution.unit_attribution`.

    Returns
    -------
    dict[str, float]
        Method -> mean Spearman correlation in [-1, 1]; NaN where every map was
        constant (no ranking to compare). The original model is not changed.
    """
    with attribution_scope(model):
        x = prepare(model, x)
        ref = resolve_layer(model, layer, x)
        resolved = resolve_target(model, x, target)
        chosen = _methods(ref, x, methods)
        original = compute_maps(
            model, ref, x, resolved, chosen, n_steps, memory_budget_bytes
        )
        rho, _ = randomised_correlations(
            model, ref, x, resolved, original, n_steps, seed, memory_budget_bytes
        )
    return rho


def randomised_correlations(
    model: nn.Module,
    ref: LayerRef,
    x: torch.Tensor,
    resolved: Resolved,
    original: Mapping[str, torch.Tensor],
    n_steps: int,
    seed: int,
    budget: int,
) -> tuple[dict[str, float], list[str]]:
    """Randomise a copy above ``ref``, correlate its maps with ``original``.

    Returns the correlations and the names of the modules re-initialised.
    """
    above = layers_above(model, ref.name, x)
    twin = copy.deepcopy(model)
    _reinitialise(twin, above, seed)
    forward = ReconstructionLoss(twin) if resolved.rule == "reconstruction" else twin
    twin_resolved = Resolved(forward, resolved.target, resolved.rule)
    twin_ref = LayerRef(ref.name, twin.get_submodule(ref.name), ref.shape)
    with attribution_scope(twin):
        maps = compute_maps(
            twin, twin_ref, x, twin_resolved, list(original), n_steps, budget
        )
    return {m: spearman(original[m], maps[m]) for m in original}, above


def compute_maps(
    model: nn.Module,
    ref: LayerRef,
    x: torch.Tensor,
    resolved: Resolved,
    methods: Sequence[str],
    n_steps: int,
    budget: int,
) -> dict[str, torch.Tensor]:
    maps: dict[str, torch.Tensor] = {}
    for method in methods:
        if method in ("conductance", "integrated_gradients"):
            maps[method], _, _ = _unit_attribution(
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
        elif method == "gradcam":
            maps[method], _ = _gradcam_maps(
                model, ref, x, target=resolved, relu=True, budget=budget
            )
        else:
            maps[method], _, _ = _input_ig_maps(
                model,
                x,
                target=resolved,
                n_steps=n_steps,
                baseline=None,
                internal_batch_size=None,
                budget=budget,
            )
    return maps


def layers_above(model: nn.Module, layer: str, x: torch.Tensor) -> list[str]:
    """Modules with parameters whose first call completes after ``layer``'s."""
    records = profile(model, x[:1])
    index = next(r.index for r in records if r.name == layer)
    first: dict[str, int] = {}
    for r in records:
        first.setdefault(module_name(r.name), r.index)
    ancestors = {layer.rsplit(".", k)[0] for k in range(1, layer.count(".") + 1)}
    modules = dict(model.named_modules())
    return [
        name
        for name, i in first.items()
        if i > index
        and name not in ancestors
        and next(modules[name].parameters(recurse=False), None) is not None
    ]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over samples of Spearman's rho between ``a[i]`` and ``b[i]`` flattened."""
    ra = _ranks(a.detach().reshape(len(a), -1).double())  # (N, F)
    rb = _ranks(b.detach().reshape(len(b), -1).double())  # (N, F)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()  # (N,)
    ok = den > 0
    if not ok.any():
        return math.nan
    rho = (ra * rb).sum(1)[ok] / den[ok]
    return float(rho.mean())


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based) per row; tied values share their mean rank."""
    out = torch.empty_like(v)
    for i, row in enumerate(v):
        values, order = row.sort()
        _, inverse, counts = torch.unique_consecutive(
            values, return_inverse=True, return_counts=True
        )
        ends = counts.cumsum(0).double()  # last 1-based rank of each tie group
        mean_rank = ends - (counts.double() - 1) / 2  # (groups,)
        out[i, order] = mean_rank[inverse]
    return out


def _methods(
    ref: LayerRef, x: torch.Tensor, methods: Sequence[str] | None
) -> list[str]:
    conv = ref.is_conv and x.ndim == len(ref.shape) + 1
    if methods is None:
        return [m for m in SANITY_METHODS if m != "gradcam" or conv]
    unknown = [m for m in methods if m not in SANITY_METHODS]
    if unknown:
        raise InvalidInputError(
            f"unknown sanity methods {unknown}; choose from {', '.join(SANITY_METHODS)}"
        )
    return list(methods)


def _reinitialise(model: nn.Module, names: Sequence[str], seed: int) -> None:
    devices = sorted(
        {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
    )
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for name in names:
            module = model.get_submodule(name)
            reset: Any = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for p in module.parameters(recurse=False):
                mean = p.mean()
                std = p.std() if p.numel() > 1 else p.abs().mean()
                p.normal_().mul_(std).add_(mean)
