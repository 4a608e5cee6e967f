"""Which captured layers an analysis measures: ``select_layers``.

``"all"``, ``"auto"`` (the outline a reader names, the bottlenecks and what enters
and leaves them) or fnmatch globs over layer names.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from analysis.bottlenecks import is_container
from analysis.errors import InvalidInputError
from analysis.types import LayerInfo

__all__ = ["select_layers"]

# Layers that keep the width and content of the layer before them are left out of
# "auto": they add rows, not information about where the representation changes.
_PASS_THROUGH = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)


def select_layers(
    model: nn.Module,
    layers: list[LayerInfo],
    spec: str,
    bottlenecks: set[str],
    factor: float = 2.0,
) -> list[str]:
    """Names of the records to capture, in execution order.

    ``"all"``: every module call. ``"auto"``: the bottlenecks, plus every call of a
    module that is a direct child of the model or of a container reached from the
    model through containers only: the stages and blocks a reader names, not their
    insides (a block's own ``downsample`` Sequential does not count). A container
    is a ``Sequential``, ``ModuleList`` or ``ModuleDict``, or a module whose
    children are each called once, in order, each on the previous one's output,
    and whose output is its last child's (``analysis.bottlenecks.is_container``: a
    transformer's ``encoder`` holding its blocks and a final norm). Containers
    themselves (their output is their last child's) and pass-through layers
    (normalisation, dropout, identity) are left out. Around each bottleneck "auto"
    also takes the nearest call before and after it that is at least ``factor``
    times wider (what enters and leaves the neck: a transformer MLP's hidden
    layer lies inside its block). Otherwise a comma-separated list of fnmatch
    globs; a glob matching nothing is an error.
    """
    if spec == "all":
        return [layer.name for layer in layers]
    modules = dict(model.named_modules())
    if spec == "auto":
        chosen = []
        containers: dict[str, bool] = {}
        for layer in layers:
            module = modules.get(layer.name.split("#")[0])
            outline = _in_outline(modules, layer.parent, containers)
            skip = isinstance(module, _PASS_THROUGH) or (
                module is not None
                and _container(modules, layer.name.split("#")[0], containers)
            )
            if layer.name in bottlenecks or (outline and not skip):
                chosen.append(layer.name)
        around = _neck_neighbours(layers, bottlenecks, factor)
        return [x.name for x in layers if x.name in around or x.name in chosen]
    globs = [g.strip() for g in spec.split(",") if g.strip()]
    unmatched = [
        g for g in globs if not any(fnmatch.fnmatchcase(x.name, g) for x in layers)
    ]
    if unmatched:
        sample = ", ".join(layer.name for layer in layers[:12])
        raise InvalidInputError(
            f"layer patterns {unmatched} match no layer; layers are named like: "
            f"{sample}{', ...' if len(layers) > 12 else ''}"
        )
    return [
        layer.name
        for layer in layers
        if any(fnmatch.fnmatchcase(layer.name, g) for g in globs)
    ]


def _neck_neighbours(
    layers: list[LayerInfo], bottlenecks: set[str], factor: float
) -> set[str]:
    """For each bottleneck, the nearest call before and after it whose width is at
    least ``factor`` times the neck's."""
    found: set[str] = set()
    for i, layer in enumerate(layers):
        if layer.name not in bottlenecks:
            continue
        wide = [x.width >= factor * layer.width for x in layers]
        before = [j for j in range(i) if wide[j]]
        after = [j for j in range(i + 1, len(layers)) if wide[j]]
        found |= {layers[j].name for j in (before[-1:] + after[:1])}
    return found


def _in_outline(
    modules: dict[str, nn.Module], parent: str, containers: dict[str, bool]
) -> bool:
    """True when ``parent`` is the model, or a container whose ancestors up to the
    model are all containers."""
    while parent:
        if not _container(modules, parent, containers):
            return False
        parent = parent.rpartition(".")[0]
    return True


def _container(
    modules: dict[str, nn.Module], name: str, containers: dict[str, bool]
) -> bool:
    if name not in containers:
        module = modules.get(name)
        containers[name] = module is not None and is_container(module)
    return containers[name]
