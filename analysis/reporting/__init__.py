"""Reports a person reads: one self-contained HTML file per analysis.

``render_html(result, artifacts_dir)`` returns the page; ``write_html`` saves it.
The page makes no network request (pictures inline, no script, no font fetched)
and prints as it shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analysis.reporting.document import render_html
from contract.result import REPORT_FILE

__all__ = [
    "REPORT_FILE",
    "render_audit_html",
    "render_html",
    "render_series_html",
    "write_html",
]


def write_html(
    result: dict[str, Any], path: str | Path, artifacts_dir: str | Path | None = None
) -> Path:
    """Write :func:`render_html` to ``path`` (through a temporary file, so a reader
    never sees half a page); returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(result, artifacts_dir), encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_audit_html(audit: dict[str, Any]) -> str:
    """The report of an audit run (its document as the service returns it).

    Not drawn yet: audit runs have no stable document to read from."""
    raise NotImplementedError("the audit-run report comes with the audit document")


def render_series_html(series: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The report of a series: its document and the result of each analysis in it.

    Not drawn yet: series have no stable document to read from."""
    raise NotImplementedError("the series report comes with the series document")
