"""Where the command line writes: checked before any work, never lost at the end.

An analysis can take minutes; a typo in ``--out`` must not cost them. Every output
path is checked first (its folder exists, a file can be created there, the path is
not a folder), and a result whose file cannot be written at the end anyway goes to a
fallback file whose path is printed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Protocol


class OutputPathError(ValueError):
    """An output path cannot be written; the message names the option and why."""


class Savable(Protocol):
    def save(self, path: str | Path) -> None: ...


def _probe(folder: Path, option: str, path: Path) -> None:
    """Create and remove a file in ``folder``: the one test of writability that
    also holds for root and for read-only file systems."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".bottlelens-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(
            f"{option} {path}: cannot write in {folder} ({reason}); choose a folder "
            "you can write to"
        ) from exc
    os.close(fd)
    os.unlink(probe)


def check_file(path: Path, option: str) -> None:
    """``path`` can be written as a file: its folder exists and takes a new file,
    and the path itself is not a folder."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputPathError(
            f"{option} {path}: the folder {folder} {what}; create it first or "
            "choose another path"
        )
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name")
    _probe(folder, option, path)


def check_folder(path: Path, option: str) -> None:
    """``path`` is a folder that exists and takes new files, or one that can be made
    inside an existing folder that does."""
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{option} {path} is a file, not a folder")
        _probe(path, option, path)
        return
    check_file(path, option)


def check_tree(path: Path, option: str) -> None:
    """``path`` is a folder that exists, or can be made with its missing parents
    (``mkdir -p``): the nearest existing ancestor is a folder that takes files."""
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{option} {path}: {ancestor} is a file, not a folder")
    _probe(ancestor, option, path)


def save_or_fallback(result: Savable, path: Path) -> tuple[Path, OSError | None]:
    """Save ``result`` at ``path``; when that fails, in a fallback file (the current
    folder, else the temporary one). Returns where it went and the first error."""
    try:
        result.save(path)
        return path, None
    except OSError as exc:
        error = exc
    name = f"bottlelens-result-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            result.save(folder / name)
            return folder / name, error
        except OSError:
            continue
    raise error
