"""Weight files, read without running code: safetensors, state dicts, torch.export.

``read_checkpoint`` detects the format by content (a zip archive, a safetensors
header, a pickle), not by extension:

- safetensors: the header is parsed and checked here before the library sees the
  bytes (safetensors 0.8 accepts duplicated keys).
- ``torch.save`` state dicts (``.pt``/``.pth``): only
  ``torch.load(weights_only=True)``, which refuses pickled objects and payloads.
- ``torch.export`` programs (``.pt2``): refused unless ``allow_code_checkpoints``,
  because ``torch.export.load`` falls back to unpickling (it can run code).
- TorchScript archives: always refused.

The file is read once; what is hashed is what is parsed.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.errors import (
    CheckpointMismatchError,
    InvalidInputError,
    UnsafeFileError,
)
from analysis.safefiles import (
    DEFAULT_MAX_BYTES,
    count_nonfinite,
    file_format,
    load_safetensors,
    read_regular_file,
)
from contract.archives import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_COMPRESSION_RATIO,
)
from contract.formats import SAFE_ADVICE

__all__ = ["Checkpoint", "load_model", "load_weights_into", "read_checkpoint"]

ACCEPTED = (
    "safetensors (.safetensors), a state dict saved with torch.save (.pt, .pth), "
    "a torch.export program (.pt2, with allow_code_checkpoints=True)"
)
_MAX_LISTED = 20


@dataclass
class Checkpoint:
    """What ``read_checkpoint`` found in a weight file.

    ``tensors`` is the state dict (``None`` for an export program, whose weights
    live in ``module``); ``module`` is the unflattened ``torch.export`` program
    (export only). ``nonfinite`` counts NaN and Inf per tensor, for the tensors
    that have any. ``metadata`` holds the safetensors ``__metadata__``, or for a
    nested state dict ``nested_under`` and ``ignored_keys``.
    """

    format: str  # "safetensors" | "state_dict" | "export"
    tensors: dict[str, torch.Tensor] | None
    module: nn.Module | None
    sha256: str
    size: int
    nonfinite: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def model_info(
        self,
        architecture: str | None,
        architecture_config: dict[str, Any] | None,
        filename: str | None,
    ) -> dict[str, Any]:
        """What a result's ``model`` section says about where the model came from."""
        return {
            "architecture": architecture,
            "architecture_config": architecture_config,
            "sha256": self.sha256,
            "format": self.format,
            "size": self.size,
            "file": filename,
        }


