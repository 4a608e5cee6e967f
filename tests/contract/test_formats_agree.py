"""REST, worker and CLI tell a file's format the same way.

Property: for every safetensors header length from 0 to 4096 bytes (so every low
byte of the 8-byte length, 0x80 included: lengths 128, 384, 640, ...), the API's
upload check and the loader the worker and the CLI share give the same verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.checkpoints import read_checkpoint
from analysis.datasets import load_dataset
from analysis.errors import InvalidInputError
from contract.formats import HEAD_BYTES
from service.errors import ServiceError
from service.storage import Upload, dataset_format, weights_format


def _safetensors(header_len: int, name: str) -> bytes | None:
    """A valid file whose JSON header is exactly ``header_len`` bytes (padded with
    spaces, as the format allows), or None when no header that short exists."""
    header = json.dumps(
        {name: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
        separators=(",", ":"),
    ).encode()
    if header_len < len(header):
        return None
    header += b" " * (header_len - len(header))
    return header_len.to_bytes(8, "little") + header + b"\x00" * 16


def _upload(path: Path, data: bytes) -> Upload:
    path.write_bytes(data)
    return Upload(tmp=path, size=len(data), head=data[:HEAD_BYTES])


def _verdict(call) -> str:
    try:
        return call()
    except (ServiceError, InvalidInputError) as exc:
        return f"refused: {type(exc).__name__}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["model", "dataset"])
def test_rest_worker_and_cli_agree_on_every_header_length(
    tmp_path: Path, kind: str
) -> None:
    disagree = []
    for header_len in range(4097):
        data = _safetensors(header_len, "w" if kind == "model" else "x")
        if data is None:
            continue
        path = tmp_path / "f.safetensors"
        upload = _upload(tmp_path / "upload", data)
        path.write_bytes(data)
        if kind == "model":
            rest = _verdict(lambda: weights_format(upload))
            lib = _verdict(lambda: read_checkpoint(path).format)
        else:
            rest = _verdict(lambda: dataset_format(upload))
            lib = _verdict(lambda: load_dataset(str(path)).meta["format"])
        if not (rest == lib == "safetensors"):
            disagree.append((header_len, rest, lib))
    assert disagree == []


def test_a_pickle_is_refused_by_both(tmp_path: Path) -> None:
    import pickle

    data = pickle.dumps({"w": [1.0]}, protocol=4)
    upload = _upload(tmp_path / "upload", data)
    path = tmp_path / "m.bin"
    path.write_bytes(data)
    assert _verdict(lambda: weights_format(upload)).startswith("refused")
    assert _verdict(lambda: read_checkpoint(path).format).startswith("refused")
