"""Dataset files read with bounded memory: ``.npz``, ``.safetensors``, ``.csv``.

What a file declares is checked before anything of that size is allocated:

- ``.npz``: the zip directory (``contract.archives.check_zip``: declared unpacked
  total, compression ratio, member count, names), then each member's ``.npy``
  header (declared elements and dtype), then ``numpy.load``;
- ``.safetensors``: the header's shapes and dtypes (``analysis.safefiles``);
- ``.csv``: read line by line; a line with more cells than ``max_columns`` is
  refused before the csv module splits it, rows and values are counted as they
  come.

The cap ``max_bytes`` bounds what the arrays take once loaded: the stored bytes of
every array, and ``x`` as float32 (uint8 images grow 4 times). So the memory of
loading a dataset is at most about the file plus 1.5 times ``max_bytes`` (an array
stored narrower than float32 and its float32 copy); the finiteness check runs in
blocks. ``bench/bench_intake.py`` measures it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np

from analysis.errors import FileTooLargeError, InvalidInputError
from analysis.safefiles import (
    ST_DTYPES,
    check_safetensors_header,
    from_archive_error,
    load_safetensors,
)
from contract.archives import ArchiveError, check_zip, read_npy_header

_QUOTED = re.compile(rb'"[^"]*"')
_X_ITEMSIZE = 4  # x becomes float32


def _only_xy(names: list[str], what: str) -> None:
    extra = sorted(set(names) - {"x", "y"})
    if "x" not in names or extra:
        raise InvalidInputError(
            f"{what} must hold an array 'x' and optionally 'y'; found "
            f"{', '.join(map(repr, sorted(names))) or 'nothing'}"
        )


def _declared_x(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> None:
    """``x`` as float32 must fit the cap too (it is copied when stored narrower)."""
    elements = math.prod(shape)
    loaded = elements * max(itemsize, _X_ITEMSIZE)
    if loaded > max_bytes:
        raise FileTooLargeError(
            f"the array 'x' declares {elements} elements of shape {shape} ({loaded} "
            f"bytes as float32), over the cap of {max_bytes} bytes; send fewer "
            "samples or a smaller sample shape (resize the images, select the "
            "features), or split the data"
        )


def read_npz(
    data: bytes, *, max_bytes: int, max_ratio: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and ``y`` of an ``.npz``, its directory and headers checked first."""
    try:
        infos = check_zip(io.BytesIO(data), max_bytes=max_bytes, max_ratio=max_ratio)
        names = [i.filename.removesuffix(".npy") for i in infos]
        _only_xy(names, ".npz")
        if not all(i.filename.endswith(".npy") for i in infos):
            raise InvalidInputError(".npz members must be .npy arrays")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name, info in zip(names, infos, strict=True):
                with zf.open(info) as member:
                    head = read_npy_header(
                        member, name=name, max_bytes=max_bytes, data_size=info.file_size
                    )
                if name == "x":
                    _declared_x(head.shape, head.itemsize, max_bytes)
    except ArchiveError as e:
        raise from_archive_error(e) from e
    except zipfile.BadZipFile as e:
        raise InvalidInputError(f"not an .npz archive: {e}") from e
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return npz["x"], npz["y"] if "y" in npz.files else None
    except (ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidInputError(f"cannot read the .npz: {e}") from e


def read_safetensors(data: bytes, *, max_bytes: int) -> tuple[Any, Any]:
    """``x`` and ``y`` of a ``.safetensors`` file, declared sizes checked first."""
    specs, _ = check_safetensors_header(data)
    _only_xy(list(specs), "a .safetensors dataset")
    dtype, shape, _, _ = specs["x"]
    _declared_x(shape, ST_DTYPES[dtype][1], max_bytes)
    declared = sum(end - begin for _, _, begin, end in specs.values())
    if declared > max_bytes:
        raise FileTooLargeError(
            f"the tensors declare {declared} bytes, over the cap of {max_bytes}; "
            "send fewer samples or a smaller sample shape, or split the data"
        )
    tensors, _ = load_safetensors(data)
    return tensors["x"], tensors.get("y")


def _lines(data: bytes, max_columns: int) -> Iterator[str]:
    """The file's lines, each refused before decoding when it has too many cells."""
    for n, raw in enumerate(io.BytesIO(data), start=1):
        # The comma count bounds the cells; quoted commas are removed only when
        # the bound is over the cap.
        if raw.count(b",") >= max_columns and (
            _QUOTED.sub(b"", raw).count(b",") >= max_columns
        ):
            raise FileTooLargeError(
                f"CSV line {n} has more than {max_columns} cells, over the column "
                "cap; select the features, or save the data as .npz "
                "(numpy.savez(path, x=x, y=y))"
            )
        try:
            yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"cannot read the CSV: line {n}: {e}") from e


