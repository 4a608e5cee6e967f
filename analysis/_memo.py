"""A memo of what is computed from one tensor alone (private): the mutual-information
estimators' ``MIMemo`` and the intrinsic-dimension estimators' ``shared_work`` scope
both keep their work in one."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

V = TypeVar("V")


class TensorMemo:
    """``compute()`` results kept per tensor and purpose.

    Keys are the tensor's storage, offset, shape, strides, dtype, device and
    version (an in-place change misses), with the purpose; an entry holds a
    reference to its tensor, so the storage cannot be reused under the key while
    the entry lives. With a ``size``, the last ``size`` entries are kept; without,
    every entry until the memo is dropped.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.kept: OrderedDict[tuple, tuple[torch.Tensor, Any]] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def key(A: torch.Tensor, purpose: Hashable) -> tuple:
        where = (A.untyped_storage().data_ptr(), A.storage_offset(), A.stride())
        return (*where, tuple(A.shape), A.dtype, A.device, A._version, purpose)

    def get(self, A: torch.Tensor, purpose: Hashable, compute: Callable[[], V]) -> V:
        """``compute()``, or what it returned for the same ``A`` and ``purpose``."""
        key = self.key(A, purpose)
        with self.lock:
            hit = self.kept.get(key)
            if hit is not None:
                self.kept.move_to_end(key)
                return hit[1]
        value = compute()
        with self.lock:
            self.kept[key] = (A, value)
            while self.size is not None and len(self.kept) > self.size:
                self.kept.popitem(last=False)
        return value
