"""Where a capture keeps what it records (private; :mod:`analysis.capture` is the
public side): one slot per layer, preallocated or streamed, projected when wider
than the budget, shared with an earlier call that output the very same tensor."""

from __future__ import annotations

import fnmatch
import hashlib
import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from analysis.errors import ShapeMismatchError
from analysis.hooks import module_name
from analysis.projection import SparseRandomProjection
from analysis.types import LayerInfo


@dataclass
class Capture:
    """What :func:`capture` kept.

    ``layers`` are the captured records in execution order (``projected_to`` and
    ``projection`` set for projected ones); ``activations[name]`` is (N, stored
    width) float32 with stored width ``layer.projected_to or layer.width``;
    ``outputs`` is the model's own output (N, ...) in its dtype when it has at most
    ``budget`` features per sample, else ``None``.
    """

    layers: list[LayerInfo]
    activations: dict[str, torch.Tensor]
    outputs: torch.Tensor | None


def layer_seed(seed: int, name: str) -> int:
    """The projection seed of layer ``name``: a 63-bit hash of ``(seed, name)``."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class _Slot:
    """Storage (and projection) of one captured layer."""

    def __init__(
        self,
        info: LayerInfo,
        projection: SparseRandomProjection | None,
        total: int | None,
        device: torch.device,
        source: _Slot | None = None,
    ) -> None:
        self.info = info
        self.projection = projection
        self.device = device
        self.width = projection.width_out if projection is not None else info.width
        self.total = total
        self.filled = 0
        self.chunks: list[torch.Tensor] = []
        self.data: torch.Tensor | None = None
        # An output that is the very tensor an earlier call output (an identity, a
        # dropout in eval) is stored once: the slot reads its source's storage until
        # a batch gives it a different tensor.
        self.source = source
        if total is not None and source is None:
            self.data = torch.empty(
                total, self.width, dtype=torch.float32, device=device
            )

    def write(self, x: torch.Tensor, offset: int, *, same: bool = False) -> None:
        if tuple(x.shape[1:]) != self.info.shape:
            raise ShapeMismatchError(
                f"layer {self.info.name!r} output per-sample shape "
                f"{tuple(x.shape[1:])} in one batch and {self.info.shape} in the "
                "first; give inputs of one size"
            )
        if offset != self.filled:
            raise ShapeMismatchError(
                f"layer {self.info.name!r} was called more or less than once in a "
                "batch; capture needs the same module calls in every batch"
            )
        if self.source is not None:
            if same:
                self.filled += len(x)
                return
            self._own_storage()
        flat = x.detach().reshape(len(x), -1)  # (B, W), may be a view of x
        if self.projection is not None:
            flat = self.projection(flat)  # (B, k), a new tensor
        if self.total is not None:
            assert self.data is not None
            self.data[offset : offset + len(x)].copy_(flat)
        else:
            self.chunks.append(flat.to(self.device, torch.float32, copy=True))
        self.filled += len(x)

    def _own_storage(self) -> None:
        """Copy what the source stored so far, and store from now on."""
        assert self.source is not None
        done = self.source.tensor()[: self.filled]  # (filled, width)
        if self.total is not None:
            self.data = torch.empty(
                self.total, self.width, dtype=torch.float32, device=self.device
            )
            self.data[: self.filled].copy_(done)
        else:
            self.chunks = [done.clone()]
        self.source = None

    def tensor(self) -> torch.Tensor:
        if self.source is not None:
            return self.source.tensor()
        if self.chunks:  # streamed: joined when asked for, kept joined
            joined = [self.data, *self.chunks] if self.data is not None else self.chunks
            self.data = torch.cat(joined)  # (filled, width)
            self.chunks = []
        assert self.data is not None
        return self.data


@dataclass
class _Store:
    device: torch.device
    total: int | None
    budget: int
    exact: tuple[str, ...]
    seed: int
    slots: dict[str, _Slot] = field(default_factory=dict)
    outputs: list[torch.Tensor] = field(default_factory=list)
    keep_outputs: bool | None = None
    # The tensors recorded in this batch: id -> (weak reference, version, slot).
    seen: dict[int, tuple[weakref.ref[torch.Tensor], int, _Slot]] = field(
        default_factory=dict
    )

    def on_record(self, info: LayerInfo, tensor: torch.Tensor, offset: int) -> None:
        earlier = self._recorded_before(tensor)
        slot = self.slots.get(info.name)
        if slot is None:
            if offset != 0:
                raise ShapeMismatchError(
                    f"layer {info.name!r} was not called in the first batch"
                )
            slot = self._new_slot(info, earlier)
            self.slots[info.name] = slot
        root = slot.source
        slot.write(tensor, offset, same=root is not None and earlier is root)
        version = _version(tensor)
        if version is not None:
            owner = slot.source or slot
            self.seen[id(tensor)] = (weakref.ref(tensor), version, owner)

    def _recorded_before(self, tensor: torch.Tensor) -> _Slot | None:
        """The slot that stored this very tensor, unchanged, earlier in the batch."""
        entry = self.seen.get(id(tensor))
        if entry is None:
            return None
        ref, version, slot = entry
        if ref() is not tensor or _version(tensor) != version:
            return None
        return slot

    def _new_slot(self, info: LayerInfo, earlier: _Slot | None) -> _Slot:
        keep = info.width <= self.budget or any(
            fnmatch.fnmatchcase(name, glob)
            for glob in self.exact
            for name in (info.name, module_name(info.name))
        )
        if earlier is not None and keep == (earlier.projection is None):
            return _Slot(
                info, earlier.projection, self.total, self.device, source=earlier
            )
        projection = None
        if not keep:
            projection = SparseRandomProjection(
                info.width,
                self.budget,
                seed=layer_seed(self.seed, info.name),
                device=self.device,
            )
        return _Slot(info, projection, self.total, self.device)

    def finish_batch(self, batch: int, output: Any) -> None:
        tensor, _ = _recorded_tensor(output, batch)
        if self.keep_outputs is None:
            width = math.prod(tensor.shape[1:]) if tensor is not None else 0
            self.keep_outputs = tensor is not None and width <= self.budget
        if self.keep_outputs:
            if tensor is None:
                raise ShapeMismatchError("the model's output changed between batches")
            self.outputs.append(tensor.detach().to(self.device, copy=True))

    def result(self, n: int, layers: list[LayerInfo]) -> Capture:
        captured, activations = [], {}
        for info in layers:
            slot = self.slots.get(info.name)
            if slot is None:
                continue
            if slot.filled != n:
                raise ShapeMismatchError(
                    f"layer {info.name!r} saw {slot.filled} of {n} samples; capture "
                    "needs the same module calls in every batch"
                )
            if slot.projection is not None:
                info = replace(
                    info,
                    projected_to=slot.projection.width_out,
                    projection=slot.projection.describe(),
                )
            captured.append(info)
            activations[info.name] = slot.tensor()
        outputs = torch.cat(self.outputs) if self.outputs else None
        return Capture(captured, activations, outputs)


def _version(tensor: torch.Tensor) -> int | None:
    """The in-place version counter; ``None`` for an inference-mode tensor."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return None


def _recorded_tensor(output: Any, batch: int) -> tuple[torch.Tensor | None, str]:
    """The tensor recorded for ``output`` and the suffix saying where it came from."""
    tensor, taken = output, ""
    if isinstance(output, tuple | list) and output:
        tensor, taken = output[0], "[0]"
    ok = (
        isinstance(tensor, torch.Tensor)
        and tensor.layout == torch.strided
        and not tensor.is_complex()
        and tensor.ndim >= 1
        and tensor.shape[0] == batch
    )
    return (tensor, taken) if ok else (None, "")
