"""Reports a person reads: one self-contained HTML file per analysis, per audit
run and per series.

``render_html(result, artifacts_dir)``, ``render_audit_html(audit, run, result,
baseline)`` and ``render_series_html(series, checkpoints, trajectories)`` return
the page (the last two from the API's answers as plain dicts); ``write_html`` and
``write_page`` save one.
The page makes no network request (pictures inline, no script, no font fetched)
and prints as it shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analysis.reporting.audit import render_audit_html
from analysis.reporting.document import render_html
from analysis.reporting.series import render_series_html, series_trajectories
from contract.result import REPORT_FILE

__all__ = [
    "REPORT_FILE",
    "render_audit_html",
    "render_html",
    "render_series_html",
    "series_trajectories",
    "write_html",
    "write_page",
]


def write_html(
    result: dict[str, Any], path: str | Path, artifacts_dir: str | Path | None = None
) -> Path:
    """Write :func:`render_html` to ``path`` (through a temporary file, so a reader
    never sees half a page); returns the path."""
    return write_page(render_html(result, artifacts_dir), path)


def write_page(html: str, path: str | Path) -> Path:
    """Write a rendered page to ``path`` through a temporary file (a reader never
    sees half a page); returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
