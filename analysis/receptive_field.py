"""Receptive fields of feature maps: theoretical and effective.

:func:`theoretical_fields` follows one forward pass and composes, per spatial
dimension, the size ``r`` and the jump ``j`` (input pixels between neighbouring
output positions) of every module call whose output is a feature map
(Araujo et al. 2019, "Computing Receptive Fields of Convolutional Neural
Networks")::

    convolution, pooling (kernel k, stride s, dilation d):
        r' = r + (k-1) d j,  j' = j s
    transposed convolution:
        r' = r + (ceil(((k-1) d + 1) / s) - 1) j,  j' = j / s
    upsampling by f:
        r' = r (nearest) or r + j (linear),  j' = j / f

A module that keeps the spatial shape (activation, normalisation, a 1x1 layer)
keeps the field. A module's input made by a function outside any module (``x +
identity``, ``torch.cat``) takes the widest field recorded so far among tensors of
the same spatial shape: the widest path through an add or a concatenation, which
is the field of the join. Only feature maps ``(B, C, *spatial)`` descended from a
spatial input get a field; token sequences and flat vectors get none.

:func:`effective_field` is the effective receptive field of Luo et al. 2016
("Understanding the Effective Receptive Field in Deep Convolutional Neural
Networks"): the gradient of the layer's centre unit (summed over its channels)
with respect to the input, in absolute value, summed over input channels, per
sample. :func:`mass_radius` is the half-width of the smallest centred square that
holds a fraction of its mass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from analysis.errors import InvalidInputError
from analysis.hooks import call_name, module_name

__all__ = [
    "Field",
    "bootstrap_radius",
    "effective_field",
    "mass_radius",
    "theoretical_fields",
]


@dataclass(frozen=True)
class Field:
    """The theoretical receptive field of one feature map: ``size`` and ``jump``
    per spatial dimension, in input pixels."""

    size: tuple[float, ...]
    jump: tuple[float, ...]

    @property
    def radius(self) -> float:
        """Half the side of the field's bounding box, widest dimension."""
        return max(self.size) / 2


def theoretical_fields(model: nn.Module, x: torch.Tensor) -> dict[str, Field]:
    """The theoretical receptive field of every module call with a feature map.

    Parameters
    ----------
    model:
        Any module; called once on ``x`` under ``no_grad``; hooks are removed
        afterwards, also when the model raises.
    x:
        (B, C, *spatial) input; B = 1 is enough. A flat input (B, D) has no
        field: the result is empty.

    Returns
    -------
    dict[str, Field]
        Call name (``name``, ``name#2``, ...) -> field of its output; calls whose
        output is not a feature map, or whose field the rules of the module
        docstring cannot tell, are absent.

    Example
    -------
    >>> net = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(4)])
    >>> theoretical_fields(net, torch.zeros(1, 1, 32, 32))["3"].size
    (9.0, 9.0)
    """
    if x.ndim < 3:
        return {}
    spatial = x.ndim - 2
    known: dict[int, tuple[torch.Tensor, Field]] = {}
    known[id(x)] = (x, Field((1.0,) * spatial, (1.0,) * spatial))
    found: dict[str, Field] = {}
    calls: dict[str, int] = {}

    def field_of(t: Any) -> Field | None:
        if not isinstance(t, torch.Tensor) or t.ndim != spatial + 2:
            return None
        hit = known.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        same = [f for u, f in known.values() if u.shape[2:] == t.shape[2:]]
        return max(same, key=lambda f: max(f.size), default=None)

    def hook(name: str, module: nn.Module, args: tuple, out: Any) -> None:
        calls[name] = calls.get(name, 0) + 1
        if not isinstance(out, torch.Tensor) or out.ndim != spatial + 2:
            return
        mine = known.get(id(out))
        if mine is not None and mine[0] is out:  # a child's output: its field
            found[call_name(name, calls[name])] = mine[1]
            return
        source = args[0] if args else None
        before = field_of(source)
        leaf = next(module.children(), None) is None
        if before is None or not isinstance(source, torch.Tensor):
            field = field_of(out) if not leaf else None
        elif leaf:
            field = _compose(module, before, source.shape[2:], out.shape[2:])
        else:
            field = field_of(out)
        if field is not None:
            known[id(out)] = (out, field)
            found[call_name(name, calls[name])] = field

    with _hooks(model, hook, calls), torch.no_grad():
        model(x)
    return found


