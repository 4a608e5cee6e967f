"""The report of a series: what it is, every layer's metric over its checkpoints
(one figure per metric and estimator, intervals as bands), each layer's path in
the information plane, the generalisation gap against the tag, and where each
checkpoint's analysis lives. Its inputs are the API's answers as plain dicts
(``GET /v1/series/{id}``, ``.../checkpoints``, ``.../trajectory``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from analysis.reporting import figures as fg
from analysis.reporting import tables as tb
from analysis.reporting.document import Section, config_text, dl, page
from contract.families import FAMILIES

ID_METRIC = FAMILIES["id"].metrics[0]
MI_INPUT, MI_OUTPUT = FAMILIES["mi"].metrics
GAP_METRIC = FAMILIES["capacity"].metrics[0]
# The config key that lists a family's estimators (its rows' ``estimator``).
_ESTIMATOR_KEYS = {"id": "methods", "mi": "methods", "capacity": "scores"}
_LABELS = {
    ID_METRIC: "intrinsic dimension (dimensions, log scale)",
    MI_INPUT: "I(X;T) (nats)",
    MI_OUTPUT: "I(T;Y) (nats)",
}
_GAP_LABELS = {
    "accuracy": "gap: train − held-out accuracy (fraction)",
    "loss": "gap: held-out − train loss (loss units)",
}
_MAX_LEGEND = 16


def series_trajectories(configs: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (metric, estimator) pairs a series report asks the trajectory route for,
    read from the complete configs of the checkpoints' analyses: every ID and MI
    estimator run, and the generalisation gap's scores."""
    pairs: dict[tuple[str, str], None] = {}
    for config in configs:
        for family, key in _ESTIMATOR_KEYS.items():
            if family not in (config.get("metrics") or []):
                continue
            for est in (config.get(family) or {}).get(key) or []:
                for metric in FAMILIES[family].metrics:
                    pairs[(metric, str(est))] = None
    return list(pairs)


def _x(point: dict[str, Any], order: str) -> float:
    if order == "tag" and point.get("tag") is not None:
        return float(point["tag"])
    return float(point["step"])


def _x_label(order: str) -> str:
    if order == "tag":
        return "tag (the checkpoint's ordering number, e.g. neck width)"
    return "training step (steps)"


def _colour(k: int, n: int) -> Any:
    import matplotlib as mpl

    return mpl.colormaps["viridis"](k / max(1, n - 1))


def _legend(ax: Any, n: int) -> None:
    if n <= _MAX_LEGEND and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def trajectory_figure(trajectory: dict[str, Any], y_label: str, log: bool) -> Any:
    """A line per layer over the checkpoints, its interval as a band; layers
    coloured input (dark) to output (yellow)."""
    order = trajectory["order"]
    layers = trajectory["layers"]
    fig = fg.new_figure(7.5, 3.4)
    ax = fig.add_subplot()
    for k, line in enumerate(layers):
        points = sorted(line["points"], key=lambda p: _x(p, order))
        xs = [_x(p, order) for p in points]
        colour = _colour(k, len(layers))
        ax.plot(
            xs,
            [fg._value(p) for p in points],
            "o-",
            ms=3,
            lw=1.2,
            color=colour,
            label=f"{line['index']} {line['layer']}",
        )
        ax.fill_between(
            xs,
            [fg._value(p, "ci_low") for p in points],
            [fg._value(p, "ci_high") for p in points],
            color=colour,
            alpha=0.15,
            lw=0,
        )
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(_x_label(order))
    ax.set_ylabel(y_label)
    _legend(ax, len(layers))
    return fig


def plane_figure(paths: Sequence[dict[str, Any]], estimators: Sequence[str]) -> Any:
    """I(X;T) against I(T;Y), a panel per MI estimator, each layer's path over the
    checkpoints (in the trajectory's order): a square at the first checkpoint, an
    arrow head at the last."""
    cols = min(3, len(estimators))
    n_rows = math.ceil(len(estimators) / cols)
    fig = fg.new_figure(3.6 * cols + 1.6, 3.4 * n_rows)
    for k, est in enumerate(estimators):
        ax = fig.add_subplot(n_rows, cols, k + 1)
        mine = [p for p in paths if p["estimator"] == est]
        for j, path in enumerate(mine):
            pts = [
                (fg._value(p, MI_INPUT), fg._value(p, MI_OUTPUT))
                for p in path["points"]
            ]
            pts = [(x, y) for x, y in pts if not (math.isnan(x) or math.isnan(y))]
            if not pts:
                continue
            colour = _colour(j, len(mine))
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "-", lw=1.0, color=colour, label=f"{path['index']}")
            ax.plot(xs[0], ys[0], "s", ms=4, color=colour)
            if len(pts) > 1:
                ax.annotate(
                    "",
                    xy=pts[-1],
                    xytext=pts[-2],
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.0},
                )
        ax.set_title(est)
        ax.set_xlabel("I(X;T) (nats)")
        ax.set_ylabel("I(T;Y) (nats)")
        if k == len(estimators) - 1:
            _legend(ax, len(mine))
    return fig


