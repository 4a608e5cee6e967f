"""Seeded sparse random projections that keep pairwise distances (JL lemma).

A layer of ``width_in`` features is mapped to ``width_out`` by ``y = x @ R`` with a
sparse random ``R`` (``width_in`` x ``width_out``) that is never dense: it is generated
in blocks of ``_BLOCK`` input features from a seeded ``torch.Generator``. A
``sparse_jl`` block on the CPU is kept as the output row and value of each feature's
``c`` non-zeros and summed by ``index_add_``; any other block as one CSR matrix
``R[block].T`` (``width_out`` x ``block``).

Two constructions, both with ``E[|xR|^2] = |x|^2``:

``kind="sparse_jl"`` (default)
    Kane & Nelson (2014), "Sparser Johnson-Lindenstrauss transforms", block
    construction (a CountSketch repeated ``c`` times; Charikar et al. 2002): the
    outputs are split into ``c`` equal blocks and every input feature goes to one
    random output of each block with a random sign and weight ``1/sqrt(c)``.
    ``nnz = c * width_in`` (``density = c / width_out``); default ``c = 2``.
``kind="very_sparse"``
    Li, Hastie & Church (2006), "Very sparse random projections": i.i.d. entries
    ``+-sqrt(s/k)`` with probability ``1/(2s)`` each, ``s = sqrt(width_in)`` by
    default (``density = 1/s``), so ``nnz ~ width_in * k / sqrt(width_in)``.

Why ``sparse_jl``, ``c = 2``, is the default. For a difference vector ``u`` the
relative error of ``|uR|^2`` has variance ``2 (1 - sum u_i^4 / |u|^4) / k`` under
``sparse_jl`` whatever ``c`` (never above a dense Gaussian's ``2/k``), and
``(2 + (s - 3) sum u_i^4 / |u|^4) / k`` under ``very_sparse``, which grows when ``u``
is concentrated on few features: for points differing in 8 of 50,000 features at
k=1024 the worst pairwise error was 70% with ``very_sparse``, 27% with ``c = 2``, 17%
with ``c = 4`` (``c`` only thins the tail). Time and memory are proportional to
``nnz``: ``c * width_in`` against ``k * sqrt(width_in)``. Capturing every layer of a
ResNet-50 at 224x224 with ``k = 4096`` (one CPU thread) needs 81 M non-zeros with
``c = 2`` (620 MB of matrices, drawn in 2.6 s; capture 2.5x a forward pass, drawing
aside) against 313 M with ``very_sparse`` (2.4 GB, 11.8 s; 5.8x). A subsampled
randomised Hadamard transform needs no stored matrix but makes ``log2(width_in)``
passes over each sample (20 for 802,816 features), each about the cost of a copy;
it was not built.

Blocks of ``_BLOCK`` input features keep the gathered slice of each sample in cache
(four times faster than one CSR over all columns for 802,816 features on a CPU). The
matrix depends on ``(kind, seed, width_in, width_out, density)`` and on ``_BLOCK``
(recorded in :meth:`describe`), never on the device: it is generated on the CPU.
On the CPU the CSR product first copies each block's slice into ``(block, B)``
order, which costs about as much as the product; ``index_add_`` reads the slice
where it is and took 64 ms against 147 ms for 256 samples of 65,536 features
(one thread). The two sum in different orders: outputs agree to float32
rounding (about 1e-7 relative), not bit for bit.

Example
-------
>>> proj = SparseRandomProjection(802_816, 4096, seed=7)
>>> y = proj(torch.randn(2, 802_816))  # (2, 4096)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from analysis.errors import InvalidInputError

__all__ = ["SparseRandomProjection"]

_BLOCK = 32_768  # input features per CSR block: 128 KB of one float32 sample
_KINDS = ("sparse_jl", "very_sparse")
_DEFAULT_C = 2  # non-zeros per input feature for sparse_jl


class SparseRandomProjection:
    """A seeded sparse JL map ``(B, width_in) -> (B, width_out)``; see the module.

    Parameters
    ----------
    width_in, width_out:
        Input and output feature counts (``width_out`` is ``k`` in the papers).
    seed:
        Seeds the CPU ``torch.Generator`` that draws the matrix; same seed, same
        matrix on every device.
    density:
        Fraction of non-zero entries. ``sparse_jl``: ``c / width_out`` with ``c``
        non-zeros per input feature, rounded to a whole ``c`` in ``[1, width_out]``
        (default ``2 / width_out``). ``very_sparse``: ``1/s`` (default
        ``1/sqrt(width_in)``).
    device:
        Where the matrix lives and the product runs (default CPU).
    kind:
        ``"sparse_jl"`` (default) or ``"very_sparse"``.

    Example
    -------
    >>> proj = SparseRandomProjection(10_000, 512, seed=0)
    >>> proj(torch.randn(8, 10_000)).shape
    torch.Size([8, 512])
    """

    def __init__(
        self,
        width_in: int,
        width_out: int,
        seed: int,
        density: float | None = None,
        device: torch.device | str | None = None,
        *,
        kind: str = "sparse_jl",
    ) -> None:
        if width_in < 1 or width_out < 1:
            raise InvalidInputError(
                f"projection widths must be >= 1, got {width_in} -> {width_out}"
            )
        if kind not in _KINDS:
            raise InvalidInputError(
                f"projection kind must be one of {_KINDS}, got {kind!r}"
            )
        if density is not None and not 0.0 < density <= 1.0:
            raise InvalidInputError(f"density must be in (0, 1], got {density}")
        self.width_in = width_in
        self.width_out = width_out
        self.seed = int(seed)
        self.kind = kind
        self.device = torch.device(device if device is not None else "cpu")
        if kind == "sparse_jl":
            d = density if density is not None else _DEFAULT_C / width_out
            self.c = min(width_out, max(1, round(d * width_out)))
            self.density = self.c / width_out
        else:
            self.c = 0
            self.density = (
                density if density is not None else min(1.0, 1 / math.sqrt(width_in))
            )
        gen = torch.Generator().manual_seed(self.seed)
        # sparse_jl on the CPU: each block as (n, c) output rows and values, summed
        # by index_add_ (2.3x the CSR product's speed on a 65,536-wide layer);
        # otherwise one CSR matrix per block.
        self._blocks: list[tuple[int, int, torch.Tensor]] = []
        self._scatter: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        self.nnz = 0
        for start in range(0, width_in, _BLOCK):
            n = min(_BLOCK, width_in - start)
            if kind == "sparse_jl":
                rows, vals = self._sparse_jl_block(n, gen)  # (n, c) each
                self.nnz += rows.numel()
                if self.device.type == "cpu":
                    self._scatter.append((start, n, rows.long(), vals))
                else:
                    self._blocks.append((start, n, self._csr_by_feature(rows, vals)))
            else:
                rows, cols, vals = self._very_sparse_block(n, gen)
                self.nnz += rows.numel()
                self._blocks.append((start, n, self._csr(rows, cols, vals, n)))

    def _sparse_jl_block(
        self, n: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output row and value of each of the ``n`` features in each output
        block: ``(n, c)`` each."""
        k, c = self.width_out, self.c
        dtype = torch.int32 if k * n < 2**31 else torch.int64  # int32 sorts faster
        edges = (
            torch.arange(c + 1, dtype=dtype) * k // c
        )  # output block b: edges[b:b+2]
        sizes = (edges[1:] - edges[:-1]).float()  # (c,)
        # One draw per entry: its row within output block b and, in the low bit, its
        # sign (float32 has 24 bits, ample for 2 * k / c values).
        draw = (torch.rand(n, c, generator=gen) * (2 * sizes)).to(dtype)  # (n, c)
        rows = edges[:-1] + (draw >> 1)  # (n, c)
        vals = ((draw & 1).float() * 2 - 1) / math.sqrt(c)  # (n, c)
        return rows, vals

    def _csr_by_feature(self, rows: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        n = rows.shape[0]
        cols = torch.arange(n, dtype=rows.dtype).unsqueeze(1)  # (n, 1)
        key, order = torch.sort((rows * n + cols).flatten())  # CSR order, unique keys
        r = key // n
        return self._csr(r, key - r * n, vals.flatten()[order], n)

    def _very_sparse_block(
        self, n: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The non-zeros of an i.i.d. Bernoulli(p) grid of k x n cells, in row-major
        # order, are at the partial sums of Geometric(p) gaps: O(nnz) work, no grid.
        k, p = self.width_out, self.density
        cells = k * n
        if p >= 1.0:
            pos = torch.arange(cells)
        else:
            mean = cells * p
            draws = int(mean + 8 * math.sqrt(mean) + 16)
            pos = torch.empty(0, dtype=torch.long)
            last = -1
            while last < cells:
                gaps = torch.empty(draws, dtype=torch.float64).geometric_(
                    p, generator=gen
                )
                more = gaps.long().cumsum(0) + last  # (draws,)
                pos = torch.cat([pos, more[more < cells]])
                last = int(more[-1])
        signs = torch.randint(0, 2, (pos.numel(),), generator=gen, dtype=torch.int8)
        vals = (signs.float() * 2 - 1) / math.sqrt(p * k)  # +-sqrt(s/k)
        return pos // n, pos % n, vals

    def _csr(
        self, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n: int
    ) -> torch.Tensor:
        k = self.width_out
        crow = torch.zeros(k + 1, dtype=torch.int64)
        crow[1:] = torch.bincount(rows, minlength=k).cumsum(0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                crow.int(),
                cols.int(),
                vals,
                size=(k, n),
                device=self.device,
                check_invariants=False,
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` (B, width_in) to (B, width_out) float32 on ``self.device``."""
        if x.ndim != 2 or x.shape[1] != self.width_in:
            raise InvalidInputError(
                f"projection expects (B, {self.width_in}) inputs, got {tuple(x.shape)}"
            )
        x = x.to(device=self.device, dtype=torch.float32)
        if self._scatter:
            out = torch.zeros(len(x), self.width_out, device=self.device)  # (B, k)
            for start, n, rows, vals in self._scatter:
                part = x[:, start : start + n]  # (B, n)
                for b in range(rows.shape[1]):
                    out.index_add_(1, rows[:, b], part * vals[:, b])
            return out
        y: torch.Tensor | None = None  # (width_out, B)
        for start, n, block in self._blocks:
            part = torch.sparse.mm(block, x[:, start : start + n].T)  # (k, B)
            y = part if y is None else y.add_(part)
        assert y is not None
        return y.T  # (B, width_out)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of what was drawn (stored in ``LayerInfo.projection``)."""
        reference = (
            "Kane & Nelson 2014, block construction"
            if self.kind == "sparse_jl"
            else "Li, Hastie & Church 2006"
        )
        out: dict[str, Any] = {
            "kind": self.kind,
            "seed": self.seed,
            "width_in": self.width_in,
            "width_out": self.width_out,
            "density": self.density,
            "nnz": self.nnz,
            "block": _BLOCK,
            "reference": reference,
        }
        if self.kind == "sparse_jl":
            out["nonzeros_per_feature"] = self.c
        return out

    def __repr__(self) -> str:
        return (
            f"SparseRandomProjection({self.width_in} -> {self.width_out}, "
            f"kind={self.kind!r}, seed={self.seed}, density={self.density:.3g})"
        )