def _torch_load(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it refers to {found[1]}" if found else "it holds Python objects"
        raise UnsafeFileError(
            f"the file needs code execution to load ({what}: a pickled object or "
            f"model, not a state dict). {SAFE_ADVICE}"
        ) from e
    except Exception as e:
        raise InvalidInputError(f"cannot read the torch.save file: {e}") from e
    meta: dict[str, str] = {}
    if isinstance(obj, dict) and not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                others = sorted(str(k) for k in obj if k != key)
                meta = {"nested_under": key, "ignored_keys": ", ".join(others)}
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise InvalidInputError(
            f"the file holds a {type(obj).__name__}, not a state dict. {SAFE_ADVICE}"
        )
    bad = [
        f"{k!r} ({type(v).__name__})"
        for k, v in obj.items()
        if not isinstance(k, str)
        or not isinstance(v, torch.Tensor)
        or v.layout != torch.strided
    ]
    if bad:
        raise InvalidInputError(
            f"a state dict maps names to dense tensors; not so: {_listing(bad)}. "
            f"{SAFE_ADVICE}"
        )
    return dict(obj), meta


def _load_export(data: bytes) -> nn.Module:
    try:
        ep = torch.export.load(io.BytesIO(data))
        return torch.export.unflatten(ep)
    except Exception as e:
        raise InvalidInputError(f"cannot load the torch.export program: {e}") from e


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_code_checkpoints: bool = False,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> Checkpoint:
    """Read a weight file without running code from it (unless allowed).

    Parameters
    ----------
    path:
        A regular file (trusted path; symlinks followed, devices refused).
    max_bytes:
        Size cap of the file as stored.
    allow_code_checkpoints:
        Accept ``torch.export`` programs (``.pt2``); loading one can run code.
    max_archive_bytes, max_compression_ratio:
        A zip archive (``torch.save``, ``.pt2``) is checked from its directory
        before any member is read: what its members declare unpacked in total,
        and how many times a member of 1 MiB or more inflates
        (``contract.archives.check_zip``).

    Returns
    -------
    A :class:`Checkpoint`; ``format`` is ``"safetensors"``, ``"state_dict"`` or
    ``"export"``.

    Raises
    ------
    UnsafeFileError
        Pickled objects or models, TorchScript, export programs when not allowed.
    FileTooLargeError
        Over ``max_bytes`` or ``max_archive_bytes``.
    InvalidInputError
        Not a regular file, an unknown format, a damaged or inconsistent file, a
        member that inflates more than ``max_compression_ratio`` times.
    """
    data = read_regular_file(path, max_bytes)
    digest, size = sha256(data).hexdigest(), len(data)
    suffix = Path(os.fspath(path)).suffix.lower()
    kind = file_format(
        data,
        "model",
        suffix=suffix,
        max_bytes=max_archive_bytes,
        max_ratio=max_compression_ratio,
    )
    if kind == "torchscript":
        raise UnsafeFileError(
            f"{path} is a TorchScript archive, which runs code when loaded and is "
            f"never accepted. {SAFE_ADVICE}"
        )
    if kind == "export":
        if not allow_code_checkpoints:
            raise UnsafeFileError(
                f"{path} is a torch.export program; loading one can run code "
                "(torch.export.load falls back to unpickling). Set "
                "allow_code_checkpoints=True only for files you trust. "
                f"{SAFE_ADVICE}"
            )
        module = _load_export(data)
        return Checkpoint(
            "export", None, module, digest, size, count_nonfinite(module.state_dict())
        )
    if kind == "safetensors":
        tensors, meta = load_safetensors(data)
        fmt = "safetensors"
    else:
        tensors, meta = _torch_load(data)
        fmt = "state_dict"
    return Checkpoint(fmt, tensors, None, digest, size, count_nonfinite(tensors), meta)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


def load_weights_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``tensors`` into ``model`` strictly, parameters and buffers.

    Every problem is collected first (missing keys, unexpected keys, shapes and
    dtypes, each compared exactly: ``load_state_dict`` would silently cast float64
    into float32) and reported in one ``CheckpointMismatchError``, at most 20 per
    kind with a count of the rest. Nothing is loaded when anything is wrong.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes, dtypes = [], []
    for k, want in expected.items():
        got = tensors.get(k)
        if got is None:
            continue
        if got.shape != want.shape:
            shapes.append(f"{k}: expected {tuple(want.shape)}, got {tuple(got.shape)}")
        if got.dtype != want.dtype:
            dtypes.append(f"{k}: expected {want.dtype}, got {got.dtype}")
    problems = [
        f"{what} ({len(items)}): {_listing(items)}"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", shapes),
            ("wrong dtypes", dtypes),
        )
        if items
    ]
    if problems:
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = " The keys start with 'module.' (DataParallel): strip that prefix."
        elif dtypes:
            hint = " Convert the weights (e.g. model.float()) before saving."
        raise CheckpointMismatchError(
            f"the weights do not fit the architecture: {'; '.join(problems)}.{hint}"
        )
    model.load_state_dict(tensors, strict=True)


def load_model(
    architecture: str | None,
    config: dict[str, Any] | None,
    weights: str | os.PathLike[str],
    *,
    allow_code_checkpoints: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
) -> tuple[nn.Module, Checkpoint]:
    """Build ``architecture`` with ``config`` and load ``weights`` into it strictly.

    For a ``torch.export`` program (only with ``allow_code_checkpoints=True``)
    the program carries its own architecture: ``architecture`` and ``config`` are
    ignored (pass ``None``) and the unflattened program is returned. Otherwise
    ``architecture`` is required and built before the file is read, so a bad name
    or config fails fast.

    Returns
    -------
    ``(model, checkpoint)`` with the model in eval mode.

    Example
    -------
    >>> model, ckpt = load_model("mlp", {"widths": [64, 8, 64]}, "mlp.safetensors")
    """
    from analysis.architectures import build_model

    model = build_model(architecture, config) if architecture is not None else None
    ckpt = read_checkpoint(
        weights,
        max_bytes=max_bytes,
        allow_code_checkpoints=allow_code_checkpoints,
        max_archive_bytes=max_archive_bytes,
        max_compression_ratio=max_compression_ratio,
    )
    if ckpt.module is not None:
        return ckpt.module.eval(), ckpt
    if model is None:
        raise InvalidInputError(
            f"{weights} holds only weights ({ckpt.format}): name the architecture"
        )
    assert ckpt.tensors is not None
    load_weights_into(model, ckpt.tensors)
    return model.eval(), ckpt
