"""The memory policy of an analysis: freed buffers stay in the heap inside
``pages_kept`` and glibc's defaults come back afterwards."""

from __future__ import annotations

import ctypes

import pytest
import torch

from analysis import memory
from analysis.memory import pages_kept


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mapped_blocks() -> int:
    """Allocations glibc currently serves by mmap (``hblks``)."""
    libc = memory._LIBC
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)


def _mapped_for_a_large_buffer() -> int:
    """How many mappings a 64 MB buffer (above any mmap threshold) has of its own."""
    big = torch.empty(64 * 2**20 // 4)
    big.fill_(1.0)
    held = _mapped_blocks()
    del big
    return held - _mapped_blocks()


def test_large_buffers_come_from_the_heap_only_inside_the_block() -> None:
    assert _mapped_for_a_large_buffer() == 1  # the default: a mapping of its own
    with pages_kept():
        with pages_kept():  # nested: one policy
            assert _mapped_for_a_large_buffer() == 0
        assert _mapped_for_a_large_buffer() == 0  # the outer block still keeps
    assert _mapped_for_a_large_buffer() == 1  # defaults restored


def test_the_policy_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), pages_kept():
        raise RuntimeError("boom")
    assert _mapped_for_a_large_buffer() == 1
    assert memory._depth == 0
