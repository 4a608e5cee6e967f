"""Zip archives and ``.npy`` headers checked before anything is unpacked.

An ``.npz`` dataset or a ``torch.save`` checkpoint is a zip archive; the sizes its
central directory declares say how much memory unpacking it will take. A 583 KB
``.npz`` of deflated zeros declares 600 MB; ``numpy.load`` reads a whole member, so
the directory is checked here first, by the API when the upload arrives and by the
library when it loads the file:

- the end record and the central directory are walked with ``struct`` before
  ``zipfile`` builds one object per entry, so a directory of millions of entries
  costs nothing;
- members are stored or deflated (``bzip2`` and ``lzma`` members are refused:
  ``zipfile`` inflates them without an output bound), their names are relative and
  free of ``..``, their declared sizes add up to at most ``max_bytes`` and each
  inflates at most ``max_ratio`` times (members under ``RATIO_FLOOR`` bytes are not
  held to the ratio: they cannot cost memory);
- an ``.npy`` member's header is parsed from at most ``NPY_HEADER_MAX`` bytes and
  its declared element count is checked against the cap before numpy allocates.

``zipfile`` stops inflating a member at its declared size (and then fails on the
CRC), so the declared sizes bound what unpacking can cost.

The defaults below are stated once: the service's settings and the library's
keyword arguments import them.
"""

from __future__ import annotations

import ast
import math
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import IO

from contract.errors import ContractError

__all__ = [
    "DEFAULT_MAX_ARCHIVE_BYTES",
    "DEFAULT_MAX_ARCHIVE_MEMBERS",
    "DEFAULT_MAX_COMPRESSION_RATIO",
    "DEFAULT_MAX_CSV_COLUMNS",
    "DEFAULT_MAX_CSV_ROWS",
    "ArchiveError",
    "ArchiveTooLarge",
    "ArchiveUnsafe",
    "NpyHeader",
    "check_zip",
    "read_npy_header",
]

DEFAULT_MAX_ARCHIVE_BYTES = 2 * 1024**3  # what the members unpack to, in total
DEFAULT_MAX_COMPRESSION_RATIO = 200  # deflate reaches ~1030 on zeros
DEFAULT_MAX_ARCHIVE_MEMBERS = 65_536
DEFAULT_MAX_CSV_COLUMNS = 100_000
DEFAULT_MAX_CSV_ROWS = 1_000_000
RATIO_FLOOR = 1024**2  # smaller members are not held to the ratio
NPY_HEADER_MAX = 10_000  # numpy's own default max_header_size

_ACCEPTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # a central directory entry, 46 bytes
_MAX_COMMENT = 65_535
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_DIMS = 64  # numpy's own limit: the product stays printable
_DESCR = re.compile(r"[<>|=]?([biufcO])(\d{0,2})")


class ArchiveError(ContractError):
    """An archive or array header that cannot be used as it is."""

    default_code = "invalid_input"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=self.default_code)


class ArchiveTooLarge(ArchiveError):
    """The archive or an array in it declares more than the caps allow."""

    default_code = "too_large"


class ArchiveUnsafe(ArchiveError):
    """An array of Python objects: loading it would unpickle."""

    default_code = "unsafe_file"


