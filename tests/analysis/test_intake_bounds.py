"""Hostile or broken files are refused from what they declare, before unpacking."""

from __future__ import annotations

import csv
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from analysis.checkpoints import read_checkpoint
from analysis.datasets import load_dataset
from analysis.errors import FileTooLargeError, InvalidInputError, UnsafeFileError
from analysis.labels import check_labels
from contract.archives import (
    RATIO_FLOOR,
    ArchiveError,
    ArchiveTooLarge,
    ArchiveUnsafe,
    check_zip,
    read_npy_header,
)

MB = 1024**2


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header as numpy writes it (padded to 64 bytes)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    body = (text + " " * pad + "\n").encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def deflated_zeros_npz(path: Path, n_floats: int) -> None:
    """An ``.npz`` whose ``x`` is ``n_floats`` float32 zeros, deflated in 1 MiB
    steps so that building it never holds the array."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        f.write(npy_header("<f4", (n_floats // 16, 16)))
        left, chunk = 4 * n_floats, bytes(MB)
        while left > 0:
            f.write(chunk[: min(left, MB)])
            left -= MB


def forbid_member_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test when any zip member is opened from now on."""

    def refuse(*args, **kwargs):
        raise AssertionError("a zip member was read")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


# --- the zip directory ------------------------------------------------------


def test_zip_bomb_refused_from_the_directory(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    deflated_zeros_npz(path, 16 * MB)  # 64 MiB of zeros in about 65 KB
    assert path.stat().st_size < 100_000
    forbid_member_reads(monkeypatch)
    with pytest.raises(InvalidInputError, match=r"inflates \d+ times") as err:
        load_dataset(str(path))
    assert "savez" in str(err.value)  # says what to change
    with path.open("rb") as fp, pytest.raises(ArchiveTooLarge, match="unpacks to"):
        check_zip(fp, max_bytes=10 * MB, max_ratio=10**6)
    with pytest.raises(FileTooLargeError, match="unpacks to"):
        load_dataset(str(path), max_archive_bytes=10 * MB, max_compression_ratio=1e6)


def test_ratio_cap_and_its_floor():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("small", bytes(RATIO_FLOOR - 1))  # ~1000x but small: passes
        zf.writestr("big", bytes(2 * RATIO_FLOOR))
    with pytest.raises(ArchiveError, match="'big' inflates") as err:
        check_zip(buf, max_ratio=200)
    assert err.value.code == "invalid_input"
    assert len(check_zip(buf, max_ratio=2000)) == 2


def test_member_count_names_and_methods():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(20):
            zf.writestr(f"m{i}", b"")
    with pytest.raises(ArchiveTooLarge, match="20 members, over the cap of 10"):
        check_zip(buf, max_members=10)
    lying = bytearray(buf.getvalue())  # the end record claims 1 entry
    at = lying.rfind(b"PK\x05\x06")
    lying[at + 8 : at + 12] = struct.pack("<HH", 1, 1)
    with pytest.raises(ArchiveTooLarge, match="11 members, over the cap of 10"):
        check_zip(io.BytesIO(bytes(lying)), max_members=10)
    for name in ("../evil", "/etc/passwd", "a/../../b", "C:/x"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(zipfile.ZipInfo(name), b"x")
        with pytest.raises(ArchiveError, match="absolute or climbs out"):
            check_zip(buf)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("x.npy", b"x" * 100)
    with pytest.raises(ArchiveError, match="only stored and deflated"):
        check_zip(buf)
    with pytest.raises(ArchiveError, match="damaged"):
        check_zip(io.BytesIO(b"PK\x03\x04 not really a zip"))


def test_numpy_and_torch_archives_pass():
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((10, 3), np.float32), y=np.arange(10))
    assert [i.filename for i in check_zip(buf)] == ["x.npy", "y.npy"]
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    assert any(i.filename.endswith("data.pkl") for i in check_zip(buf))


def test_checkpoint_zip_bomb_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("m/data/0", bytes(8 * MB))
    forbid_member_reads(monkeypatch)
    with pytest.raises(InvalidInputError, match="inflates"):
        read_checkpoint(path)


# --- .npy headers -----------------------------------------------------------


def _npz_with_header(path: Path, descr: str, shape: tuple[int, ...]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy_header(descr, shape) + bytes(64))


def test_declared_10_12_elements_refused_as_too_large(tmp_path):
    path = tmp_path / "huge.npz"
    _npz_with_header(path, "<f4", (10**6, 10**6))
    with pytest.raises(FileTooLargeError) as err:
        load_dataset(str(path))
    message = str(err.value)
    assert "declares 1000000000000 elements" in message
    assert "fewer samples" in message and "lower samples" not in message


def test_npy_header_checks():
    def header(descr, shape, data=b""):
        return io.BytesIO(npy_header(descr, shape) + data)

    h = read_npy_header(header("<f4", (3, 2)), name="x")
    assert (h.elements, h.itemsize, h.nbytes, h.header_size) == (6, 4, 24, 128)
    with pytest.raises(ArchiveUnsafe, match="pickled"):
        read_npy_header(header("|O", (3,)), name="x")
    with pytest.raises(ArchiveError, match="dtype '<U5'"):
        read_npy_header(header("<U5", (3,)), name="x")
    with pytest.raises(ArchiveError, match="member holds 8"):
        read_npy_header(header("<f4", (3,)), name="x", data_size=128 + 8)
    with pytest.raises(ArchiveTooLarge, match="over the cap of 100 bytes"):
        read_npy_header(header("<f8", (20,)), name="x", max_bytes=100)
    with pytest.raises(ArchiveError, match="NUMPY magic"):
        read_npy_header(io.BytesIO(b"not an array"), name="x")
    with pytest.raises(ArchiveError, match="bad shape"):
        read_npy_header(header("<f4", (-1,)), name="x")


def test_narrow_x_counts_as_float32(tmp_path):
    path = tmp_path / "u8.npz"
    np.savez(path, x=np.zeros((100, 10), np.uint8))  # 1000 bytes, 4000 as float32
    assert load_dataset(str(path), max_archive_bytes=4000).x.dtype == torch.float32
    with pytest.raises(FileTooLargeError, match="4000 bytes as float32"):
        load_dataset(str(path), max_archive_bytes=3999)


# --- safetensors and CSV ----------------------------------------------------


def test_safetensors_declared_size(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"x": torch.zeros(50, 4, dtype=torch.uint8)}, str(path))
    with pytest.raises(FileTooLargeError, match=r"declares 200 elements .*800 bytes"):
        load_dataset(str(path), max_archive_bytes=799)
    assert load_dataset(str(path), max_archive_bytes=800).x.shape == (50, 4)


