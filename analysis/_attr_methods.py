"""The captum calls: layer conductance / integrated gradients, GradCAM, input IG.

Private to :mod:`analysis.attribution`, which re-exports the public functions and
documents them for users. Each public function enters
:func:`~analysis._attr_core.attribution_scope` itself; the ``_``-prefixed twins
assume the caller did and also return the batching plan they used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerConductance,
    LayerGradCam,
    LayerIntegratedGradients,
)
from torch import nn

from analysis._attr_batching import (
    Plan,
    max_rows,
    plan_batches,
    row_bytes,
    run_chunked,
)
from analysis._attr_core import (
    LayerRef,
    Resolved,
    Target,
    attribution_scope,
    cloned_output,
    model_device,
    resolve_layer,
    resolve_target,
)
from analysis.errors import InvalidInputError

DEFAULT_MEMORY_BUDGET = 512 * 2**20
LAYER_METHODS = ("conductance", "integrated_gradients")
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def unit_attribution(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    *,
    method: str = "conductance",
    target: Target = None,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    baseline: Any = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor:
    """Per-sample, per-unit attribution of the target output to ``layer``'s units.

    Parameters
    ----------
    model:
        Any ``nn.Module``; run in eval mode, its state restored afterwards.
    layer:
        A ``named_modules()`` name of a module called once per forward pass
        (a ``#k`` call name or a reused module raises ``InvalidInputError``).
    x:
        Inputs (N, ...), moved to the model's device.
    method:
        ``"conductance"`` (captum ``LayerConductance``, Dhamdhere et al. 2018) or
        ``"integrated_gradients"`` (``LayerIntegratedGradients``: integrated
        gradients with the layer's output as the input, Sundararajan et al. 2017).
    target:
        ``None`` = the argmax class of each sample; an int = that output index; a
        (N,) tensor = one index per sample; ``"reconstruction"`` = the per-sample
        error ``||f(x) - x||^2`` (autoencoders); ``"auto"`` = ``"reconstruction"``
        when the output has the input's shape, else as ``None``.
    n_steps:
        Path points (Gauss-Legendre, captum's default rule).
    internal_batch_size:
        Rows per forward+backward pass, as captum defines it; ``None`` = the
        largest that fits ``memory_budget_bytes``. On CUDA out-of-memory it is
        halved and the pass retried.
    baseline:
        Captum baselines: ``None`` (zeros), a scalar, or a tensor (1, ...) or
        (N, ...).

    Returns
    -------
    torch.Tensor
        (N, \\*layer_shape) on the model's device. Conductance sums to the output
        difference between ``x`` and ``baseline`` over the units (completeness).

    Example
    -------
    >>> a = unit_attribution(net, "fc1", x, method="conductance", n_steps=32)
    >>> a.shape  # (N, 16)
    """
    with attribution_scope(model):
        attr, _, _ = _unit_attribution(
            model,
            layer,
            x,
            method=method,
            target=target,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            baseline=baseline,
            memory_budget_bytes=memory_budget_bytes,
        )
    return attr


def gradcam_maps(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    *,
    target: Target = None,
    relu: bool = True,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> torch.Tensor:
    """GradCAM maps (Selvaraju et al. 2017) of a convolutional ``layer``, upsampled.

    captum ``LayerGradCam`` (channel-averaged gradients times activations, summed
    over channels; ``relu=True`` keeps the positive part as in the paper), then
    ``LayerAttribution.interpolate`` to the input's spatial size (bilinear for
    images, linear / trilinear for 1-d / 3-d inputs).

    Parameters
    ----------
    layer:
        A module whose output is channels-first (C, \\*spatial) with 1 to 3 spatial
        dimensions; ``x`` must have as many spatial dimensions.
    x, target, memory_budget_bytes:
        As in :func:`unit_attribution`.

    Returns
    -------
    torch.Tensor
        (N, 1, \\*x.shape[2:]).
    """
    with attribution_scope(model):
        maps, _ = _gradcam_maps(
            model, layer, x, target=target, relu=relu, budget=memory_budget_bytes
        )
    return maps


def input_ig_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target = None,
    n_steps: int = 32,
    baseline: Any = None,
    internal_batch_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated-gradients maps over the input and their convergence deltas.

    captum ``IntegratedGradients`` with ``return_convergence_delta=True``. The
    delta is ``sum(attribution) - (F(x) - F(baseline))`` per sample: by the
    completeness axiom it is zero up to the path-integral error, which shrinks
    as ``n_steps`` grows (Sundararajan et al. 2017, section 3).

    Returns
    -------
    (maps, delta)
        ``maps`` (N, \\*x.shape[1:]) and ``delta`` (N,), on the model's device.
    """
    with attribution_scope(model):
        maps, delta, _ = _input_ig_maps(
            model,
            x,
            target=target,
            n_steps=n_steps,
            baseline=baseline,
            internal_batch_size=internal_batch_size,
            budget=memory_budget_bytes,
        )
    return maps, delta


def prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` checked, detached, on the model's device; images (N, C, H, W) on the
    CPU in channels-last layout when the model accepts it.

    Channels-last runs the convolutions' forward+backward 1.3-2x faster on the
    CPU (oneDNN follows the input's layout; bench/bench_attribution.py); the
    values are the same up to float rounding (relative 5e-7 measured on the
    README's ResNet). A model that cannot take it (``x.view`` on a feature map)
    gets the row-major tensor.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) < 1:
        raise InvalidInputError("attribution needs a batch tensor (N, ...), N >= 1")
    if not x.is_floating_point():
        raise InvalidInputError(f"attribution needs float inputs, got {x.dtype}")
    x = x.detach().to(model_device(model))
    if x.ndim != 4 or x.device.type != "cpu" or _channels_last(x):
        return x
    last = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            model(last[:2])
    except RuntimeError:
        return x
    return last


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not (
        x.is_contiguous()
    )


def _unit_attribution(
    model: nn.Module,
    layer: str | LayerRef,
    x: torch.Tensor,
    *,
    method: str,
    target: Target | Resolved,
    n_steps: int,
    internal_batch_size: int | None,
    baseline: Any,
    memory_budget_bytes: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, Plan, Resolved]:
    if method not in LAYER_METHODS:
        raise InvalidInputError(
            f"method must be one of {', '.join(LAYER_METHODS)}, got {method!r}"
        )
    _check_steps(n_steps, internal_batch_size)
    x = prepare(model, x)
    baseline = _on(baseline, x)
    ref = layer if isinstance(layer, LayerRef) else resolve_layer(model, layer, x)
    resolved = (
        target if isinstance(target, Resolved) else resolve_target(model, x, target)
    )
    conductance = method == "conductance"
    row = row_bytes(model, x)
    plan = plan_batches(
        len(x),
        n_steps + 1 if conductance else n_steps,
        row,
        memory_budget_bytes,
        internal_batch_size,
        overlap=conductance,
        max_rows=max_rows(x, row),
    )
    cls = LayerConductance if conductance else LayerIntegratedGradients
    explainer = cls(resolved.forward, ref.module)

    def call(rows: slice, ibs: int) -> torch.Tensor:
        return explainer.attribute(
            x[rows],
            baselines=_rows(baseline, rows, len(x)),
            target=_rows(resolved.target, rows, len(x)),
            n_steps=n_steps,
            internal_batch_size=ibs,
        )

    with cloned_output(model, ref.name):
        attr, plan = run_chunked(call, len(x), plan, reduce)
    assert isinstance(attr, torch.Tensor)
    return attr, plan, resolved


def _gradcam_maps(
    model: nn.Module,
    layer: str | LayerRef,
    x: torch.Tensor,
    *,
    target: Target | Resolved,
    relu: bool,
    budget: int,
) -> tuple[torch.Tensor, Plan]:
    x = prepare(model, x)
    ref = layer if isinstance(layer, LayerRef) else resolve_layer(model, layer, x)
    if not ref.is_conv or x.ndim != len(ref.shape) + 1:
        raise InvalidInputError(
            f"GradCAM needs a convolutional layer (C, *spatial) and an input with as "
            f"many spatial dimensions; {ref.name!r} outputs {ref.shape} for input "
            f"{tuple(x.shape[1:])}"
        )
    resolved = (
        target if isinstance(target, Resolved) else resolve_target(model, x, target)
    )
    row = row_bytes(model, x)
    plan = plan_batches(len(x), 1, row, budget, max_rows=max_rows(x, row))
    explainer = LayerGradCam(resolved.forward, ref.module)
    size = tuple(x.shape[2:])
    mode = _INTERPOLATION[len(size)]

    def call(rows: slice, ibs: int) -> torch.Tensor:
        cam = explainer.attribute(
            x[rows],
            target=_rows(resolved.target, rows, len(x)),
            relu_attributions=relu,
        )  # (B, 1, *layer spatial)
        return LayerAttribution.interpolate(cam, size, interpolate_mode=mode)

    with cloned_output(model, ref.name):
        maps, plan = run_chunked(call, len(x), plan)
    assert isinstance(maps, torch.Tensor)
    return maps, plan


def _input_ig_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target | Resolved,
    n_steps: int,
    baseline: Any,
    internal_batch_size: int | None,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor, Plan]:
    _check_steps(n_steps, internal_batch_size)
    x = prepare(model, x)
    baseline = _on(baseline, x)
    resolved = (
        target if isinstance(target, Resolved) else resolve_target(model, x, target)
    )
    row = row_bytes(model, x)
    plan = plan_batches(
        len(x), n_steps, row, budget, internal_batch_size, max_rows=max_rows(x, row)
    )
    explainer = IntegratedGradients(resolved.forward)

    def call(rows: slice, ibs: int) -> tuple[torch.Tensor, torch.Tensor]:
        return explainer.attribute(
            x[rows],
            baselines=_rows(baseline, rows, len(x)),
            target=_rows(resolved.target, rows, len(x)),
            n_steps=n_steps,
            internal_batch_size=ibs,
            return_convergence_delta=True,
        )

    out, plan = run_chunked(call, len(x), plan)
    maps, delta = out
    return maps, delta, plan


def _check_steps(n_steps: int, internal_batch_size: int | None) -> None:
    if not isinstance(n_steps, int) or n_steps < 1:
        raise InvalidInputError(f"n_steps must be an int >= 1, got {n_steps!r}")
    if internal_batch_size is not None and internal_batch_size < 1:
        raise InvalidInputError(
            f"internal_batch_size must be >= 1 or None, got {internal_batch_size}"
        )


def _rows(value: Any, rows: slice, n: int) -> Any:
    """A per-sample tensor (n, ...) follows the chunk; scalars and (1, ...) stay."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and len(value) == n > 1:
        return value[rows]
    return value


def _on(baseline: Any, x: torch.Tensor) -> Any:
    return baseline.to(x) if isinstance(baseline, torch.Tensor) else baseline
