"""Record what every module call of a model outputs: shapes first, then activations.

:func:`profile` runs one small batch and lists every module call (leaf layers and
the blocks above them, not the root) as :class:`~analysis.types.LayerInfo`.
:func:`capture` streams a data set through the model and keeps each chosen call's
output flattened per sample, reduced by a seeded sparse random projection
(:mod:`analysis.projection`) when it is wider than ``budget``.

Which outputs are recorded. A module's output is recorded when it is

- a tensor whose first dimension is the batch (the per-sample shape drops it), or
- a tuple or list whose first element is such a tensor (``LSTM``,
  ``MultiheadAttention``): that element is recorded and the record's ``module`` gets
  the suffix ``[0]`` (``"LSTM[0]"``) to say so.

Anything else is skipped: ``None``, dicts, scalars, sparse or complex tensors and
tensors whose first dimension is not the batch size (a sequence-first ``LSTM`` with
more steps than samples). A skipped call still counts for the ``#k`` call names.

A call whose output is the very tensor an earlier call of the same batch output,
unchanged since (an ``Identity``, a dropout in eval mode), is stored once: both
names read one storage, projected by the earlier call's projection (its seed is in
both records). An in-place activation changes the tensor, so it is stored apart.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from analysis._capture_store import Capture, _recorded_tensor, _Store, layer_seed
from analysis.errors import InvalidInputError, ShapeMismatchError
from analysis.hooks import forward_hooks, module_name
from analysis.types import LayerInfo

__all__ = ["Capture", "capture", "layer_seed", "profile"]

Progress = Callable[[int, int], None]


def profile(model: nn.Module, sample: torch.Tensor) -> list[LayerInfo]:
    """List every module call of one forward pass, in completion order.

    Parameters
    ----------
    model:
        Run once in eval mode under ``torch.no_grad()``; each module's training flag
        is restored afterwards.
    sample:
        A small batch (B, ...) with B >= 1, moved to the model's device.

    Returns
    -------
    list[LayerInfo]
        One record per recorded call (see the module docstring for which outputs
        are recorded), leaf layers and the blocks above them, not the root;
        ``index`` counts from 0.

    Example
    -------
    >>> net = build_model("mlp", {"in_features": 64, "widths": [256, 16, 256]})
    >>> [(l.name, l.shape) for l in profile(net, torch.randn(2, 64))][:3]
    [('flatten', (64,)), ('fc0', (256,)), ('act0', (256,))]
    """
    if not isinstance(sample, torch.Tensor) or sample.ndim < 1 or len(sample) < 1:
        raise InvalidInputError("profile needs a batch tensor (B, ...) with B >= 1")
    recorder = _Recorder(len(sample))
    with _eval_mode(model), torch.no_grad(), forward_hooks(model, recorder):
        model(sample.to(_model_device(model)))
    return recorder.layers


def capture(
    model: nn.Module,
    data: torch.Tensor | Iterable[torch.Tensor],
    *,
    names: Collection[str] | None = None,
    batch_size: int = 256,
    budget: int = 4096,
    exact: Collection[str] = (),
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> Capture:
    """Stream ``data`` through ``model`` and keep the outputs of the chosen calls.

    Every chosen output is flattened per sample (B, W) and copied, or projected,
    inside its forward hook, before a later in-place operation can change it.

    Parameters
    ----------
    model:
        Run in eval mode under ``torch.no_grad()``; training flags are restored.
    data:
        A tensor (N, ...) cut into ``batch_size`` batches, or an iterable of batches
        (B, ...) used as they come (a ``(x, y, ...)`` tuple contributes ``x``).
    names:
        Record names from :func:`profile` (``"layer1.0.relu#2"``); ``None`` keeps
        every recorded call. A name that is not called raises ``InvalidInputError``.
    batch_size:
        Samples per forward pass when ``data`` is a tensor.
    budget:
        Widest output kept as it is; a wider one is projected to ``budget`` features
        by a ``SparseRandomProjection`` seeded with ``layer_seed(seed, name)``
        (recorded in ``LayerInfo.projection``).
    exact:
        fnmatch globs (matched against the record name and its module name, e.g.
        ``"fc"`` covers ``fc#2``) of layers kept at full width whatever ``budget``.
    seed:
        Base seed of the projections.
    device:
        Where the model runs and the activations are stored (default: the device of
        the model's first parameter or buffer, else CPU). The model is not moved.
    progress:
        ``progress(done_samples, total_samples)`` after each batch; ``total`` is -1
        when ``data`` is an iterator of unknown length.

    Returns
    -------
    Capture
        Memory: N x sum(stored widths) x 4 bytes, preallocated when N is known, plus
        one batch, plus the projection matrices (16 bytes per input feature of
        each projected layer).

    Example
    -------
    >>> cap = capture(net, x, names=["fc1", "act1"], budget=4096)
    >>> cap.activations["fc1"].shape
    torch.Size([1000, 16])
    """
    if batch_size < 1 or budget < 1:
        raise InvalidInputError(
            f"batch_size and budget must be >= 1, got {batch_size} and {budget}"
        )
    dev = torch.device(device) if device is not None else _model_device(model)
    batches, total = _batches(data, batch_size)
    wanted = None if names is None else set(names)
    store = _Store(dev, total, budget, tuple(exact), seed)
    recorder = _Recorder(0, on_record=store.on_record, wanted=wanted)
    done = 0
    with _eval_mode(model), torch.no_grad(), forward_hooks(model, recorder):
        for xb in batches:
            recorder.start_batch(len(xb), offset=done)
            store.seen.clear()
            out = model(xb.to(dev))
            if done == 0:
                _check_names(wanted, recorder)
            store.finish_batch(len(xb), out)
            done += len(xb)
            if progress is not None:
                progress(done, total if total is not None else -1)
    if done == 0:
        raise InvalidInputError("capture got no samples: data is empty")
    return store.result(done, recorder.layers)


@dataclass
class _Recorder:
    """The forward-hook callback: builds LayerInfo on the first batch, then feeds
    each recorded output of a ``wanted`` call to ``on_record(info, tensor, offset)``.
    """

    batch: int
    on_record: Callable[[LayerInfo, torch.Tensor, int], None] | None = None
    wanted: set[str] | None = None
    offset: int = 0
    first: bool = True
    layers: list[LayerInfo] = field(default_factory=list)
    by_name: dict[str, LayerInfo] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    def start_batch(self, batch: int, offset: int) -> None:
        self.first = offset == 0
        self.batch, self.offset = batch, offset

    def __call__(self, name: str, module: nn.Module, output: Any) -> None:
        tensor, taken = _recorded_tensor(output, self.batch)
        if self.first:
            if tensor is None:
                self.skipped.add(name)
                return
            qualified = module_name(name)
            shape = tuple(int(s) for s in tensor.shape[1:])
            info = LayerInfo(
                name=name,
                index=len(self.layers),
                module=type(module).__name__ + taken,
                shape=shape,
                width=math.prod(shape),
                parent=qualified.rpartition(".")[0],
                is_leaf=next(module.children(), None) is None,
            )
            self.layers.append(info)
            self.by_name[name] = info
        if self.on_record is None or (
            self.wanted is not None and name not in self.wanted
        ):
            return
        known = self.by_name.get(name)
        if tensor is None or known is None:
            raise ShapeMismatchError(
                f"layer {name!r} output a tensor in one batch and not in another; "
                "capture needs the same module calls in every batch"
            )
        self.on_record(known, tensor, self.offset)


def _check_names(wanted: set[str] | None, recorder: _Recorder) -> None:
    if wanted is None:
        return
    missing = sorted(wanted - set(recorder.by_name))
    if not missing:
        return
    no_tensor = [m for m in missing if m in recorder.skipped]
    hint = ", ".join(layer.name for layer in recorder.layers[:12])
    raise InvalidInputError(
        f"layers {missing} were not recorded"
        + (f" ({no_tensor} return no batch tensor)" if no_tensor else "")
        + f"; names come from profile(), e.g. {hint}"
    )


def _batches(
    data: torch.Tensor | Iterable[Any], batch_size: int
) -> tuple[Iterator[torch.Tensor], int | None]:
    if isinstance(data, torch.Tensor):
        if data.ndim < 1:
            raise InvalidInputError("data must be a tensor (N, ...) or batches")
        n = len(data)
        return (data[i : i + batch_size] for i in range(0, n, batch_size)), n
    total = None
    if isinstance(data, Sequence):
        items = [_batch_tensor(b) for b in data]
        total = sum(len(b) for b in items)
        return iter(items), total
    return (_batch_tensor(b) for b in data), total


def _batch_tensor(item: Any) -> torch.Tensor:
    if isinstance(item, tuple | list) and item:
        item = item[0]
    if not isinstance(item, torch.Tensor) or item.ndim < 1:
        raise InvalidInputError(
            "each batch must be a tensor (B, ...) or a tuple whose first element is "
            f"one, got {type(item).__name__}"
        )
    return item


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