def _compose(
    module: nn.Module,
    before: Field,
    shape_in: torch.Size,
    shape_out: torch.Size,
) -> Field | None:
    d = len(before.size)
    r, j = list(before.size), list(before.jump)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        k, s, dil = (_per_dim(getattr(module, a), d) for a in _CONV)
        for i in range(d):
            n_in = math.ceil(((k[i] - 1) * dil[i] + 1) / s[i])
            r[i] += (n_in - 1) * j[i]
            j[i] /= s[i]
        return Field(tuple(r), tuple(j))
    if isinstance(module, nn.modules.conv._ConvNd):
        k, s, dil = (_per_dim(getattr(module, a), d) for a in _CONV)
        return _slide(r, j, k, s, dil)
    if isinstance(
        module, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd
    ):
        k = _per_dim(module.kernel_size, d)
        s = _per_dim(module.stride or module.kernel_size, d)
        dil = _per_dim(getattr(module, "dilation", 1), d)
        return _slide(r, j, k, s, dil)
    if isinstance(
        module,
        nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd,
    ):
        k = [math.ceil(a / b) for a, b in zip(shape_in, shape_out, strict=True)]
        s = [max(1, a // b) for a, b in zip(shape_in, shape_out, strict=True)]
        return _slide(r, j, k, s, [1] * d)
    if isinstance(module, nn.Upsample):
        linear = module.mode != "nearest"
        for i in range(d):
            r[i] += j[i] if linear else 0.0
            j[i] *= shape_in[i] / shape_out[i]
        return Field(tuple(r), tuple(j))
    if shape_in == shape_out:
        return before
    return None


_CONV = ("kernel_size", "stride", "dilation")


def _slide(
    r: list[float], j: list[float], k: list[int], s: list[int], dil: list[int]
) -> Field:
    size = tuple(r[i] + (k[i] - 1) * dil[i] * j[i] for i in range(len(r)))
    return Field(size, tuple(j[i] * s[i] for i in range(len(r))))


def _per_dim(value: Any, d: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, tuple | list) else [value] * d


@contextmanager
def _hooks(model: nn.Module, hook: Any, calls: dict[str, int]) -> Iterator[None]:
    """Forward hooks with inputs on every submodule; the call counters restart at
    each call of the root. All removed on exit."""
    handles = [model.register_forward_pre_hook(lambda m, a: calls.clear())]
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(
                    module.register_forward_hook(
                        lambda m, a, o, name=name: hook(name, m, a, o)
                    )
                )
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Reached(Exception):
    """Raised from a hook: the layer of interest has run; the rest is not needed."""


def effective_field(
    model: nn.Module, xs: torch.Tensor, record: str
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Per-sample effective receptive field of one module call (Luo et al. 2016).

    The output of ``record`` (B, C, *S) is cut at its centre position
    ``S // 2``; the gradient of the sum over channels of that unit is taken with
    respect to the input, and its absolute value summed over input channels. The
    forward pass stops once ``record`` has run. The model runs in eval mode (its
    mode is restored); the hook is removed on exit, also when the model raises.

    Parameters
    ----------
    model:
        The model; ``record`` is a call name (``layer1.0``, ``relu#2``).
    xs:
        (n, C, *spatial) input samples, on the model's device.

    Returns
    -------
    (maps, centre)
        ``maps`` (n, *spatial) float32 on ``xs``'s device; ``centre`` the index
        of the output unit in the layer's own grid.

    Example
    -------
    >>> maps, _ = effective_field(net, x[:16], "layer2")
    >>> mass_radius(maps.mean(0), 0.5)
    """
    target = module_name(record)
    call = int(record.partition("#")[2] or 1)
    module = dict(model.named_modules()).get(target)
    if module is None or not target:
        raise InvalidInputError(f"the model has no module {target!r}")
    seen: list[torch.Tensor] = []

    def hook(m: nn.Module, args: Any, out: Any) -> None:
        seen.append(out)
        if len(seen) == call:
            raise _Reached

    x = xs.detach().clone().requires_grad_(True)  # (n, C, *spatial)
    training = model.training
    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            with suppress(_Reached):
                model(x)
            if len(seen) < call:
                raise InvalidInputError(f"{record} was not called by the model")
            out = seen[call - 1]
            if not isinstance(out, torch.Tensor) or out.ndim != x.ndim:
                raise InvalidInputError(
                    f"{record} does not output a feature map like the input's"
                )
            centre = tuple(int(s) // 2 for s in out.shape[2:])
            index: tuple[slice | int, ...] = (slice(None), slice(None), *centre)
            unit = out[index].sum()
            (grad,) = torch.autograd.grad(unit, x)  # (n, C, *spatial)
    finally:
        handle.remove()
        model.train(training)
    return grad.detach().abs().sum(1).float(), centre  # (n, *spatial)


def mass_radius(density: torch.Tensor, q: float) -> float:
    """Half-width, in pixels, of the smallest square (cube) around the density's
    centroid that holds the fraction ``q`` of its mass.

    The centroid is rounded to a pixel; pixel ``p`` lies in shell
    ``d = max_i |p_i - c_i|``, whose outer edge is at ``d + 1/2``; the radius is
    interpolated linearly in mass inside the crossing shell (one pixel holding all
    the mass: ``q / 2``). ``density`` (*spatial) >= 0 with positive mass.
    """
    m = density.detach().double()
    total = float(m.sum())
    if not total > 0:
        raise InvalidInputError("the gradient map is zero: no mass to measure")
    grids = torch.meshgrid(
        *(torch.arange(s, dtype=torch.float64, device=m.device) for s in m.shape),
        indexing="ij",
    )
    centre = [torch.round((g * m).sum() / total) for g in grids]
    shell = torch.stack([(g - c).abs() for g, c in zip(grids, centre, strict=True)])
    d = shell.amax(0).long().flatten()  # (P,)
    per_shell = torch.zeros(int(d.max()) + 1, dtype=torch.float64, device=m.device)
    per_shell.index_add_(0, d, m.flatten() / total)
    cumulative = per_shell.cumsum(0)
    k = int(torch.searchsorted(cumulative, torch.tensor(q, dtype=torch.float64)))
    k = min(k, len(cumulative) - 1)
    inner = float(cumulative[k - 1]) if k > 0 else 0.0
    edge = k - 0.5 if k > 0 else 0.0
    width = 1.0 if k > 0 else 0.5
    share = float(per_shell[k])
    return edge + width * (q - inner) / share if share > 0 else edge + width


def bootstrap_radius(
    maps: torch.Tensor, q: float, *, resamples: int, seed: int
) -> tuple[float, float, float]:
    """``mass_radius`` of the mean map, with a 95% percentile-bootstrap interval
    over samples (``resamples`` draws with replacement, ``seed``).

    ``maps`` (n, *spatial). Returns ``(value, ci_low, ci_high)``.
    """
    value = mass_radius(maps.mean(0), q)
    n = len(maps)
    if n < 2:
        return value, value, value
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(n, (resamples, n), generator=gen)  # (R, n)
    radii = torch.tensor(
        [mass_radius(maps[rows.to(maps.device)].mean(0), q) for rows in draws]
    )
    low, high = torch.quantile(radii, torch.tensor([0.025, 0.975])).tolist()
    return value, min(low, value), max(high, value)
