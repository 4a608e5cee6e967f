"""Find where a network's representation narrows and widens again.

The width profile. The widths that count are those of the *weight layers*, in
execution order: the calls of modules that hold parameters of their own (``Linear``,
``Conv*``, ``ConvTranspose*``, ``Embedding``, an ``LSTM``, a custom layer with
weights), one point per call (a reused layer gives several). Left out are the calls
that keep the width of the layer before (activations, normalisation, dropout,
``Identity``), parameter-free reshaping and pooling, and the blocks above the leaves
(their output repeats a child's). Pooling is left out on purpose: in a U-Net every
2x2 pool narrows by 4 and the next convolution widens by 2, so with pooling in the
profile each pool would be a bottleneck; without it the convolution after the pool
carries the narrower width and the U-Net has one bottleneck, at its bottom. Without
a ``model`` the layers are told apart by class name (torch's parameter-free and
width-keeping classes are left out); if no record is a weight layer, every leaf
counts.

The scan. ``peak`` is the widest width since the start or since the last widening.
A point at most ``peak / factor`` wide opens a narrow stretch; the stretch closes at
the first later point at least ``factor`` times wider than the narrowest point in it,
which becomes one :class:`~analysis.types.Bottleneck` (``width_in = peak``,
``width_out`` = the closing point's width); ``peak`` restarts there. A stretch that
never widens again (a classifier head) is not a bottleneck. The representative layer
of a stretch is its narrowest weight layer, the latest one on a tie: ``conv2`` of a
ResNet bottleneck block (``conv1`` has the same width), the latent ``Linear`` of an
autoencoder, the last convolution of a U-Net's bottom.

``kind`` compares the layer's shape with the peak's, channels first: ``dense`` when
either is 1-d, else ``channel`` / ``spatial`` / ``channel+spatial`` by which of
channels and spatial size shrank. ``block`` is the layer's parent module.

``skip_connection`` is read from ``torch.fx``: the block is traced (with the layer
kept as one call node) and there is a skip when an ``add`` / ``iadd`` / ``cat``
(or ``stack``) that depends on the layer also takes a value computed from the
block's inputs without passing through the layer, and leads to the block's output.
If the block has none, its parent is traced, and so on up to the model (a U-Net's
skips go around the ``bottom`` module, not through it). ``None`` when no model is
given or a trace fails.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from analysis.errors import InvalidInputError
from analysis.hooks import module_name
from analysis.types import Bottleneck, LayerInfo

__all__ = ["find_bottlenecks", "mark_bottlenecks", "profile_points"]

_WIDTH_KEEPING: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.PReLU,
)
# Leaf classes that are not weight layers, for when no model is given.
_NOT_WEIGHT_LAYERS = frozenset(
    name
    for mod in (
        nn.modules.activation,
        nn.modules.batchnorm,
        nn.modules.normalization,
        nn.modules.instancenorm,
        nn.modules.dropout,
        nn.modules.pooling,
        nn.modules.padding,
        nn.modules.flatten,
        nn.modules.pixelshuffle,
        nn.modules.upsampling,
        nn.modules.channelshuffle,
        nn.modules.fold,
    )
    for name in getattr(mod, "__all__", ())
    if name != "MultiheadAttention"
) | {"Identity"}
_JOIN_FUNCTIONS = {
    operator.add,
    operator.iadd,
    torch.add,
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.hstack,
    torch.vstack,
    torch.dstack,
}
_JOIN_METHODS = {"add", "add_", "__add__", "__iadd__"}


def find_bottlenecks(
    layers: Sequence[LayerInfo],
    *,
    factor: float = 2.0,
    model: nn.Module | None = None,
) -> list[Bottleneck]:
    """Every place where the width profile narrows by ``factor`` and widens again.

    Parameters
    ----------
    layers:
        All records of one forward pass from :func:`analysis.capture.profile`, in
        execution order (a subset may miss the narrowing or the widening).
    factor:
        How much narrower (and then wider again) than the widths around it a
        stretch must be; > 1.
    model:
        The profiled model. It sharpens which records are weight layers and is
        traced for ``skip_connection`` (``None`` without it).

    Returns
    -------
    list[Bottleneck]
        In execution order; rules in the module docstring.

    Example
    -------
    >>> net = build_model("mlp", {"widths": [256, 16, 256]})
    >>> [b.layer for b in find_bottlenecks(profile(net, x[:2]), model=net)]
    ['fc1']
    """
    if not factor > 1:
        raise InvalidInputError(f"bottleneck factor must be > 1, got {factor}")
    points = profile_points(layers, model)
    found: list[Bottleneck] = []
    traces: dict[tuple[str, str], fx.GraphModule | None] = {}
    peak: LayerInfo | None = None
    low: LayerInfo | None = None  # narrowest point of the open stretch
    for point in points:
        if peak is None:
            peak = point
        elif low is None:
            if point.width * factor <= peak.width:
                low = point
            elif point.width > peak.width:
                peak = point
        elif point.width >= factor * low.width:
            found.append(_bottleneck(peak, low, point, model, traces))
            peak, low = point, None
        elif point.width <= low.width:
            low = point
    return found


def mark_bottlenecks(
    layers: Sequence[LayerInfo], bottlenecks: Sequence[Bottleneck]
) -> set[str]:
    """Names of the records in ``layers`` that are a bottleneck's layer."""
    necks = {b.layer for b in bottlenecks}
    return {layer.name for layer in layers if layer.name in necks}


