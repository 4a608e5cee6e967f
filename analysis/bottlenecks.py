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

A tie keeps the record in its block. The latest of equally narrow points is the
representative only when it sits in the same parent module as the earlier one: in
a transformer the next block's attention has the width of this block's MLP output,
and the record stays on the MLP's own projection (``mlp.fc2``), not on the next
block.

``kind`` says which axes are narrower at the layer than in the tensor entering the
stretch (the record completed just before its first point: after a max-pool, not
the convolution before it) or in the layer that widens again: ``channel``,
``spatial`` or ``channel+spatial``; ``dense`` when the layer is 1-d. The feature
axis is read from the module: last for ``Linear``, attention, embeddings and layer
norms (a (tokens, features) output narrows in features, not in tokens), first for
convolutions and anything else; two shapes of the same rank are read with the
layer's own convention. ``block`` is the layer's parent module.

``pattern`` (``contract.result.PATTERNS``), in this order: ``latent`` when the model
reconstructs its input (``reconstructs``) and no skip goes around the layer;
``unet_bottom`` when a concatenated skip goes around a layer with spatial (or
token) axes; ``dense`` for a 1-d layer; ``inverted`` when the layer that widens
again lies outside the layer's block (the block ends on its projection onto the
narrow stream and the next block expands it: MobileNetV2, a transformer's MLP);
else ``classic`` (wide, narrow, wide inside one block: ResNet).

``skip_connection`` is read from ``torch.fx``: the block is traced (with the layer
kept as one call node) and there is a skip when an ``add`` / ``iadd`` / ``cat``
(or ``stack``) that depends on the layer also takes a value computed from the
block's inputs without passing through the layer, and leads to the block's output.
If the block has none, its parent is traced, and so on up to the model (a U-Net's
skips go around the ``bottom`` module, not through it). ``None`` when no model is
given or a trace fails. The model is traced in eval mode, the mode it is analysed
in (a VAE's training-time sampling ``mu + eps * std`` is not a skip).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from analysis.errors import InvalidInputError
from analysis.hooks import module_name
from analysis.types import Bottleneck, LayerInfo
from contract.result import Pattern

__all__ = ["find_bottlenecks", "is_container", "mark_bottlenecks", "profile_points"]

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
_CONCATENATIONS = {
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.hstack,
    torch.vstack,
    torch.dstack,
}
# Modules whose output has its features on the last axis.
_FEATURES_LAST: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.MultiheadAttention,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.RMSNorm,
)
_FEATURES_LAST_NAMES = frozenset(c.__name__ for c in _FEATURES_LAST) | {
    "LazyLinear",
    "NonDynamicallyQuantizableLinear",
}
_LISTS = (nn.ModuleList, nn.ModuleDict)
Traces = dict[tuple[str, str], fx.GraphModule | None]


def find_bottlenecks(
    layers: Sequence[LayerInfo],
    *,
    factor: float = 2.0,
    model: nn.Module | None = None,
    reconstructs: bool = False,
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
    reconstructs:
        The model's output has its input's size (an autoencoder): a neck without
        a skip around it is then a ``latent``.

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
    position = {id(layer): i for i, layer in enumerate(layers)}
    modules = dict(model.named_modules()) if model is not None else {}
    found: list[Bottleneck] = []
    traces: Traces = {}
    peak: LayerInfo | None = None
    low: LayerInfo | None = None  # narrowest point of the open stretch
    entering: LayerInfo | None = None  # the record before the stretch's first point
    with _eval_mode(model):
        for point in points:
            if peak is None:
                peak = point
            elif low is None:
                if point.width * factor <= peak.width:
                    low = point
                    before = position[id(point)] - 1
                    entering = layers[before] if before >= 0 else None
                elif point.width > peak.width:
                    peak = point
            elif point.width >= factor * low.width:
                shapes = [_axes(x, modules) for x in (entering, point) if x]
                found.append(
                    _bottleneck(
                        peak, low, point, shapes, model, modules, traces, reconstructs
                    )
                )
                peak, low = point, None
            elif point.width < low.width or (
                point.width == low.width and point.parent == low.parent
            ):
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
    around: list[tuple[tuple[int, ...], bool]],
    model: nn.Module | None,
    modules: dict[str, nn.Module],
    traces: Traces,
    reconstructs: bool,
) -> Bottleneck:
    shape, last = _axes(low, modules)
    skip, join = _skip_connection(model, low, traces)
    return Bottleneck(
        layer=low.name,
        block=low.parent,
        width_in=peak.width,
        width=low.width,
        width_out=wide.width,
        ratio=peak.width / low.width,
        kind=_kind(shape, last, around),
        skip_connection=skip,
        pattern=_pattern(low, wide, skip, join, reconstructs),
    )


