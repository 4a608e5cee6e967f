"""File formats, told from the bytes: one function for the API, the worker and the CLI.

:func:`detect_format` looks at the first ``HEAD_BYTES`` of a file, its size and, for a
zip archive, the names in its central directory (no member is read), and names the
format. It decides nothing about trust: the callers refuse what they must (the
service every format that can run code when loaded; the CLI the same, but for a
``torch.export`` program when the user allows it). A file name's suffix never
decides; the one exception is a legacy ``torch.save`` pickle, which has no magic.

Model formats: ``safetensors``; ``state_dict`` (a ``torch.save`` zip archive);
``pickle`` (a plain pickle stream: a pickled object or the legacy ``torch.save``
format); ``torchscript``; ``export`` (a ``torch.export`` program). Dataset formats:
``npz``, ``safetensors``, ``csv``, ``pickle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from contract.errors import ContractError

HEAD_BYTES = 4096
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Formats that run code when loaded: the service never accepts them.
CODE_FORMATS = ("pickle", "torchscript", "export")
MODEL_FORMATS = ("safetensors", "state_dict", *CODE_FORMATS)
DATASET_FORMATS = ("npz", "safetensors", "csv", "pickle")
SAFE_ADVICE = (
    "save a state dict instead: safetensors.torch.save_file(model.state_dict(), "
    "path) or torch.save(model.state_dict(), path)"
)
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

Kind = Literal["model", "dataset"]


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, then ``{``."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 2 <= header_len <= size - 8


def is_pickle(head: bytes) -> bool:
    """A pickle stream opens with PROTO (0x80) and a protocol number 2 to 5."""
    return len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5


def detect_format(
    head: bytes,
    size: int,
    *,
    kind: Kind,
    zip_names: Sequence[str] | None = None,
    suffix: str = "",
) -> str:
    """The format of a file from its first bytes (``HEAD_BYTES`` suffice).

    ``zip_names``: the archive's member names when ``head`` opens a zip archive
    (required then). ``suffix``: the file name's suffix, used only to read a file
    with no magic as a legacy ``torch.save`` pickle (``.pt``, ``.pth``...).

    Raises ``ContractError`` naming the accepted formats when none fits.
    """
    if size == 0:
        raise ContractError("the file is empty")
    # safetensors first: its 8-byte length may begin with 0x80 (lengths 128, 384...).
    if is_safetensors(head, size):
        return "safetensors"
    if is_zip(head):
        if zip_names is None:
            raise ValueError("zip_names are needed to tell what a zip archive holds")
        return _zip_format(zip_names, kind)
    if is_pickle(head):
        return "pickle"
    if head[8:9] == b"{":
        return "safetensors"  # with a broken length: its parser says what is wrong
    if kind == "model":
        if suffix.lower() in _PICKLE_SUFFIXES:
            return "pickle"
        raise ContractError(
            "unknown weight file format; accepted: safetensors, or a state dict saved "
            "with torch.save (.pt, .pth)"
        )
    if _is_text(head, at_end=size <= len(head)):
        return "csv"
    raise ContractError("unknown dataset format; accepted: .npz, .safetensors, .csv")


def _zip_format(names: Sequence[str], kind: Kind) -> str:
    if kind == "dataset":
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        raise ContractError("a zip archive that is not an .npz of arrays x and y")
    # Inside the archive's root folder, which is named after the saved file.
    parts = [n.split("/")[1:] for n in names]
    if any(p[-1:] == ["constants.pkl"] or "code" in p[:-1] for p in parts):
        return "torchscript"
    if any(p[-1:] == ["archive_format"] or "models" in p[:-1] for p in parts):
        return "export"
    if any(p[-1:] == ["data.pkl"] for p in parts):
        return "state_dict"
    raise ContractError(
        "a zip archive that is not a torch.save file; accepted: safetensors, or a "
        "state dict saved with torch.save (.pt, .pth)"
    )


def _is_text(head: bytes, *, at_end: bool) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # the head may end inside a character
        if at_end or exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and "\x00" not in text


def refusal(fmt: str) -> str | None:
    """Why the service refuses a model format (``None`` when it accepts it)."""
    return {
        "pickle": "a plain pickle stream (a pickled object, or torch.save with the "
        "legacy format) can run code when loaded and is refused; " + SAFE_ADVICE,
        "torchscript": "a TorchScript archive runs code when loaded and is never "
        "accepted; " + SAFE_ADVICE,
        "export": "a torch.export program (.pt2) can run code when loaded; the "
        "service does not accept it; " + SAFE_ADVICE,
    }.get(fmt)