def profile_points(
    layers: Sequence[LayerInfo], model: nn.Module | None = None
) -> list[LayerInfo]:
    """The records that make the width profile (weight layers; module docstring)."""
    modules = dict(model.named_modules()) if model is not None else {}
    points = [
        layer
        for layer in layers
        if _is_weight_layer(layer, modules.get(module_name(layer.name)), model)
    ]
    return points or [layer for layer in layers if layer.is_leaf]


def _is_weight_layer(
    layer: LayerInfo, module: nn.Module | None, model: nn.Module | None
) -> bool:
    if model is None or module is None:
        cls = layer.module.split("[", 1)[0]
        return layer.is_leaf and cls not in _NOT_WEIGHT_LAYERS
    owns_weights = next(module.parameters(recurse=False), None) is not None
    return owns_weights and not isinstance(module, _WIDTH_KEEPING)


def _bottleneck(
    peak: LayerInfo,
    low: LayerInfo,
    wide: LayerInfo,
    model: nn.Module | None,
    traces: dict[tuple[str, str], fx.GraphModule | None],
) -> Bottleneck:
    return Bottleneck(
        layer=low.name,
        block=low.parent,
        width_in=peak.width,
        width=low.width,
        width_out=wide.width,
        ratio=peak.width / low.width,
        kind=_kind(peak.shape, low.shape),
        skip_connection=_skip_connection(model, low, traces),
    )


def _kind(before: tuple[int, ...], shape: tuple[int, ...]) -> str:
    if len(before) <= 1 or len(shape) <= 1:
        return "dense"
    fewer_channels = shape[0] < before[0]
    smaller = math.prod(shape[1:]) < math.prod(before[1:])
    if fewer_channels and smaller:
        return "channel+spatial"
    return "spatial" if smaller else "channel"


def _skip_connection(
    model: nn.Module | None,
    layer: LayerInfo,
    traces: dict[tuple[str, str], fx.GraphModule | None],
) -> bool | None:
    if model is None:
        return None
    target = module_name(layer.name)
    call = int(layer.name.partition("#")[2] or 1)
    block = layer.parent
    while True:
        key = (block, target)
        if key not in traces:
            traces[key] = _trace(model, block, target)
        graph = traces[key]
        if graph is None:
            return None
        relative = target[len(block) + 1 :] if block else target
        bypass = _has_bypass(graph.graph, relative, call)
        if bypass is None or bypass:
            return bypass
        if not block:
            return False
        block = block.rpartition(".")[0]


class _KeepLayer(fx.Tracer):
    """The default tracer, but the layer of interest stays one ``call_module``."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.layer or super().is_leaf_module(
            m, module_qualified_name
        )


def _trace(model: nn.Module, block: str, target: str) -> fx.GraphModule | None:
    root = model.get_submodule(block) if block else model
    relative = target[len(block) + 1 :] if block else target
    try:
        graph = _KeepLayer(relative).trace(root)
    except Exception:  # fx raises many kinds on dynamic control flow
        return None
    return fx.GraphModule(root, graph)


def _has_bypass(graph: fx.Graph, target: str, call: int) -> bool | None:
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == target]
    if len(calls) < call:
        return None
    neck = calls[call - 1]
    after = _descendants([neck])
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    around = _descendants(inputs, avoid=neck)
    output = next(n for n in graph.nodes if n.op == "output")
    for node in after:
        joins = (node.op == "call_function" and node.target in _JOIN_FUNCTIONS) or (
            node.op == "call_method" and node.target in _JOIN_METHODS
        )
        bypassed = any(
            arg in around and arg not in after for arg in node.all_input_nodes
        )
        if joins and bypassed and output in _descendants([node]):
            return True
    return False


def _descendants(start: list[fx.Node], avoid: Any = None) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [n for n in start if n is not avoid]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(user for user in node.users if user is not avoid)
    return seen