def _axes(
    layer: LayerInfo, modules: dict[str, nn.Module]
) -> tuple[tuple[int, ...], bool]:
    """The record's shape and whether its features are on the last axis."""
    module = modules.get(module_name(layer.name))
    if module is not None:
        return layer.shape, isinstance(module, _FEATURES_LAST)
    return layer.shape, layer.module.split("[", 1)[0] in _FEATURES_LAST_NAMES


def _split(shape: tuple[int, ...], last: bool) -> tuple[int, int]:
    """(features, positions) of a per-sample shape of rank >= 2."""
    if last:
        return shape[-1], math.prod(shape[:-1])
    return shape[0], math.prod(shape[1:])


def _kind(
    shape: tuple[int, ...],
    last: bool,
    around: list[tuple[tuple[int, ...], bool]],
) -> str:
    if len(shape) <= 1:
        return "dense"
    features, positions = _split(shape, last)
    fewer_channels = smaller = False
    for other, other_last in around:
        if len(other) <= 1:
            continue
        f, p = _split(other, last if len(other) == len(shape) else other_last)
        fewer_channels |= features < f
        smaller |= positions < p
    if fewer_channels and smaller:
        return "channel+spatial"
    return "spatial" if smaller else "channel"


def _pattern(
    low: LayerInfo,
    wide: LayerInfo,
    skip: bool | None,
    join: str | None,
    reconstructs: bool,
) -> Pattern:
    if reconstructs and skip is not True:
        return "latent"
    if join == "cat" and len(low.shape) >= 2:
        return "unet_bottom"
    if len(low.shape) <= 1:
        return "dense"
    inside = not low.parent or wide.name.startswith(low.parent + ".")
    return "classic" if inside else "inverted"


@contextmanager
def _eval_mode(model: nn.Module | None) -> Iterator[None]:
    if model is None:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _skip_connection(
    model: nn.Module | None, layer: LayerInfo, traces: Traces
) -> tuple[bool | None, str | None]:
    """Whether a skip goes around ``layer``, and how it joins (``add``, ``cat``)."""
    if model is None:
        return None, None
    target = module_name(layer.name)
    call = int(layer.name.partition("#")[2] or 1)
    block = layer.parent
    while True:
        key = (block, target)
        if key not in traces:
            traces[key] = _trace(model, block, target)
        graph = traces[key]
        if graph is None:
            return None, None
        relative = target[len(block) + 1 :] if block else target
        join = _has_bypass(graph.graph, relative, call)
        if join is None or join:
            return (None, None) if join is None else (True, join)
        if not block:
            return False, None
        block = block.rpartition(".")[0]


def is_container(module: nn.Module) -> bool:
    """Whether ``module`` only chains its children: a ``Sequential``,
    ``ModuleList`` or ``ModuleDict``, or a module whose children (the items of a
    child ``ModuleList``/``ModuleDict`` counted one by one) are each called once,
    in the order they were registered, each on the previous one's output alone,
    and whose output is its last child's output.

    Read from a ``torch.fx`` trace with every child kept as one call: work before
    the first child (adding a position embedding) is allowed, work between or after
    the children is not; a module that cannot be traced is not a container.

    Example
    -------
    >>> is_container(vit.encoder)  # pos-embedding, dropout, layers, ln
    True
    >>> is_container(resnet.layer1[0])  # the residual add comes after conv3
    False
    """
    if isinstance(module, (*_LISTS, nn.Sequential)):
        return True
    expected: list[str] = []
    for name, child in module.named_children():
        if isinstance(child, _LISTS):
            expected += [f"{name}.{key}" for key, _ in child.named_children()]
        else:
            expected.append(name)
    if not expected:
        return False
    try:
        graph = _Shallow().trace(module)
    except Exception:  # fx raises many kinds on dynamic control flow
        return False
    calls = [n for n in graph.nodes if n.op == "call_module"]
    if [n.target for n in calls] != expected:
        return False
    if any(n.all_input_nodes != [p] for p, n in itertools.pairwise(calls)):
        return False
    output = next(n for n in graph.nodes if n.op == "output")
    return output.args[0] is calls[-1]


class _Shallow(fx.Tracer):
    """Every submodule stays one ``call_module``."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


class KeepLayer(fx.Tracer):
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
        graph = KeepLayer(relative).trace(root)
    except Exception:  # fx raises many kinds on dynamic control flow
        return None
    return fx.GraphModule(root, graph)


def _has_bypass(graph: fx.Graph, target: str, call: int) -> str | None:
    """How a bypass joins (``"add"``, ``"cat"``), ``""`` for none, ``None`` when
    the layer's call is not in the graph."""
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
            return "cat" if node.target in _CONCATENATIONS else "add"
    return ""


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
