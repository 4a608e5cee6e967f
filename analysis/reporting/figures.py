"""The report's pictures, drawn with matplotlib's object API (no pyplot state, so a
worker thread may draw) and embedded in the page: inline SVG where the data is
small, a base64 PNG where it is large. Every axis names its quantity and unit.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from contract.result import FLAGS

# An inline SVG stays readable and small up to about this many drawn points or cells;
# beyond it a PNG is smaller and faster for the browser.
SVG_MAX_ITEMS = 2500
RASTER_DPI = 150
NECK_COLOUR = "#d62728"
GREY = "#9a9a9a"
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: system fonts, nothing fetched
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
}
_NO_METADATA = {"Date": None, "Creator": None, "Type": None, "Format": None}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def embed(fig: Figure, key: str, *, raster: bool = False, alt: str = "") -> str:
    """The figure as an HTML fragment: ``<svg>`` inline, or ``<img>`` with a PNG
    data URI; ``key`` names it (``data-figure``) and salts the SVG's ids, so two
    figures on one page never share an id."""
    import matplotlib

    buf = io.BytesIO()
    rc: Any = {**_RC, "svg.hashsalt": key}
    with matplotlib.rc_context(rc):
        if raster:
            fig.savefig(buf, format="png", dpi=RASTER_DPI)
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            width = round(fig.get_figwidth() * 96)  # CSS pixels: the size drawn
            return (
                f'<img class="figure" data-figure="{key}" alt="{_attr(alt)}" '
                f'width="{width}" '
                f'src="data:image/png;base64,{data}">'
            )
        # no metadata block: no creator address, no date (same bytes each run)
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
    return svg.replace(
        "<svg ",
        f'<svg class="figure" data-figure="{key}" role="img" '
        f'aria-label="{_attr(alt)}" ',
        1,
    )


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def rows(layer: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    return {m["estimator"]: m for m in layer["metrics"] if m["metric"] == metric}


def flagged(m: dict[str, Any] | None, flag: str) -> bool:
    return m is not None and flag in (m.get("flags") or [])


def _value(m: dict[str, Any] | None, key: str = "value") -> float:
    if m is None or m.get(key) is None:
        return math.nan
    return float(m[key])


def _mark_necks(ax: Any, layers: Sequence[dict[str, Any]]) -> None:
    for i, layer in enumerate(layers):
        if layer["is_bottleneck"]:
            ax.axvspan(i - 0.4, i + 0.4, color=NECK_COLOUR, alpha=0.12, lw=0)


def _layer_axis(ax: Any, layers: Sequence[dict[str, Any]]) -> None:
    xs = list(range(len(layers)))
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [layer["name"] for layer in layers], rotation=60, ha="right", fontsize=7
    )
    ax.set_xlabel("layer (input to output)")
    ax.set_xlim(-0.6, len(layers) - 0.4)


def width_profile(layers: Sequence[dict[str, Any]]) -> Figure:
    """Width per layer (log scale), the projected width where one was used,
    bottlenecks shaded and marked."""
    fig = new_figure(max(6.5, 0.3 * len(layers) + 2.5), 3.0)
    ax = fig.add_subplot()
    xs = list(range(len(layers)))
    ax.plot(xs, [layer["width"] for layer in layers], "o-", color="0.3", ms=4)
    proj = [(i, layer["projected_to"]) for i, layer in enumerate(layers)]
    proj = [(i, p) for i, p in proj if p]
    if proj:
        ax.plot(*zip(*proj, strict=True), "s", color="tab:blue", ms=4, label="analysed")
    necks = [
        (i, layer["width"]) for i, layer in enumerate(layers) if layer["is_bottleneck"]
    ]
    if necks:
        ax.plot(
            *zip(*necks, strict=True), "v", color=NECK_COLOUR, ms=9, label="bottleneck"
        )
        ax.legend(fontsize=7, loc="best")
    _mark_necks(ax, layers)
    ax.set_yscale("log")
    ax.set_ylabel("width (units, log scale)")
    _layer_axis(ax, layers)
    return fig


def id_profile(layers: Sequence[dict[str, Any]], estimators: Sequence[str]) -> Figure:
    """Intrinsic dimension per layer: a line per estimator with its interval as a
    band; hollow rings on values flagged ``low_samples``."""
    fig = new_figure(max(6.5, 0.3 * len(layers) + 2.5), 3.6)
    ax = fig.add_subplot()
    xs = list(range(len(layers)))
    for est in estimators:
        ms = [rows(layer, "intrinsic_dimension").get(est) for layer in layers]
        vals = [_value(m) for m in ms]
        (line,) = ax.plot(xs, vals, "o-", label=est, ms=4)
        ax.fill_between(
            xs,
            [_value(m, "ci_low") for m in ms],
            [_value(m, "ci_high") for m in ms],
            color=line.get_color(),
            alpha=0.18,
            lw=0,
        )
        few = [i for i, m in enumerate(ms) if flagged(m, "low_samples")]
        if few:
            ax.scatter(
                few,
                [vals[i] for i in few],
                s=80,
                facecolors="none",
                edgecolors=line.get_color(),
                label=f"{est}: low_samples",
            )
    _mark_necks(ax, layers)
    ax.set_yscale("log")
    ax.set_ylabel("intrinsic dimension (dimensions, log scale)")
    ax.legend(fontsize=7, ncols=2, loc="best")
    _layer_axis(ax, layers)
    return fig


def saturation(layers: Sequence[dict[str, Any]], est: str) -> str | None:
    """Why an estimator's plane says little (most I(X;T) values at the ceiling),
    or None."""
    ms = [rows(layer, "mi_input").get(est) for layer in layers]
    ms = [m for m in ms if m is not None and m.get("value") is not None]
    at_ceiling = sum(flagged(m, "near_ceiling") for m in ms)
    if ms and at_ceiling * 2 >= len(ms):
        return (
            f"saturated: {at_ceiling} of {len(ms)} layers {FLAGS['near_ceiling']}; "
            "positions say little"
        )
    return None


def information_plane(
    layers: Sequence[dict[str, Any]], methods: Sequence[str]
) -> Figure:
    """I(X;T) against I(T;Y), a panel per estimator, with both intervals as error
    bars; points numbered by layer index (the tables name them), bottlenecks
    ringed red, ``low_samples`` hollow, ``near_ceiling`` as triangles; a
    saturated estimator's panel is grey and says why."""
    import matplotlib as mpl

    cols = min(3, len(methods))
    n_rows = math.ceil(len(methods) / cols)
    fig = new_figure(3.6 * cols + 0.6, 3.4 * n_rows)
    cmap = mpl.colormaps["viridis"]
    for k, est in enumerate(methods):
        ax = fig.add_subplot(n_rows, cols, k + 1)
        why = saturation(layers, est)
        at: dict[tuple[float, float], list[Any]] = {}
        for i, layer in enumerate(layers):
            mx = rows(layer, "mi_input").get(est)
            my = rows(layer, "mi_output").get(est)
            x, y = _value(mx), _value(my)
            if math.isnan(x) or math.isnan(y):
                continue
            colour = GREY if why else cmap(i / max(1, len(layers) - 1))
            xerr = _err(mx, x)
            yerr = _err(my, y)
            ax.errorbar(
                x,
                y,
                xerr=xerr,
                yerr=yerr,
                fmt="none",
                ecolor=colour,
                lw=0.8,
                capsize=2,
                zorder=2,
            )
            hollow = flagged(mx, "low_samples") or flagged(my, "low_samples")
            ceiling = flagged(mx, "near_ceiling") or flagged(my, "near_ceiling")
            ax.scatter(
                x,
                y,
                marker="^" if ceiling else "o",
                s=40,
                zorder=3,
                color="none" if hollow else colour,
                edgecolors=NECK_COLOUR if layer["is_bottleneck"] else colour,
                linewidths=1.6,
            )
            key = (float(f"{x:.3g}"), float(f"{y:.3g}"))  # same to 3 digits
            at.setdefault(key, [x, y, []])[2].append(layer["index"])
        for k, (x, y, indices) in enumerate(at.values()):
            # points that coincide share one label: "0-4, 7"
            ax.annotate(
                _runs(indices),
                (x, y),
                fontsize=6,
                xytext=(4, 2 + 5 * (k % 3)),
                textcoords="offset points",
                color="0.25",
            )
        ax.set_title(
            est if not why else f"{est} (saturated)", color="0.5" if why else "0"
        )
        if why:
            ax.set_facecolor("#f2f2f2")
            ax.text(
                0.02,
                0.02,
                _wrap(why, 46),
                transform=ax.transAxes,
                fontsize=6.5,
                color="0.35",
                va="bottom",
            )
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel("I(X;T) (nats)")
        ax.set_ylabel("I(T;Y) (nats)")
    return fig