def gap_figure(trajectory: dict[str, Any]) -> Any:
    """The generalisation gap of each layer that reports one against the tag (the
    step when the series has none), with its interval as error bars; zero dashed."""
    order = trajectory["order"]
    fig = fg.new_figure(6.5, 3.0)
    ax = fig.add_subplot()
    for k, line in enumerate(trajectory["layers"]):
        points = sorted(line["points"], key=lambda p: _x(p, order))
        vals = [fg._value(p) for p in points]
        errs = [
            fg._err(p, v) or [[0.0], [0.0]] for p, v in zip(points, vals, strict=True)
        ]
        ax.errorbar(
            [_x(p, order) for p in points],
            vals,
            yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]],
            fmt="o-",
            ms=4,
            capsize=3,
            color=_colour(k, len(trajectory["layers"])),
            label=line["layer"],
        )
    ax.axhline(0.0, ls="--", lw=0.8, color="0.5")
    ax.set_xlabel(_x_label(order))
    ax.set_ylabel(_GAP_LABELS.get(trajectory["estimator"], "generalisation gap"))
    _legend(ax, len(trajectory["layers"]))
    return fig


def _places(checkpoints: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {cp["model"]["id"]: k for k, cp in enumerate(checkpoints)}


def _place_label(cp: dict[str, Any], order: str) -> str:
    if order == "tag" and cp.get("tag") is not None:
        return f"tag {cp['tag']:g}"
    return f"step {cp['step']}"


def _trajectory_table(
    trajectory: dict[str, Any],
    checkpoints: Sequence[dict[str, Any]],
    notes: tb.Notes,
) -> str:
    """Layers by checkpoints; a column head links to the checkpoint's row."""
    place = _places(checkpoints)
    head = [
        "layer",
        "#",
        *(_place_label(cp, trajectory["order"]) for cp in checkpoints),
    ]
    body = []
    for line in trajectory["layers"]:
        cells = [""] * len(checkpoints)
        for p in line["points"]:
            k = place.get(p["model_id"])
            if k is not None:
                reason = "no finite value at this checkpoint (see its analysis)"
                cells[k] = tb.cell({**p, "reason": reason}, notes)
        body.append([escape(line["layer"]), str(line["index"]), *cells])
    table = tb.table(head, body)
    for k, cp in enumerate(checkpoints):  # the heads become links to the rows
        label = escape(_place_label(cp, trajectory["order"]))
        table = table.replace(
            f">{label}</th>", f'><a href="#checkpoint-{k}">{label}</a></th>', 1
        )
    return table


def _analyses_of(trajectories: Sequence[dict[str, Any]]) -> dict[str, dict[str, None]]:
    """Per model id, the analyses the trajectories' points came from."""
    found: dict[str, dict[str, None]] = {}
    for t in trajectories:
        for line in t["layers"]:
            for p in line["points"]:
                found.setdefault(p["model_id"], {})[p["analysis_id"]] = None
        for path in t["information_plane"]:
            for p in path["points"]:
                found.setdefault(p["model_id"], {})[p["analysis_id"]] = None
    return found


def _overview(
    series: dict[str, Any],
    checkpoints: Sequence[dict[str, Any]],
    trajectories: Sequence[dict[str, Any]],
) -> str:
    datasets = sorted({t["dataset_id"] for t in trajectories})
    facts = {
        "name": series["name"],
        "id": series["id"],
        "architecture": series["architecture"],
        "checkpoints": series.get("checkpoints", len(checkpoints)),
        "created": series.get("created_at"),
        "dataset": ", ".join(datasets),
    }
    analyses = _analyses_of(trajectories)
    own = series.get("architecture_config") or {}
    rows = []
    for k, cp in enumerate(checkpoints):
        model = cp["model"]
        config = model.get("architecture_config") or {}
        ids = analyses.get(model["id"], {})
        links = "<br>".join(
            f'<a href="#analysis-{escape(a)}">{escape(a)}</a>' for a in ids
        )
        rows.append(
            f'<tr id="checkpoint-{k}"><td class="l">{cp["step"]}</td>'
            f"<td>{'' if cp.get('epoch') is None else cp['epoch']}</td>"
            f"<td>{'' if cp.get('tag') is None else format(cp['tag'], 'g')}</td>"
            f'<td class="l">{escape(model["id"])}</td>'
            f'<td class="l">{escape(str(model.get("sha256", ""))[:12])}</td>'
            f'<td class="l">{escape(str(model.get("filename") or ""))}</td>'
            f'<td class="l">{"" if config == own else escape(config_text(config))}'
            f'</td><td class="l">{links or "none on this dataset"}</td></tr>'
        )
    head = "".join(
        f'<th class="l">{h}</th>'
        for h in (
            "step",
            "epoch",
            "tag",
            "model",
            "sha256",
            "file",
            "own config",
            "analysis",
        )
    )
    return (
        dl(facts)
        + "<h3>Architecture config</h3>"
        + f"<pre>{escape(config_text(own))}</pre>"
        + "<h3>Checkpoints</h3>"
        + f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
        + "</tbody></table>"
    )


def _analyses(
    checkpoints: Sequence[dict[str, Any]], trajectories: Sequence[dict[str, Any]]
) -> str:
    analyses = _analyses_of(trajectories)
    rows = []
    for k, cp in enumerate(checkpoints):
        for a in analyses.get(cp["model"]["id"], {}):
            rows.append(
                f'<li id="analysis-{escape(a)}"><a href="#checkpoint-{k}">'
                f"{escape(_place_label(cp, 'step'))}</a>: analysis {escape(a)}; "
                f"its report: <code>GET /v1/analyses/{escape(a)}/report</code></li>"
            )
    if not rows:
        return '<p class="note">No checkpoint has a succeeded analysis here.</p>'
    return f"<ul>{''.join(rows)}</ul>"


def _metric_section(
    trajectories: Sequence[dict[str, Any]],
    checkpoints: Sequence[dict[str, Any]],
    notes: tb.Notes,
) -> str:
    parts = []
    for t in trajectories:
        metric, est = t["metric"], t["estimator"]
        key = f"{metric}-{est}"
        parts.append(f"<h3>{escape(metric)}: {escape(est)}</h3>")
        if not t["layers"]:
            parts.append('<p class="note">no checkpoint has this value</p>')
            continue
        label = _LABELS.get(metric, f"{metric} (as measured)")
        fig = trajectory_figure(t, label, log=metric == ID_METRIC)
        parts.append(fg.embed(fig, key, alt=f"{metric} {est} over the series"))
        parts.append(_trajectory_table(t, checkpoints, notes))
    return "".join(parts)


def render_series_html(
    series: dict[str, Any],
    checkpoints: Sequence[dict[str, Any]] | dict[str, Any],
    trajectories: Sequence[dict[str, Any]],
) -> str:
    """The report of a series as one self-contained HTML page.

    Parameters
    ----------
    series:
        ``GET /v1/series/{id}`` (``SeriesPublic`` as JSON).
    checkpoints:
        ``GET /v1/series/{id}/checkpoints``: its ``data`` list (or the whole
        answer), in the order the trajectories use.
    trajectories:
        ``GET /v1/series/{id}/trajectory`` answers, one per (metric, estimator)
        (:func:`series_trajectories` says which), all on one dataset.

    Returns
    -------
    str
        The page. Sections: the series and its checkpoints, intrinsic dimension
        and mutual information of every layer over the checkpoints (intervals as
        bands), the information-plane paths, the generalisation gap against the
        tag when the capacity family ran, and each checkpoint's analyses.

    Example
    -------
    >>> html = render_series_html(series, checkpoints, trajectories)  # doctest: +SKIP
    """
    checkpoints = checkpoints["data"] if isinstance(checkpoints, dict) else checkpoints
    notes = tb.Notes()
    sections: list[Section] = [
        ("overview", "What the series is", _overview(series, checkpoints, trajectories))
    ]
    by_metric = {
        metric: [t for t in trajectories if t["metric"] == metric]
        for metric in dict.fromkeys(t["metric"] for t in trajectories)
    }
    titles = {
        ID_METRIC: ("id", "Intrinsic dimension over the series"),
        MI_INPUT: ("mi-input", "I(X;T) over the series"),
        MI_OUTPUT: ("mi-output", "I(T;Y) over the series"),
    }
    for metric, (sid, heading) in titles.items():
        if by_metric.get(metric):
            body = _metric_section(by_metric[metric], checkpoints, notes)
            sections.append((sid, heading, body))
    paths: dict[tuple[str, str], dict[str, Any]] = {}
    for t in trajectories:
        for path in t["information_plane"]:
            paths.setdefault((path["layer"], path["estimator"]), path)
    estimators = list(dict.fromkeys(e for _, e in paths))
    if estimators:
        fig = plane_figure(list(paths.values()), estimators)
        sections.append(
            (
                "plane",
                "Information-plane paths",
                fg.embed(fig, "plane", alt="information-plane paths")
                + '<p class="note">Each line is a layer (numbered by index) from '
                "its first checkpoint (square) to its last (arrow head).</p>",
            )
        )
    gaps = by_metric.get(GAP_METRIC) or []
    if any(t["layers"] for t in gaps):
        parts = []
        for t in gaps:
            if t["layers"]:
                parts.append(f"<h3>{escape(t['estimator'])}</h3>")
                fig = gap_figure(t)
                key = f"gap-{t['estimator']}"
                parts.append(fg.embed(fig, key, alt="generalisation gap"))
                parts.append(_trajectory_table(t, checkpoints, notes))
        sections.append(("capacity", "Generalisation gap", "".join(parts)))
    others = [m for m in by_metric if m not in titles and m != GAP_METRIC]
    for metric in others:
        body = _metric_section(by_metric[metric], checkpoints, notes)
        sections.append((f"metric-{metric}", f"{metric} over the series", body))
    sections.append(("analyses", "Analyses", _analyses(checkpoints, trajectories)))
    lead = (
        f"series {series['name']} ({series['architecture']}), "
        f"{len(checkpoints)} checkpoints"
    )
    return page(f"series {series['name']}", lead, sections, notes)
