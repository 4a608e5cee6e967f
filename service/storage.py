"""Uploads: streamed to a temporary file with a running sha256 and a size cap, then
renamed atomically to a path derived from the hash alone.

The client's filename is kept only as a display name; it never enters a path. The
cap is enforced while the body streams in, so an oversized upload is refused with 413
before the rest of it is read, and its temporary file is removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from contract.archives import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_COMPRESSION_RATIO,
    ArchiveError,
    ArchiveTooLarge,
    ArchiveUnsafe,
    check_zip,
    read_npy_header,
)
from contract.errors import ContractError
from contract.formats import HEAD_BYTES, Kind, detect_format, is_zip, refusal
from service.errors import InvalidInput, ServiceError, TooLarge, UnsafeUpload

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEAD = HEAD_BYTES
_FIELD_MAX = 1024 * 1024
_FORM_OVERHEAD = 64 * 1024


def object_path(storage_dir: Path | str, sha256: str) -> Path:
    """``storage_dir/objects/<sha256[:2]>/<sha256>``: the hash is the only input."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return Path(storage_dir).resolve() / "objects" / sha256[:2] / sha256


_ANALYSIS_ID = re.compile(r"[0-9a-f]{32}")
# Names the attribution writer produces: sanitised layer names plus a suffix.
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


def artifacts_dir(storage_dir: Path | str, analysis_id: str) -> Path:
    """``storage_dir/artifacts/<analysis id>``: where a worker writes the maps of one
    analysis (attribution ``.npy`` and ``.png``); the id is the only input."""
    if not _ANALYSIS_ID.fullmatch(analysis_id):
        raise ValueError(f"not an analysis id: {analysis_id!r}")
    return Path(storage_dir).resolve() / "artifacts" / analysis_id


def artifact_file(storage_dir: Path | str, analysis_id: str, name: str) -> Path | None:
    """The regular file ``name`` among an analysis's artifacts, or None.

    ``name`` must look like a file the worker writes (no separators, no ``..``);
    a link or anything that resolves outside the analysis's directory is None.
    """
    if not _ARTIFACT_NAME.fullmatch(name) or ".." in name:
        return None
    folder = artifacts_dir(storage_dir, analysis_id)
    path = folder / name
    if path.is_symlink() or not path.is_file() or path.resolve().parent != folder:
        return None
    return path


def display_name(raw: str | None) -> str | None:
    """The last path component of a client filename, for display only."""
    if not raw:
        return None
    name = PurePosixPath(raw.replace("\\", "/")).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:255]
    return None if name in ("", ".", "..") else name


@dataclass
class Upload:
    """A received form: the file (if any) in a temporary file, and the text fields."""

    fields: dict[str, str] = field(default_factory=dict)
    tmp: Path | None = None
    filename: str | None = None
    sha256: str = ""
    size: int = 0
    head: bytes = b""
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO


