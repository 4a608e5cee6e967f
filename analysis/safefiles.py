"""Reading untrusted files safely: size caps, regular files, checked safetensors.

Shared by the weight loader (``analysis.checkpoints``) and the dataset loader
(``analysis.datasets``). safetensors 0.8 accepts a duplicated key and does not check
everything we want, so the header is parsed and checked here before the library
sees the bytes.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as parse_safetensors  # a parser: no pickle

from analysis.errors import (
    FileTooLargeError,
    InvalidInputError,
    UnsafeFileError,
    from_contract,
)
from contract.archives import ArchiveError, ArchiveTooLarge, ArchiveUnsafe, check_zip
from contract.errors import ContractError
from contract.formats import HEAD_BYTES, Kind, detect_format, is_zip

DEFAULT_MAX_BYTES = 2 * 1024**3
# safetensors dtype -> (torch dtype, bytes per element)
ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "I8": (torch.int8, 1),
    "I16": (torch.int16, 2),
    "I32": (torch.int32, 4),
    "I64": (torch.int64, 8),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_MAX_HEADER = 100 * 1024**2  # the safetensors library's own limit


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file (symlinks followed) of at most
    ``max_bytes``; ``InvalidInputError`` or ``FileTooLargeError`` otherwise."""
    p = Path(os.fspath(path))
    try:
        st = p.stat()
    except OSError as e:
        raise InvalidInputError(f"cannot read {p}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{p} is not a regular file")
    if st.st_size > max_bytes:
        raise FileTooLargeError(
            f"{p} has {st.st_size} bytes, more than the limit of {max_bytes}; "
            "raise max_bytes if the file is trusted"
        )
    with p.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew since stat
        raise FileTooLargeError(f"{p} has more than the limit of {max_bytes} bytes")
    return data


def from_archive_error(e: ArchiveError) -> InvalidInputError:
    """The library's error class for a ``contract.archives`` refusal."""
    if isinstance(e, ArchiveTooLarge):
        return FileTooLargeError(str(e))
    if isinstance(e, ArchiveUnsafe):
        return UnsafeFileError(str(e))
    return InvalidInputError(str(e))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInputError(f"safetensors header: duplicate key {key!r}")
        out[key] = value
    return out


def _bad_constant(name: str) -> None:
    raise InvalidInputError(f"safetensors header: invalid JSON constant {name}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_safetensors_header(
    data: bytes,
) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], dict[str, str]]:
    """Validate a safetensors file's header against its bytes.

    Returns ``({name: (dtype, shape, begin, end)}, metadata)`` with offsets
    relative to the data section. Raises ``InvalidInputError`` naming the problem:
    header length, JSON, duplicate keys, dtype outside ``ST_DTYPES``, offsets
    outside the data section, overlapping or leaving gaps, a length that is not
    ``prod(shape) * itemsize``, ``__metadata__`` that is not str -> str.
    """
    if len(data) < 8:
        raise InvalidInputError("safetensors: file shorter than its 8-byte header")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > len(data):
        raise InvalidInputError(
            f"safetensors: header length {n} does not fit a file of {len(data)} bytes"
        )
    try:
        header = json.loads(
            data[8 : 8 + n].decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_bad_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"safetensors: header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise InvalidInputError("safetensors: header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise InvalidInputError("safetensors: __metadata__ must map str to str")
    size = len(data) - 8 - n
    specs: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
        where = f"safetensors tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {
            "dtype",
            "shape",
            "data_offsets",
        }:
            raise InvalidInputError(
                f"{where}: needs exactly dtype, shape, data_offsets"
            )
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in ST_DTYPES:
            raise InvalidInputError(
                f"{where}: dtype {dtype!r} not accepted; accepted: "
                f"{', '.join(ST_DTYPES)}"
            )
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise InvalidInputError(f"{where}: bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= size
        ):
            raise InvalidInputError(
                f"{where}: data_offsets {offsets!r} outside the data section "
                f"[0, {size}]"
            )
        expected = math.prod(shape) * ST_DTYPES[dtype][1]
        if offsets[1] - offsets[0] != expected:
            raise InvalidInputError(
                f"{where}: {offsets[1] - offsets[0]} bytes for shape {shape} {dtype}, "
                f"expected {expected}"
            )
        specs[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for name, (_, _, begin, stop) in sorted(specs.items(), key=lambda kv: kv[1][2:]):
        if begin < end:
            raise InvalidInputError(f"safetensors tensor {name!r} overlaps another")
        if begin > end:
            raise InvalidInputError(f"safetensors: unused bytes before {name!r}")
        end = stop
    if end != size:
        raise InvalidInputError(
            f"safetensors: {size - end} bytes after the last tensor are not described"
        )
    return specs, meta


def load_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Check the header (``check_safetensors_header``), then load the tensors."""
    _, meta = check_safetensors_header(data)
    try:
        tensors = parse_safetensors(data)
    except Exception as e:  # the library's own checks, after ours
        raise InvalidInputError(f"safetensors: cannot load: {e}") from e
    return tensors, meta


def count_nonfinite(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """NaN and Inf count per floating tensor, only for tensors that have any."""
    out = {}
    for name, t in tensors.items():
        if t.is_floating_point() or t.is_complex():
            bad = int(t.numel() - torch.isfinite(t).sum().item())
            if bad:
                out[name] = bad
    return out


def file_format(
    data: bytes, kind: Kind, *, suffix: str = "", max_bytes: int, max_ratio: float
) -> str:
    """The format of a whole file by ``contract.formats.detect_format``, as the API
    tells it; a zip's directory passes the archive caps first (no member is read).
    """
    names = None
    if is_zip(data):
        try:
            infos = check_zip(
                io.BytesIO(data), max_bytes=max_bytes, max_ratio=max_ratio
            )
        except ArchiveError as e:
            raise from_archive_error(e) from e
        names = [i.filename for i in infos]
    try:
        return detect_format(
            data[:HEAD_BYTES], len(data), kind=kind, zip_names=names, suffix=suffix
        )
    except ContractError as e:
        raise from_contract(e) from e
