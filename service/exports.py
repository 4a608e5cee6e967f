"""Encoders of the reporting export: CSV, JSON and Parquet, batch by batch.

Each takes the batches of ``store.export_rows`` and yields bytes as it goes, so an
export of any size holds one batch in memory. Parquet needs ``pyarrow`` (the
``parquet`` extra); without it the request is refused before anything streams.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from service.errors import InvalidInput
from service.schemas_series import EXPORT_COLUMNS

Batches = Iterable[list[tuple[Any, ...]]]

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    value = _cell(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def encode_csv(batches: Batches) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue().encode()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_cell(v) for v in row] for row in batch)
        yield buffer.getvalue().encode()


def encode_json(batches: Batches, next_cursor: str) -> Iterator[bytes]:
    """``{"next_cursor": ..., "data": [{column: value}, ...]}``."""
    yield f'{{"next_cursor": {json.dumps(next_cursor)}, "data": ['.encode()
    first = True
    for batch in batches:
        parts = []
        for row in batch:
            record = dict(zip(EXPORT_COLUMNS, map(_cell, row), strict=True))
            parts.append(("" if first else ",") + json.dumps(record, allow_nan=False))
            first = False
        yield "".join(parts).encode()
    yield b"]}"


def require_parquet() -> Any:
    """The pyarrow module, or a 422 that says how to get Parquet."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise InvalidInput(
            "format=parquet needs pyarrow on the server, which is not installed: "
            "install the parquet extra (pip install 'bottlelens[parquet]'), or ask "
            "for format=csv or format=json",
            code="parquet_unavailable",
        ) from exc
    return pyarrow


def _parquet_schema(pa: Any) -> Any:
    text, integer, real = pa.string(), pa.int64(), pa.float64()
    types = {
        "step": integer,
        "finished_at": pa.timestamp("us", tz="UTC"),
        "index": integer,
        "width": integer,
        "is_bottleneck": pa.bool_(),
        "value": real,
        "ci_low": real,
        "ci_high": real,
        "n_samples": integer,
        "schema_version": integer,
    }
    return pa.schema([(name, types.get(name, text)) for name in EXPORT_COLUMNS])


class _Chunks(io.RawIOBase):
    """A write-only file whose written bytes are taken out between row groups."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def encode_parquet(batches: Batches) -> Iterator[bytes]:
    """One row group per batch; the footer comes last."""
    pa = require_parquet()
    import pyarrow.parquet as pq

    schema = _parquet_schema(pa)
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in batches:
            columns = list(zip(*batch, strict=True)) if batch else []
            if not columns:
                continue
            arrays = [
                pa.array([_cell_value(v) for v in col], type=field.type)
                for col, field in zip(columns, schema, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            yield sink.take()
    yield sink.take()


def _cell_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