class Storage:
    def __init__(
        self,
        root: Path | str,
        *,
        max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
        max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    ) -> None:
        self.root = Path(root).resolve()
        self.max_archive_bytes = max_archive_bytes
        self.max_compression_ratio = max_compression_ratio

    def path(self, sha256: str) -> Path:
        return object_path(self.root, sha256)

    @asynccontextmanager
    async def receive(
        self, request: Request, *, max_bytes: int, fields: tuple[str, ...]
    ) -> AsyncIterator[Upload]:
        """Parse a multipart (or, without a file, urlencoded) form as it streams in.

        The temporary file is removed when the block exits unless ``keep`` moved it.
        """
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes + _FORM_OVERHEAD:
            raise _too_large(max_bytes)
        upload = Upload(
            max_archive_bytes=self.max_archive_bytes,
            max_compression_ratio=self.max_compression_ratio,
        )
        try:
            ctype, options = parse_options_header(request.headers.get("content-type"))
            if ctype == b"multipart/form-data" and options.get(b"boundary"):
                await self._multipart(
                    request, options[b"boundary"], upload, max_bytes, fields
                )
            elif ctype == b"application/x-www-form-urlencoded":
                await self._urlencoded(request, upload, fields)
            else:
                raise InvalidInput("send the form as multipart/form-data")
            yield upload
        finally:
            if upload.tmp is not None:
                upload.tmp.unlink(missing_ok=True)

    def keep(self, upload: Upload) -> Path:
        """Move the received file to its content-addressed path (atomic rename)."""
        assert upload.tmp is not None
        final = self.path(upload.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.tmp, final)  # same content if it was there already
        upload.tmp = None
        return final

    def remove(self, sha256: str) -> None:
        with suppress(FileNotFoundError):
            self.path(sha256).unlink()

    async def _urlencoded(
        self, request: Request, upload: Upload, fields: tuple[str, ...]
    ) -> None:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _FIELD_MAX:
                raise TooLarge(f"the form is larger than {_FIELD_MAX} bytes")
        for name, value in parse_qsl(body.decode("utf-8", "replace")):
            _add_field(upload, fields, name, value)

    async def _multipart(
        self,
        request: Request,
        boundary: bytes,
        upload: Upload,
        max_bytes: int,
        fields: tuple[str, ...],
    ) -> None:
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        parts = _Parts(upload, fields, max_bytes, tmpdir)
        parser = MultipartParser(boundary, parts.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidInput(f"a malformed multipart form: {exc}") from exc
        finally:
            parts.close()
        if parts.open_part:
            raise InvalidInput("the multipart form ends in the middle of a part")


class _Parts:
    """python-multipart callbacks: headers, then data into a field or the file."""

    def __init__(
        self, upload: Upload, fields: tuple[str, ...], max_bytes: int, tmpdir: Path
    ) -> None:
        self.upload, self.fields, self.max_bytes, self.tmpdir = (
            upload,
            fields,
            max_bytes,
            tmpdir,
        )
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.buffer = bytearray()
        self.file: IO[bytes] | None = None
        self.hasher = hashlib.sha256()
        self.open_part = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value_data,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.data,
            "on_part_end": self.end,
        }

    def begin(self) -> None:
        self.headers, self.buffer, self.open_part = {}, bytearray(), True

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition", b"").decode("latin-1")
        _, options = parse_options_header(disposition)
        self.name = options.get(b"name", b"").decode("latin-1")
        if self.name != "file":
            if self.name not in self.fields:
                raise InvalidInput(_unknown_field(self.name, self.fields))
            return
        if self.upload.tmp is not None:
            raise InvalidInput("send one file per request")
        raw = options.get(b"filename", b"").decode("latin-1")
        self.upload.filename = display_name(
            raw.encode("latin-1").decode("utf-8", "replace")
        )
        fd, tmp = tempfile.mkstemp(dir=self.tmpdir, prefix="upload-")
        self.upload.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")

    def data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.file is None:
            self.buffer += chunk
            if len(self.buffer) > _FIELD_MAX:
                raise TooLarge(f"form field {self.name!r} is over {_FIELD_MAX} bytes")
            return
        self.upload.size += len(chunk)
        if self.upload.size > self.max_bytes:
            raise _too_large(self.max_bytes)
        if len(self.upload.head) < _HEAD:
            self.upload.head += chunk[: _HEAD - len(self.upload.head)]
        self.hasher.update(chunk)
        self.file.write(chunk)

    def end(self) -> None:
        self.open_part = False
        if self.file is not None:
            self.close()
            self.upload.sha256 = self.hasher.hexdigest()
            return
        _add_field(
            self.upload, self.fields, self.name, self.buffer.decode("utf-8", "replace")
        )

    def close(self) -> None:
        if self.file is not None:
            self.file.flush()
            # On disk before the rename: the hash path is trusted from then on.
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None


