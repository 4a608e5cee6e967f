"""What a skip connection carries around a bottleneck.

:func:`find_join` traces the block around a bottleneck layer with ``torch.fx``
(the layer kept as one call), as :mod:`analysis.bottlenecks` does to decide
``skip_connection``, and returns the join: the ``add`` (or ``cat``) that takes one
operand computed through the layer (the branch, f(x)) and one computed from the
block's input around it (the identity, s), and leads to the block's output. When
the block has none its parent is traced, up to the model.

:func:`skip_statistics` runs the traced block on the samples (through a hook on
the real block, so its inputs are the real ones) and measures, per sample, the
identity's share of the joined energy ``||s||^2 / (||s||^2 + ||f(x)||^2)`` and
the cosine between s and f(x) (an ``add`` only), and, over minibatches, linear CKA
(unbiased minibatch HSIC, :func:`analysis.similarity.cka_matrix`'s estimator)
between the block's input and its output, and between its input and the branch.
"""

from __future__ import annotations

import math
import operator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from analysis.bottlenecks import KeepLayer
from analysis.errors import DataError
from analysis.hooks import module_name
from analysis.similarity import _hsic_unbiased

__all__ = ["Join", "SkipStatistics", "find_join", "skip_statistics"]

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}


@dataclass
class Join:
    """The join of a skip connection in the traced ``block`` ("" = the model):
    ``kind`` ``"add"`` or ``"cat"``; operand positions of the branch and the
    identity."""

    block: str
    graph: fx.GraphModule
    node: fx.Node
    kind: str
    branch: int
    identity: int


@dataclass
class SkipStatistics:
    """Per-sample ``share`` and ``cosine`` (n,), and the two CKAs (``None`` with
    ``cka_reason`` when a side is constant)."""

    share: torch.Tensor
    cosine: torch.Tensor | None
    cka_input_output: float | None
    cka_input_branch: float | None
    cka_reason: str | None


def find_join(model: nn.Module, record: str, block: str) -> Join | None:
    """The join of the skip around the call ``record`` (``name`` or
    ``name#k``), searching from ``block`` up to the model; ``None`` when there is
    none or a trace fails."""
    target = module_name(record)
    call = int(record.partition("#")[2] or 1)
    while True:
        root = model.get_submodule(block) if block else model
        relative = target[len(block) + 1 :] if block else target
        try:
            graph = fx.GraphModule(root, KeepLayer(relative).trace(root))
        except Exception:  # fx raises many kinds on dynamic control flow
            return None
        join = _join(graph, relative, call)
        if join is not None:
            return Join(block, graph, *join)
        if not block:
            return None
        block = block.rpartition(".")[0]


def _join(
    graph: fx.GraphModule, target: str, call: int
) -> tuple[fx.Node, str, int, int] | None:
    nodes = list(graph.graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == target]
    if len(calls) < call:
        return None
    neck = calls[call - 1]
    after = _descendants([neck])
    around = _descendants([n for n in nodes if n.op == "placeholder"], avoid=neck)
    output = next(n for n in nodes if n.op == "output")
    for node in nodes:
        if node not in after or output not in _descendants([node]):
            continue
        if (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        ):
            kind, operands = "add", list(node.args[:2])
        elif node.op == "call_function" and node.target in _CAT_FUNCTIONS:
            kind, operands = "cat", list(node.args[0])
        else:
            continue
        branch = [i for i, a in enumerate(operands) if a in after]
        identity = [i for i, a in enumerate(operands) if a in around and a not in after]
        if len(operands) == 2 and branch and identity:
            return node, kind, branch[0], identity[0]
    return None


def _descendants(start: list[fx.Node], avoid: Any = None) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [n for n in start if n is not avoid]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(user for user in node.users if user is not avoid)
    return seen


class _Recorder(fx.Interpreter):
    """Runs the traced block and keeps copies of the join's operands, taken
    before the join runs (``out += identity`` changes its left operand)."""

    def __init__(self, join: Join) -> None:
        super().__init__(join.graph)
        self.join = join
        self.operands: list[torch.Tensor] = []

    def run_node(self, n: fx.Node) -> Any:
        if n is self.join.node:
            args, _ = self.fetch_args_kwargs_from_env(n)
            values = args[0] if self.join.kind == "cat" else args[:2]
            self.operands = [v.detach().clone() for v in values]
        return super().run_node(n)


class _Measured(Exception):
    """Raised from the block's hook once its batch is measured."""


def skip_statistics(
    model: nn.Module, xs: torch.Tensor, join: Join, *, batch_size: int, seed: int
) -> SkipStatistics:
    """Identity share, cosine and CKAs at ``join`` over the samples ``xs``.

    The samples are shuffled (``seed``) and cut into ``len(xs) // batch_size``
    minibatches (each at least ``batch_size``, at least 4 for the unbiased HSIC);
    the model runs on each up to the block, where a hook runs the traced block on
    the real inputs and stops the pass. Eval mode and ``no_grad``; the model's mode
    is restored and the hook removed, also when the model raises.
    """
    if len(xs) < 4:
        raise DataError(f"skip statistics need at least 4 samples, got {len(xs)}")
    module = model.get_submodule(join.block) if join.block else model
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(xs), generator=gen)
    batches = order.tensor_split(max(1, len(xs) // max(4, batch_size)))
    shares: list[torch.Tensor] = []
    cosines: list[torch.Tensor] = []
    hsic = torch.zeros(3, 3, dtype=torch.float64)

    def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
        recorder = _Recorder(join)
        out = recorder.run(*args, **kwargs)
        out = out[0] if isinstance(out, tuple | list) else out
        s = recorder.operands[join.identity].flatten(1)  # (b, p)
        f = recorder.operands[join.branch].flatten(1)  # (b, q)
        # float64 sums of the input's products: no float64 copy of the operands
        es = s.square().sum(1, dtype=torch.float64)
        ef = f.square().sum(1, dtype=torch.float64)
        shares.append((es / (es + ef)).cpu())
        if join.kind == "add" and s.shape == f.shape:
            dot = (s * f).sum(1, dtype=torch.float64)
            norms = (es * ef).sqrt().clamp_min(1e-8)  # cosine_similarity's eps
            cosines.append((dot / norms).cpu())
        h, _ = _hsic_unbiased([args[0], out, f], s.device)
        hsic.add_(h.cpu())
        raise _Measured

    training = model.training
    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.eval()
        with torch.no_grad():
            for rows in batches:
                with suppress(_Measured):
                    model(xs[rows.to(xs.device)])
    finally:
        handle.remove()
        model.train(training)
    share = torch.cat(shares)
    cosine = torch.cat(cosines) if len(cosines) == len(shares) else None
    return SkipStatistics(share, cosine, *_ckas(hsic / len(batches)))


def _ckas(hsic: torch.Tensor) -> tuple[float | None, float | None, str | None]:
    """CKA(input, output) and CKA(input, branch) from the mean (3, 3) HSIC."""
    power = hsic.diagonal()
    floor = 1e-10 * float(power.abs().max())  # a constant side: HSIC 0 up to rounding
    gone = [float(p) <= floor for p in power]
    dead = [n for n, g in zip(("input", "output", "branch"), gone, strict=True) if g]
    scale = power.clamp_min(0).sqrt()

    def cka(i: int, j: int) -> float | None:
        if gone[i] or gone[j]:
            return None
        value = float(hsic[i, j] / (scale[i] * scale[j]))
        return value if math.isfinite(value) else None

    reason = f"the block's {' and '.join(dead)} is constant" if dead else None
    return cka(0, 1), cka(0, 2), reason
