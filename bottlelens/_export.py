"""A page of the reporting export, streamed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

import httpx

from bottlelens._http import CHUNK
from service.schemas_series import ExportFormat


class Export:
    """One page of the reporting export, streamed.

    Iterating gives the rows as dicts keyed by the documented columns: from
    ``csv`` every cell as text (an empty cell as ``None``), read line by line in
    constant memory; from ``json`` typed values (the page is parsed whole).
    ``save(out)`` copies the bytes as sent, for any format (``parquet`` too).
    Leaving ``with`` or reading to the end closes the response.
    """

    def __init__(self, response: httpx.Response, format: ExportFormat) -> None:
        self._response, self.format = response, format
        self.next_cursor: str = response.headers.get("X-Next-Cursor", "")

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            if self.format == "csv":
                for row in csv.DictReader(_lines(self._response.iter_text())):
                    yield {k: (v if v != "" else None) for k, v in row.items()}
            elif self.format == "json":
                rows: list[dict[str, Any]] = json.loads(self._response.read())["data"]
                yield from rows
            else:
                raise ValueError(f"{self.format} has no rows to iterate; use save()")
        finally:
            self.close()

    def save(self, out: IO[bytes]) -> int:
        """Write the page's bytes, as sent, into ``out``; their count."""
        size = 0
        try:
            for chunk in self._response.iter_bytes(CHUNK):
                out.write(chunk)
                size += len(chunk)
        finally:
            self.close()
        return size


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    """Lines with their ends (the csv module joins a quoted cell's line breaks)."""
    rest = ""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split("\n")
        for line in lines:
            yield line + "\n"
    if rest:
        yield rest