def check_zip(
    fp: IO[bytes],
    *,
    max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    max_members: int = DEFAULT_MAX_ARCHIVE_MEMBERS,
) -> list[zipfile.ZipInfo]:
    """Check a zip archive from its central directory; no member is read.

    ``fp`` is a seekable binary file (an open file, ``io.BytesIO``). Reads the end
    record and at most ``max_members`` directory entries, then lets ``zipfile``
    parse the directory. Returns the entries' ``ZipInfo`` in directory order.

    Raises ``ArchiveTooLarge`` (code ``too_large``) when the members declare more
    than ``max_bytes`` unpacked in total or there are more than ``max_members``;
    ``ArchiveError`` (``invalid_input``) for a damaged archive, an unsafe or repeated
    name, a compression method other than stored or deflate, or a member of at least
    ``RATIO_FLOOR`` bytes that inflates more than ``max_ratio`` times.
    """
    _count_entries(fp, max_members)
    try:
        fp.seek(0)
        with zipfile.ZipFile(fp) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise ArchiveError(f"a damaged zip archive: {e}") from e
    if len(infos) > max_members:  # entries the end record did not admit to
        raise _too_many(len(infos), max_members)
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_name(info.filename, seen)
        if info.compress_type not in _ACCEPTED_METHODS:
            raise ArchiveError(
                f"member {info.filename!r} is compressed with method "
                f"{info.compress_type}; only stored and deflated members are "
                "accepted (numpy.savez, numpy.savez_compressed, torch.save)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR and ratio > max_ratio:
            raise ArchiveError(
                f"member {info.filename!r} inflates {ratio:.0f} times "
                f"({info.compress_size} -> {info.file_size} bytes), over the cap of "
                f"{max_ratio:g}; an archive like this is a zip bomb or mostly "
                "zeros: save the arrays uncompressed (numpy.savez, not "
                "savez_compressed) or drop the constant parts"
            )
        total += info.file_size
    if total > max_bytes:
        raise ArchiveTooLarge(
            f"the archive unpacks to {total} bytes, over the cap of {max_bytes}; "
            "send fewer samples or a smaller sample shape, or split the data"
        )
    return infos


def _too_many(n: int, max_members: int) -> ArchiveTooLarge:
    return ArchiveTooLarge(
        f"the archive has {n} members, over the cap of {max_members}; "
        "a dataset .npz holds x and y, a state dict one member per tensor"
    )


def _check_name(name: str, seen: set[str]) -> None:
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or re.match(r"[A-Za-z]:", name)
        or ".." in parts
        or "\x00" in name
    ):
        raise ArchiveError(f"member name {name[:200]!r} is absolute or climbs out")
    if name in seen:
        raise ArchiveError(f"member name {name[:200]!r} appears twice")
    seen.add(name)


