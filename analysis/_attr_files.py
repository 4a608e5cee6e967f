"""Attribution maps on disk: ``.npy`` arrays and a PNG grid, inside ``out_dir`` only.

Private to :mod:`analysis.attribution`. File names are built from a layer name
sanitised by :func:`safe_name`; every file is written to a temporary name in
``out_dir`` and renamed onto its final name, so an existing symlink there is
replaced, never followed.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from matplotlib.figure import Figure

from analysis.errors import InvalidInputError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(layer: str) -> str:
    """``layer`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``.

    Refuses names that contain ``..`` or are empty or start with ``.``, so the
    result is one plain file-name component.
    """
    name = _UNSAFE.sub("_", layer)
    if not name or ".." in name or name.startswith("."):
        raise InvalidInputError(
            f"layer name {layer!r} cannot become a file name (empty, '..' or a "
            "leading '.'); rename the module"
        )
    return name


def inside(out_dir: Path, filename: str) -> Path:
    path = out_dir / filename  # the last component is replaced, never resolved
    if Path(filename).name != filename or path.parent.resolve() != out_dir.resolve():
        raise InvalidInputError(f"{filename!r} would be written outside {out_dir}")
    return path


def save_npy(out_dir: Path, filename: str, array: torch.Tensor) -> str:
    """Save ``array`` as a plain (non-object) ``.npy``; return its name in out_dir."""
    data = np.ascontiguousarray(array.detach().cpu().numpy())
    _atomic_write(out_dir, filename, lambda f: np.save(f, data, allow_pickle=False))
    return filename


def save_grid(
    out_dir: Path,
    filename: str,
    columns: Sequence[tuple[str, torch.Tensor]],
    title: str,
    row_labels: Sequence[str] | None = None,
) -> str:
    """One row per sample, one column per (title, maps (n, ...)) pair; a PNG."""
    n = len(columns[0][1])
    # constrained layout keeps the title above the first row; the HTML report
    # draws these maps with colour bars and the true labels
    fig = Figure(
        figsize=(2.0 * len(columns), 2.0 * n + 0.6), dpi=120, layout="constrained"
    )
    fig.suptitle(title, fontsize=10)
    for row in range(n):
        for col, (name, maps) in enumerate(columns):
            ax = fig.add_subplot(n, len(columns), row * len(columns) + col + 1)
            image = to_image(maps[row], rgb=col == 0)
            if col == 0:
                ax.imshow(image, cmap="gray", interpolation="nearest")
            else:
                limit = float(np.abs(image).max()) or 1.0
                signed = bool((image < 0).any())
                ax.imshow(
                    image,
                    cmap="RdBu_r" if signed else "inferno",
                    vmin=-limit if signed else 0.0,
                    vmax=limit,
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[row], fontsize=8)
    _atomic_write(out_dir, filename, lambda f: fig.savefig(f, format="png"))
    return filename


def to_image(sample: torch.Tensor, *, rgb: bool = False) -> np.ndarray:
    """A 2-d (or H x W x 3) array to show one sample or map.

    (C, H, W): RGB when ``rgb`` and C == 3 (min-max scaled), else the channel sum;
    (H, W) as is; (D,): a square when D is one, else a 1 x D strip; more spatial
    dimensions: the sum over the leading ones.
    """
    t = sample.detach().float().cpu()
    if t.ndim == 3 and rgb and t.shape[0] == 3:
        t = t.permute(1, 2, 0)  # (H, W, 3)
        span = (t.max() - t.min()).clamp_min(1e-12)
        return ((t - t.min()) / span).numpy()
    while t.ndim > 2:
        t = t.sum(0)
    if t.ndim == 1:
        side = math.isqrt(len(t))
        t = t.reshape(side, side) if side * side == len(t) else t.reshape(1, -1)
    return t.numpy()


def _atomic_write(
    out_dir: Path, filename: str, write: Callable[[BinaryIO], object]
) -> None:
    path = inside(out_dir, filename)
    tmp = out_dir / f".tmp-{secrets.token_hex(8)}{path.suffix}"
    # O_EXCL: never through an existing name; 0o666 & ~umask like a plain open()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
