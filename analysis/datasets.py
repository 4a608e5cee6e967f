"""Datasets from a spec string: a file, a bundled scikit-learn set, or a manifold.

Specs:

- a path ending in ``.npz`` (arrays ``x`` and optional ``y``, no pickled objects),
  ``.safetensors`` (tensors ``x`` and optional ``y``) or ``.csv`` (a header row,
  numeric cells, labels in the column ``label_column``);
- ``sklearn:digits``: 1797 8x8 digit images as ``(N, 64)`` float32 in [0, 1]
  (pixel / 16), labels 0-9; reshape to ``(N, 1, 8, 8)`` for a conv model;
- ``sklearn:breast_cancer``: 569 x 30 features standardised to mean 0 and
  standard deviation 1 per column, labels 0/1;
- ``synthetic:<manifold>?d=5&D=64&n=2000&noise=0.01&seed=0``: points of
  ``analysis.manifolds.make_manifold`` (keys optional, these are the defaults
  except ``noise=0``, and ``d=2`` for the ``swiss_roll``);
  ``meta["intrinsic_dimension"]`` is the true ``d``.

Every dataset is checked: ``x`` numeric and finite with at least 2 samples, ``y``
(if any) one value per sample. ``x`` becomes float32; integer or boolean ``y``
int64 (classes), floating ``y`` float32 (regression).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import numpy as np
import torch

from analysis.datafiles import read_csv, read_npz, read_safetensors
from analysis.errors import InvalidInputError, UnsafeFileError, from_contract
from analysis.safefiles import DEFAULT_MAX_BYTES, file_format, read_regular_file
from contract.archives import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_COMPRESSION_RATIO,
    DEFAULT_MAX_CSV_COLUMNS,
    DEFAULT_MAX_CSV_ROWS,
)
from contract.errors import ContractError
from contract.specs import SPEC_FORMS, DatasetSpec, is_builtin, parse_spec

__all__ = ["Dataset", "load_dataset"]

_FINITE_BLOCK = 1 << 22  # elements per block of the finiteness check


@dataclass
class Dataset:
    """Inputs ``x`` (N, ...) float32 and optional targets ``y`` (N,).

    ``sha256`` is the hash of the file's bytes, or for built-ins of ``x`` and
    ``y``'s bytes; ``meta`` says where it came from (for ``synthetic:`` the
    manifold, ``d``, ``D``, ``n``, ``noise``, ``seed`` and ``intrinsic_dimension``).
    """

    x: torch.Tensor
    y: torch.Tensor | None
    spec: str
    name: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_dataset(
    spec: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    label_column: str | None = "label",
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    max_csv_columns: int = DEFAULT_MAX_CSV_COLUMNS,
    max_csv_rows: int = DEFAULT_MAX_CSV_ROWS,
) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring for specs).

    Parameters
    ----------
    spec:
        A file path (``.npz``, ``.safetensors``, ``.csv``), ``sklearn:<name>`` or
        ``synthetic:<manifold>?key=value&...``.
    max_bytes:
        Size cap of the file as stored.
    label_column:
        CSV only: the column holding ``y``; ``None`` for a CSV without labels.
    max_archive_bytes:
        Cap of what the file's arrays take once loaded: an ``.npz``'s unpacked
        members, every array's declared bytes, ``x`` as float32, a CSV's values
        as float64. Checked from the zip directory and the array headers before
        anything of that size is allocated, so loading costs at most about the
        file's size plus 1.5 times this cap (an array stored narrower than
        float32 plus its float32 copy). Measured: a 583 KB ``.npz`` of deflated
        zeros declaring 600 MB is refused with no growth of memory (it took
        1.6 GB before these checks); admitted, it costs 0.64 GB.
    max_compression_ratio:
        ``.npz`` only: a member of 1 MiB or more unpacked may inflate at most this
        many times (deflated zeros inflate ~1000 times).
    max_csv_columns, max_csv_rows:
        CSV only: a line with more cells is refused before it is split; rows are
        counted as they are read.

    Returns
    -------
    A :class:`Dataset` with ``x`` (N, ...) float32 and ``y`` (N,) or ``None``.

    Raises
    ------
    InvalidInputError
        Unknown spec or key, unreadable file, non-numeric or non-finite values,
        fewer than 2 samples, ``y`` not matching ``x``.
    UnsafeFileError
        An ``.npz`` holding pickled objects.
    FileTooLargeError
        Over ``max_bytes`` or one of the other caps; the message names the cap.

    Example
    -------
    >>> ds = load_dataset("synthetic:sphere?d=2&D=16&n=500")
    >>> ds.x.shape, ds.meta["intrinsic_dimension"]
    (torch.Size([500, 16]), 2)
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidInputError("a dataset spec must be a non-empty string")
    if is_builtin(spec):
        try:
            parsed = parse_spec(spec, max_bytes=max_bytes)
        except ContractError as e:
            raise from_contract(e) from e
        return (
            _sklearn(spec, parsed)
            if parsed.kind == "sklearn"
            else _synthetic(spec, parsed)
        )
    if not os.path.exists(spec):
        raise InvalidInputError(
            f"unknown dataset {spec[:200]!r}: no such file; give a file (.npz, "
            f".safetensors, .csv) or a built-in: {SPEC_FORMS}"
        )
    data = read_regular_file(spec, max_bytes)
    fmt = _format(data, spec, max_archive_bytes, max_compression_ratio)
    if fmt == "npz":
        x, y = read_npz(
            data, max_bytes=max_archive_bytes, max_ratio=max_compression_ratio
        )
    elif fmt == "safetensors":
        x, y = read_safetensors(data, max_bytes=max_archive_bytes)
    else:
        x, y = read_csv(
            data,
            label_column,
            max_columns=max_csv_columns,
            max_rows=max_csv_rows,
            max_bytes=max_archive_bytes,
        )
    x_t, y_t = _checked(x, y)
    meta = {"format": fmt, "bytes": len(data)}
    name = os.path.basename(spec)
    return Dataset(x_t, y_t, spec, name, sha256(data).hexdigest(), meta)


def _as_tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a
    else:
        arr = np.asarray(a)
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(f"{what} must be numeric, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise InvalidInputError(f"{what} must be real numbers, got {t.dtype}")
    return t


def _nonfinite(t: torch.Tensor, what: str) -> None:
    # In blocks of rows: torch.isfinite makes a temporary as large as its input.
    flat = t.reshape(len(t), -1)  # (N, features)
    step = max(1, _FINITE_BLOCK // max(flat.shape[1], 1))
    n_nan = n_bad = n_rows = 0
    rows: list[int] = []
    for start in range(0, len(flat), step):
        block = flat[start : start + step]
        bad = ~torch.isfinite(block)
        if bad.any():
            n_nan += int(torch.isnan(block).sum())
            n_bad += int(bad.sum())
            bad_rows = bad.any(dim=1)
            n_rows += int(bad_rows.sum())
            if len(rows) <= 10:
                rows += (bad_rows.nonzero().flatten()[:11] + start).tolist()
    if n_bad:
        n_inf = n_bad - n_nan
        shown = ", ".join(map(str, rows[:10])) + (" ..." if n_rows > 10 else "")
        raise InvalidInputError(
            f"{what} has {n_bad} non-finite values ({n_nan} NaN, {n_inf} "
            f"Inf) in {n_rows} samples (indices {shown}); drop or impute them"
        )


def _checked(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    xt = _as_tensor(x, "x")
    if xt.ndim < 2:
        raise InvalidInputError(
            f"x must have shape (N, ...) with N samples, got {tuple(xt.shape)}; "
            "for one feature per sample reshape to (N, 1)"
        )
    if len(xt) < 2:
        raise InvalidInputError(f"x has {len(xt)} samples; at least 2 are needed")
    xt = xt.to(torch.float32)
    _nonfinite(xt, "x")  # after the cast: float64 beyond float32's range is Inf
    if y is None:
        return xt, None
    yt = _as_tensor(y, "y")
    if yt.ndim != 1 or len(yt) != len(xt):
        raise InvalidInputError(
            f"y must have shape ({len(xt)},), one value per sample of x; "
            f"got {tuple(yt.shape)}"
        )
    if yt.is_floating_point():
        yt = yt.to(torch.float32)
        _nonfinite(yt, "y")
    else:
        yt = yt.to(torch.int64)
    return xt, yt


def _hash(x: torch.Tensor, y: torch.Tensor | None) -> str:
    h = sha256(x.contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()


def _format(data: bytes, spec: str, max_bytes: int, max_ratio: float) -> str:
    """The format from the bytes (``contract.formats.detect_format``, as the API
    tells it), never from the name; a pickle is refused."""
    try:
        fmt = file_format(data, "dataset", max_bytes=max_bytes, max_ratio=max_ratio)
    except InvalidInputError as e:
        if e.problems or "unknown dataset format" not in str(e):
            raise
        raise InvalidInputError(
            f"{e} (the file {os.path.basename(spec)!r}; a built-in is named "
            f"{SPEC_FORMS})"
        ) from e
    if fmt == "pickle":
        raise UnsafeFileError(
            f"{spec!r} is a pickle stream, which can run code when loaded; save the "
            "arrays with numpy.savez(path, x=x, y=y)"
        )
    return fmt


def _sklearn(spec: str, parsed: DatasetSpec) -> Dataset:
    from sklearn import datasets as skd

    name = parsed.name
    if name == "digits":
        bunch = skd.load_digits()
        x = np.asarray(bunch.data, dtype=np.float32) / 16.0  # (N, 64) in [0, 1]
        meta: dict[str, Any] = {"source": "sklearn", "image_shape": [1, 8, 8]}
    elif name == "breast_cancer":
        bunch = skd.load_breast_cancer()
        raw = np.asarray(bunch.data, dtype=np.float64)  # (N, 30)
        x = ((raw - raw.mean(0)) / raw.std(0)).astype(np.float32)
        meta = {"source": "sklearn", "standardised": True}
    else:  # pragma: no cover - the contract lists the names
        raise InvalidInputError(f"no loader for the built-in {spec!r}")
    xt, yt = _checked(x, np.asarray(bunch.target, dtype=np.int64))
    meta["classes"] = len(bunch.target_names)
    return Dataset(xt, yt, spec, name, _hash(xt, yt), meta)


def _synthetic(spec: str, parsed: DatasetSpec) -> Dataset:
    from analysis.manifolds import make_manifold

    params = parsed.params
    d, D, n, seed = (int(params[k]) for k in ("d", "D", "n", "seed"))
    x = make_manifold(parsed.name, n, d, D, noise=float(params["noise"]), seed=seed)
    xt, _ = _checked(x, None)  # (n, D)
    meta = {"manifold": parsed.name, **params, "intrinsic_dimension": d}
    return Dataset(xt, None, spec, parsed.name, _hash(xt, None), meta)
