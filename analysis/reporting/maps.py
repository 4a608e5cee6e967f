"""Attribution maps in the report: read from the analysis's artifacts folder (the
``.npy`` files the result names), one row per sample, one colour bar per column,
the true label beside the target, misclassified samples marked."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analysis.reporting.figures import NECK_COLOUR, new_figure

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_ROWS = 16


def artifact(folder: Path | None, name: str) -> Path | None:
    """``folder/name`` when ``name`` is one plain file name that exists there.

    The names come from a result document, which may come from anywhere: a name
    with a separator, ``..`` or a leading dot is ignored, never joined."""
    if folder is None or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        return None
    path = folder / name
    return path if path.is_file() and not path.is_symlink() else None


def _load(folder: Path | None, name: str) -> np.ndarray | None:
    path = artifact(folder, name)
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def _image(sample: np.ndarray, shape: list[int] | None, *, rgb: bool) -> np.ndarray:
    """A 2-d (or H x W x 3) picture of one sample or map."""
    t = np.asarray(sample, dtype=np.float64)
    if t.ndim == 1 and shape and math.prod(shape) == t.size:
        t = t.reshape(shape)  # (C, H, W) from the dataset's image_shape
    if t.ndim == 3 and rgb and t.shape[0] == 3:
        t = np.moveaxis(t, 0, -1)  # (H, W, 3)
        span = max(float(t.max() - t.min()), 1e-12)
        return (t - t.min()) / span
    while t.ndim > 2:
        t = t.sum(0)
    if t.ndim == 1:
        side = math.isqrt(t.size)
        t = t.reshape(side, side) if side * side == t.size else t.reshape(1, -1)
    return t


def map_columns(
    entry: dict[str, Any], folder: Path | None
) -> list[tuple[str, np.ndarray]]:
    """(title, maps (n, ...)) for the input and each input-space map on disk."""
    names = list((entry.get("files") or {}).get("npy") or [])
    columns: list[tuple[str, np.ndarray]] = []
    inputs = _load(folder, "inputs.npy") if "inputs.npy" in names else None
    if inputs is None:
        return []
    columns.append(("input", inputs))
    for name in names:
        if name.endswith(".gradcam.npy"):
            maps = _load(folder, name)
            if maps is not None and len(maps) == len(inputs):
                columns.append(("GradCAM", maps))
    if "input_ig.npy" in names:
        maps = _load(folder, "input_ig.npy")
        if maps is not None and len(maps) == len(inputs):
            columns.append(("Integrated Gradients (input)", maps))
    return columns if len(columns) > 1 else []


def row_label(entry: dict[str, Any], row: int) -> tuple[str, bool]:
    """``("label 3 · predicted 5", True)``: the text and whether it is a miss."""
    labels = entry.get("labels")
    predicted = entry.get("predicted")
    parts = []
    if labels is not None:
        parts.append(f"label {labels[row]}")
    if predicted is not None:
        parts.append(f"predicted {predicted[row]}")
    miss = (
        labels is not None and predicted is not None and labels[row] != predicted[row]
    )
    samples = entry.get("samples") or []
    head = f"#{samples[row]}" if row < len(samples) else f"row {row}"
    return " ".join([head, *parts]) + ("  ✗ misclassified" if miss else ""), miss


def attribution_figure(
    entry: dict[str, Any],
    columns: list[tuple[str, np.ndarray]],
    image_shape: list[int] | None,
) -> Figure:
    """The grid: a shared colour scale per column (symmetric when signed), its
    colour bar under the column; a red frame and label on misclassified rows."""
    n = min(MAX_ROWS, len(columns[0][1]))
    fig = new_figure(2.1 * len(columns) + 1.4, 1.35 * n + 1.2)
    grid = fig.add_gridspec(n + 1, len(columns), height_ratios=[1.0] * n + [0.12])
    for col, (title, maps) in enumerate(columns):
        images = [_image(maps[r], image_shape, rgb=col == 0) for r in range(n)]
        if col == 0:
            style: dict[str, Any] = {"cmap": "gray"}
            label = "input value (min to max)"
        else:
            limit = max(float(np.abs(im).max()) for im in images) or 1.0
            signed = any(bool((im < 0).any()) for im in images)
            style = {
                "cmap": "RdBu_r" if signed else "inferno",
                "vmin": -limit if signed else 0.0,
                "vmax": limit,
            }
            label = "attribution (output units per input unit x input)"
        shown = None
        for r in range(n):
            ax = fig.add_subplot(grid[r, col])
            shown = ax.imshow(images[r], interpolation="nearest", **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                text, miss = row_label(entry, r)
                ax.set_ylabel(
                    text.replace(" ", "\n", 1),
                    fontsize=6.5,
                    rotation=0,
                    ha="right",
                    va="center",
                    color=NECK_COLOUR if miss else "0.1",
                )
                if miss:
                    for spine in ax.spines.values():
                        spine.set_edgecolor(NECK_COLOUR)
                        spine.set_linewidth(2.5)
        assert shown is not None  # n >= 1
        cax = fig.add_subplot(grid[n, col])
        bar = fig.colorbar(shown, cax=cax, orientation="horizontal")
        bar.set_label(label, fontsize=6)
        bar.ax.tick_params(labelsize=6)
    return fig