def _csv(tmp_path: Path, text: str) -> str:
    path = tmp_path / "d.csv"
    path.write_text(text)
    return str(path)


def test_csv_column_cap_refuses_before_splitting(tmp_path, monkeypatch):
    wide = ",".join(f"c{i}" for i in range(10**6)) + "\n"
    path = _csv(tmp_path, wide + wide)

    real_reader = csv.reader

    def guarded(lines):
        def short(lines):
            for line in lines:
                assert len(line) < 1000, "the wide line reached the csv module"
                yield line

        return real_reader(short(lines))

    monkeypatch.setattr("analysis.datafiles.csv.reader", guarded)
    with pytest.raises(FileTooLargeError, match="CSV line 1 has more than 100000"):
        load_dataset(path, label_column=None)


def test_csv_caps(tmp_path):
    path = _csv(tmp_path, '"a,b",c,label\n1,2,0\n3,4,1\n5,6,1\n')
    ds = load_dataset(path, max_csv_columns=3)  # a quoted comma is no column
    assert ds.x.shape == (3, 2)
    with pytest.raises(FileTooLargeError, match="line 1 has more than 2 cells"):
        load_dataset(path, max_csv_columns=2)
    with pytest.raises(FileTooLargeError, match="more than 2 rows"):
        load_dataset(path, max_csv_rows=2)
    with pytest.raises(FileTooLargeError, match="more than 40 bytes of values"):
        load_dataset(path, max_archive_bytes=40)


# --- labels -----------------------------------------------------------------


def test_check_labels():
    check_labels(torch.tensor([0, 1, 2]), n_outputs=3)
    check_labels(None, n_outputs=3)
    check_labels(torch.tensor([0.5, 7.0]), n_outputs=1)  # regression targets
    with pytest.raises(InvalidInputError, match=r"0\.\.2 .* 3 \(2 samples\)"):
        check_labels(torch.tensor([0, 3, 3, 1]), n_outputs=3)
    with pytest.raises(InvalidInputError, match=r"-1 \(1 samples\)"):
        check_labels(torch.tensor([-1, 0]), n_outputs=3)
    with pytest.raises(InvalidInputError, match="and 5 more values"):
        check_labels(torch.arange(20), n_outputs=5)


def test_unsafe_npz_stays_unsafe(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_dataset(str(path))