def _count_entries(fp: IO[bytes], max_members: int) -> None:
    """Walk the central directory's fixed-size headers, counting the entries."""
    fp.seek(0, 2)
    size = fp.tell()
    tail_len = min(size, _EOCD.size + _MAX_COMMENT)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        raise ArchiveError("a damaged zip archive: no end of central directory")
    eocd_pos = size - tail_len + at
    _, _, _, _, n, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    cd_end = eocd_pos
    if eocd_pos >= _EOCD64_LOCATOR.size:
        fp.seek(eocd_pos - _EOCD64_LOCATOR.size)
        sig, *_ = _EOCD64_LOCATOR.unpack(fp.read(_EOCD64_LOCATOR.size))
        if sig == b"PK\x06\x07":
            cd_end = eocd_pos - _EOCD64_LOCATOR.size - _EOCD64.size
            fp.seek(max(cd_end, 0))
            record = fp.read(_EOCD64.size)
            if cd_end < 0 or len(record) < _EOCD64.size:
                raise ArchiveError("a damaged zip archive: bad zip64 end record")
            fields = _EOCD64.unpack(record)
            if fields[0] != b"PK\x06\x06":
                raise ArchiveError("a damaged zip archive: bad zip64 end record")
            n, cd_size = fields[7], fields[8]
    if n > max_members:
        raise _too_many(n, max_members)
    pos = cd_end - cd_size
    if pos < 0:
        raise ArchiveError("a damaged zip archive: directory outside the file")
    count = 0
    while pos < cd_end:
        fp.seek(pos)
        head = fp.read(_CENTRAL.size)
        if len(head) < _CENTRAL.size or head[:4] != b"PK\x01\x02":
            raise ArchiveError("a damaged zip archive: bad central directory entry")
        count += 1
        if count > max_members:
            raise _too_many(count, max_members)
        fields = _CENTRAL.unpack(head)
        pos += _CENTRAL.size + fields[10] + fields[11] + fields[12]


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` header declares; ``nbytes`` is ``elements * itemsize``."""

    descr: str
    shape: tuple[int, ...]
    fortran_order: bool
    elements: int
    itemsize: int
    nbytes: int
    header_size: int  # bytes before the data: magic, version, length, dict


def read_npy_header(
    stream: IO[bytes],
    *,
    name: str,
    max_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    data_size: int | None = None,
) -> NpyHeader:
    """Parse the header of the ``.npy`` array ``name`` from ``stream``.

    Reads at most ``12 + NPY_HEADER_MAX`` bytes (magic, version, length, the header
    dict parsed with ``ast.literal_eval``), so nothing of the size the header
    declares is allocated. With ``data_size`` (the member's size from the zip
    directory) the declared bytes must fit in it.

    Raises ``ArchiveTooLarge`` when ``elements * itemsize`` is over ``max_bytes``;
    ``ArchiveUnsafe`` for an object dtype (``|O``, loading it unpickles);
    ``ArchiveError`` for a damaged header, a dtype that is not boolean, integer,
    floating or complex, or a size that the member does not hold.
    """
    where = f"the array {name!r}"
    prefix = stream.read(len(_NPY_MAGIC) + 2)
    if len(prefix) < 8 or prefix[:6] != _NPY_MAGIC:
        raise ArchiveError(f"{where} is not an .npy array (no NUMPY magic)")
    major = prefix[6]
    if major not in (1, 2, 3):
        raise ArchiveError(f"{where}: unknown .npy format version {major}")
    width = 2 if major == 1 else 4
    raw_len = stream.read(width)
    if len(raw_len) < width:
        raise ArchiveError(f"{where}: the .npy header is cut short")
    header_len = int.from_bytes(raw_len, "little")
    if header_len > NPY_HEADER_MAX:
        raise ArchiveError(
            f"{where}: the .npy header is {header_len} bytes, over {NPY_HEADER_MAX}"
        )
    raw = stream.read(header_len)
    if len(raw) < header_len:
        raise ArchiveError(f"{where}: the .npy header is cut short")
    descr, shape, fortran = _header_dict(raw, major, where)
    found = _DESCR.fullmatch(descr)
    if found and found[1] == "O":
        raise ArchiveUnsafe(
            f"{where} holds Python objects (pickled), which are never loaded; "
            "save numeric arrays: np.savez(path, x=x.astype(np.float32), y=y)"
        )
    if not found or not found[2] or int(found[2]) not in (1, 2, 4, 8, 16):
        raise ArchiveError(
            f"{where} has dtype {descr!r}; save numbers (bool, int, float)"
        )
    itemsize = int(found[2])
    elements = math.prod(shape)
    nbytes = elements * itemsize
    if nbytes > max_bytes:
        raise ArchiveTooLarge(
            f"{where} declares {elements} elements of shape {shape} ({nbytes} "
            f"bytes), over the cap of {max_bytes} bytes; send fewer samples or a "
            "smaller sample shape (resize the images, select the features), or "
            "split the data"
        )
    header_size = len(prefix) + width + header_len
    if data_size is not None and header_size + nbytes != data_size:
        raise ArchiveError(
            f"{where} declares {nbytes} bytes of data of shape {shape}, but the "
            f"member holds {data_size - header_size}; the file is damaged or "
            "not fully written"
        )
    return NpyHeader(descr, shape, fortran, elements, itemsize, nbytes, header_size)


def _header_dict(
    raw: bytes, major: int, where: str
) -> tuple[str, tuple[int, ...], bool]:
    try:
        text = raw.decode("utf-8" if major >= 3 else "latin-1")
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ArchiveError(f"{where}: the .npy header is not a dict: {e}") from None
    if not isinstance(d, dict) or set(d) != {"descr", "shape", "fortran_order"}:
        raise ArchiveError(
            f"{where}: the .npy header must hold descr, shape and fortran_order"
        )
    descr, shape, fortran = d["descr"], d["shape"], d["fortran_order"]
    if not isinstance(descr, str):
        raise ArchiveError(
            f"{where} has a structured dtype; save one numeric array per name"
        )
    if (
        not isinstance(shape, tuple)
        or len(shape) > _NPY_MAX_DIMS
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63
            for s in shape
        )
    ):
        raise ArchiveError(f"{where}: bad shape {shape!r} in the .npy header")
    if not isinstance(fortran, bool):
        raise ArchiveError(f"{where}: fortran_order must be True or False")
    return descr, shape, fortran