def _add_field(upload: Upload, fields: tuple[str, ...], name: str, value: str) -> None:
    if name not in fields:
        raise InvalidInput(_unknown_field(name, fields))
    if name in upload.fields:
        raise InvalidInput(f"form field {name!r} given twice")
    upload.fields[name] = value


def _unknown_field(name: str, fields: tuple[str, ...]) -> str:
    return f"unknown form field {name[:100]!r}; expected: file, {', '.join(fields)}"


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"the upload is larger than this team's limit of {max_bytes} bytes")


def weights_format(upload: Upload) -> str:
    """``safetensors`` or ``state_dict`` (a torch.save zip), told from the bytes by
    ``contract.formats.detect_format`` (as the worker and the CLI tell it); formats
    that run code when loaded are refused here. The worker reads the file for real.
    """
    fmt = _detect(upload, "model")
    why = refusal(fmt)
    if why is not None:
        raise UnsafeUpload(why)
    return fmt


def dataset_format(upload: Upload) -> str:
    """``npz``, ``safetensors`` or ``csv``, told from the bytes (a pickle is
    refused); an ``.npz``'s members are checked from their headers."""
    fmt = _detect(upload, "dataset")
    if fmt == "pickle":
        raise UnsafeUpload(
            "a pickle stream can run code when loaded and is refused; save the "
            "arrays with numpy.savez(path, x=x, y=y)"
        )
    if fmt == "npz":
        _npz_headers(upload)
    return fmt


def _detect(upload: Upload, kind: Kind) -> str:
    head = _file_head(upload)
    names = _zip_names(upload) if is_zip(head) else None
    try:
        return detect_format(head, upload.size, kind=kind, zip_names=names)
    except ContractError as exc:
        raise InvalidInput(str(exc), code=exc.code) from exc


def _file_head(upload: Upload) -> bytes:
    if upload.tmp is None:
        raise InvalidInput("the form has no field named file; attach the file there")
    if upload.size == 0:
        raise InvalidInput("the file is empty")
    return upload.head


def _zip_names(upload: Upload) -> list[str]:
    """The members' names, once the zip directory passed ``check_zip``: a zip bomb
    is refused here, before anything is stored or enqueued."""
    assert upload.tmp is not None
    try:
        with upload.tmp.open("rb") as fp:  # reads the directory, runs nothing
            infos = check_zip(
                fp,
                max_bytes=upload.max_archive_bytes,
                max_ratio=upload.max_compression_ratio,
            )
    except ArchiveError as exc:
        raise _refusal(exc) from exc
    return [i.filename for i in infos]


def _npz_headers(upload: Upload) -> None:
    """An ``.npz`` holds ``x.npy`` and optionally ``y.npy`` whose headers declare
    numeric arrays within the cap; only the headers are read."""
    names = _zip_names(upload)
    if "x.npy" not in names or not set(names) <= {"x.npy", "y.npy"}:
        raise InvalidInput("a zip archive that is not an .npz of arrays x and y")
    assert upload.tmp is not None
    try:
        with zipfile.ZipFile(upload.tmp) as zf:
            for info in zf.infolist():
                with zf.open(info) as member:
                    read_npy_header(
                        member,
                        name=info.filename.removesuffix(".npy"),
                        max_bytes=upload.max_archive_bytes,
                        data_size=info.file_size,
                    )
    except ArchiveError as exc:
        raise _refusal(exc) from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidInput(f"a damaged zip archive: {exc}") from exc


def _refusal(exc: ArchiveError) -> ServiceError:
    """Over a size cap is 413; an absurd compression ratio, a bad name or a
    damaged archive is 422 (sending it uncompressed or repaired fixes it)."""
    if isinstance(exc, ArchiveTooLarge):
        return TooLarge(str(exc))
    if isinstance(exc, ArchiveUnsafe):
        return UnsafeUpload(str(exc))
    return InvalidInput(str(exc))