def _number(cell: str, row: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise InvalidInputError(
            f"CSV row {row}, column {column!r}: {cell!r} is not a number"
        ) from None


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _header(
    reader: Iterator[list[str]], label_column: str | None
) -> tuple[list[str], int | None]:
    first = next((row for row in reader if row), None)  # skips blank lines
    if first is None:
        raise InvalidInputError("the CSV is empty")
    header = [h.strip() for h in first]
    if all(_is_float(h) for h in header):
        raise InvalidInputError("the CSV needs a header row naming the columns")
    if len(set(header)) != len(header):
        raise InvalidInputError(f"the CSV header repeats a column name: {header}")
    label = None
    if label_column is not None:
        if label_column not in header:
            raise InvalidInputError(
                f"the CSV has no label column {label_column!r}; columns: "
                f"{', '.join(header)} (pass label_column=None for unlabelled data)"
            )
        label = header.index(label_column)
    if len(header) - (label is not None) == 0:
        raise InvalidInputError("the CSV has a label column but no feature columns")
    return header, label


def read_csv(
    data: bytes,
    label_column: str | None,
    *,
    max_columns: int,
    max_rows: int,
    max_bytes: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (N, F) float64 and ``y`` of a CSV, streamed row by row into flat
    buffers; refused at the first line or row over a cap."""
    reader = csv.reader(_lines(data, max_columns))
    try:
        header, label = _header(reader, label_column)
        n_features = len(header) - (label is not None)
        xs, ys = array("d"), array("d")
        integral, n_rows = True, 0
        for row in reader:
            if not row:
                continue  # blank lines
            r = reader.line_num  # row numbers as a spreadsheet shows them
            n_rows += 1
            if n_rows > max_rows:
                raise FileTooLargeError(
                    f"the CSV has more than {max_rows} rows, over the row cap; "
                    "sample the rows, or save the data as .npz"
                )
            if n_rows * n_features * 8 > max_bytes:
                raise FileTooLargeError(
                    f"the CSV holds more than {max_bytes} bytes of values as "
                    f"float64 at row {r}, over the cap; sample the rows or select "
                    "the features"
                )
            if len(row) != len(header):
                raise InvalidInputError(
                    f"CSV row {r} has {len(row)} cells, the header has {len(header)}"
                )
            if label is not None:
                cell = row.pop(label)
                ys.append(_number(cell, r, header[label]))
                integral = integral and _is_int(cell.strip())
            try:
                xs.extend(map(float, row))
            except ValueError:
                names = [h for i, h in enumerate(header) if i != label]
                for cell, name in zip(row, names, strict=True):
                    _number(cell, r, name)
                raise
    except csv.Error as e:
        raise InvalidInputError(f"cannot read the CSV: {e}") from e
    x = np.frombuffer(xs, dtype=np.float64).reshape(n_rows, n_features)  # (N, F)
    if label is None:
        return x, None
    y = np.frombuffer(ys, dtype=np.float64)  # (N,)
    return x, y.astype(np.int64) if integral else y