def _runs(indices: list[int]) -> str:
    """``[0, 1, 2, 4]`` as ``"0-2, 4"``."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _err(m: dict[str, Any] | None, v: float) -> list[list[float]] | None:
    lo, hi = _value(m, "ci_low"), _value(m, "ci_high")
    if math.isnan(lo) or math.isnan(hi):
        return None
    return [[max(0.0, v - lo)], [max(0.0, hi - v)]]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def probe_accuracy(layers: Sequence[dict[str, Any]], classes: int | None) -> Figure:
    """Cross-validated probe accuracy per layer with its interval; chance level
    as a dashed line when the number of classes is known."""
    fig = new_figure(max(6.5, 0.3 * len(layers) + 2.5), 3.0)
    ax = fig.add_subplot()
    xs = list(range(len(layers)))
    ms = [rows(layer, "probe_accuracy").get("logistic_regression") for layer in layers]
    vals = [_value(m) for m in ms]
    lows = [v - _value(m, "ci_low") for v, m in zip(vals, ms, strict=True)]
    highs = [_value(m, "ci_high") - v for v, m in zip(vals, ms, strict=True)]
    yerr = [
        [0.0 if math.isnan(e) else max(0.0, e) for e in side] for side in (lows, highs)
    ]
    ax.errorbar(xs, vals, yerr=yerr, fmt="o-", color="tab:green", ms=4, capsize=2)
    few = [i for i, m in enumerate(ms) if flagged(m, "low_samples")]
    if few:
        ax.scatter(
            few, [vals[i] for i in few], s=80, facecolors="none", edgecolors="tab:green"
        )
    if classes:
        ax.axhline(1.0 / classes, ls="--", color="0.5", lw=0.8, label="chance")
        ax.legend(fontsize=7, loc="lower right")
    _mark_necks(ax, layers)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("probe accuracy (fraction correct)")
    _layer_axis(ax, layers)
    return fig


def cka_heatmap(
    names: Sequence[str], matrix: Sequence[Sequence[float | None]]
) -> Figure:
    """Linear CKA between every pair of layers, with its colour bar (0 to 1)."""
    import numpy as np

    n = len(names)
    data = np.array(
        [[math.nan if v is None else float(v) for v in row] for row in matrix]
    )  # (L, L)
    side = min(9.0, max(4.0, 0.28 * n + 2.0))
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="magma", interpolation="nearest")
    ticks = list(range(n)) if n <= 40 else list(range(0, n, max(1, n // 20)))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=70, ha="right", fontsize=6)
    ax.set_yticklabels([names[i] for i in ticks], fontsize=6)
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("linear CKA (0 to 1)")
    return fig
