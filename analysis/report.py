"""Human-facing views of a result: the per-layer table and the layer-profile picture.

Both take the result's JSON form (a dict), so they serve a result read back from a
file or from the REST API as well as a fresh ``AnalysisResult.to_dict()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from contract.necks import NOT_APPLICABLE, QUESTIONS

ID_METRIC = "intrinsic_dimension"


def _rows(layer: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    return {m["estimator"]: m for m in layer["metrics"] if m["metric"] == metric}


def id_estimators(result: dict[str, Any]) -> list[str]:
    """Estimators of intrinsic dimension present in the result, in first-seen order."""
    seen: list[str] = []
    for layer in result["layers"]:
        for m in layer["metrics"]:
            if m["metric"] == ID_METRIC and m["estimator"] not in seen:
                seen.append(m["estimator"])
    return seen


LOW_SAMPLES_MARK = "†"


def low_samples(m: dict[str, Any] | None) -> bool:
    return m is not None and "low_samples" in (m.get("flags") or [])


def format_estimate(m: dict[str, Any] | None) -> str:
    """``"4.12 [3.90, 4.40]"``; ``"-"`` when absent; the reason when not finite;
    ``LOW_SAMPLES_MARK`` after a value flagged ``low_samples``."""
    if m is None:
        return "-"
    if m["value"] is None:
        reason = m.get("reason") or "not finite"
        return f"n/a ({reason if len(reason) <= 28 else reason[:27] + '…'})"
    text = f"{m['value']:.3g}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" [{m['ci_low']:.3g}, {m['ci_high']:.3g}]"
    return text + (LOW_SAMPLES_MARK if low_samples(m) else "")


def result_tables(
    result: dict[str, Any], title: str | None = None
) -> list[Table | str]:
    """What a console shows of a result, in reading order: the per-layer table, the
    bottlenecks (or a line saying there are none), information and attribution,
    then the numbered notes (reasons and flags) and the warnings. The tables fold
    to the console's width (80 columns included): ``analysis.reporting.console``.
    """
    from analysis.reporting import console as fit

    notes = fit.Notes()
    shown: list[Table | str] = [fit.layer_table(result, notes, title)]
    if result["bottlenecks"]:
        shown.append(bottleneck_table(result))
    else:
        shown.append("no bottleneck found (no layer narrows by the factor and widens)")
    tables = (
        fit.information_table(result, notes),
        fit.attribution_table(result, notes),
        necks_table(result),
    )
    for table in tables:
        if table is not None:
            shown.append(table)
    shown += notes.lines()
    for warning in result.get("warnings") or []:
        shown.append(f"warning: {warning}")
    return shown


def bottleneck_table(result: dict[str, Any]) -> Table:
    table = Table(title="bottlenecks", header_style="bold")
    for col in (
        "layer",
        "block",
        "width in",
        "width",
        "width out",
        "ratio",
        "kind",
        "pattern",
        "skip",
    ):
        table.add_column(col)
    for b in result["bottlenecks"]:
        skip = b["skip_connection"]
        table.add_row(
            b["layer"],
            b["block"] or "(model)",
            str(b["width_in"]),
            str(b["width"]),
            str(b["width_out"]),
            f"{b['ratio']:.1f}",
            b["kind"],
            b.get("pattern") or "-",
            "?" if skip is None else ("yes" if skip else "no"),
        )
    return table


def plot_profile(result: dict[str, Any], path: str | Path) -> Path:
    """Save a PNG: layer width (log scale) and intrinsic dimension per layer.

    Bottleneck layers are shaded; each estimator is a line with its interval as a
    band. Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    xs = list(range(len(layers)))
    fig, (ax_w, ax_id) = plt.subplots(
        2,
        1,
        figsize=(max(7.0, 0.35 * len(layers) + 2), 6.5),
        sharex=True,
        gridspec_kw={"height_ratios": [1, 2]},
    )
    ax_w.plot(xs, [layer["width"] for layer in layers], "o-", color="0.3")
    ax_w.set_yscale("log")
    ax_w.set_ylabel("width")
    for est in id_estimators(result):
        vals, lows, highs, few = [], [], [], []
        for i, layer in enumerate(layers):
            m = _rows(layer, ID_METRIC).get(est)
            if low_samples(m):
                few.append(i)
            value = None if m is None else m["value"]
            vals.append(float("nan") if value is None else value)
            lows.append(
                float("nan") if m is None or m["ci_low"] is None else m["ci_low"]
            )
            highs.append(
                float("nan") if m is None or m["ci_high"] is None else m["ci_high"]
            )
        (line,) = ax_id.plot(xs, vals, "o-", label=est, markersize=4)
        ax_id.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
        if few:  # hollow rings: values flagged low_samples
            ax_id.scatter(
                few,
                [vals[i] for i in few],
                s=70,
                facecolors="none",
                edgecolors=line.get_color(),
                label=f"{est}: low_samples" if est else None,
            )
    for ax in (ax_w, ax_id):
        for i, layer in enumerate(layers):
            if layer["is_bottleneck"]:
                ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.12, lw=0)
    ax_id.set_yscale("log")
    ax_id.set_ylabel("intrinsic dimension")
    ax_id.legend(fontsize=8)
    ax_id.set_xticks(xs)
    ax_id.set_xticklabels(
        [layer["name"] for layer in layers], rotation=70, ha="right", fontsize=7
    )
    model = result["model"].get("architecture") or result["model"].get("class", "")
    dataset = result["dataset"].get("spec", "")
    ax_w.set_title(
        f"{model} on {dataset}\nwidth and intrinsic dimension per layer "
        "(shaded: bottlenecks)",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_information_plane(result: dict[str, Any], path: str | Path) -> Path | None:
    """Save a PNG: I(X;T) against I(T;Y), one panel per MI estimator, with both
    intervals as error bars, layers numbered and coloured by depth, bottlenecks
    ringed, ``low_samples`` hollow, ``near_ceiling`` as triangles and a saturated
    estimator's panel greyed with the reason (the HTML report's figure). Returns
    None when the result has no MI rows."""
    from analysis.reporting.figures import information_plane

    layers = result["layers"]
    methods = [
        est
        for est in dict.fromkeys(
            m["estimator"]
            for layer in layers
            for m in layer["metrics"]
            if m["metric"] == "mi_input"
        )
        if any(
            (_rows(layer, "mi_output").get(est) or {}).get("value") is not None
            for layer in layers
        )
    ]
    if not methods:
        return None
    fig = information_plane(layers, methods)
    fig.suptitle("information plane (numbers: layer index, as in the tables)")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def necks_table(result: dict[str, Any]) -> Table | None:
    """One row per bottleneck with the seven answers of the ``necks`` section:
    value [interval] and verdict, or ``not applicable`` and the reason."""
    necks = (result.get("necks") or {}).get("necks") or []
    if not necks:
        return None
    table = Table(title="what each bottleneck does", header_style="bold")
    table.add_column("neck")
    table.add_column("entering -> leaving")
    for question in QUESTIONS:
        table.add_column(question.replace("_", " "))
    for neck in necks:
        answers = neck.get("answers") or {}
        table.add_row(
            neck["layer"],
            f"{neck.get('entering') or '?'} -> {neck.get('leaving') or '?'}",
            *(answer_cell(answers.get(q)) for q in QUESTIONS),
        )
    return table


def answer_cell(answer: dict[str, Any] | None) -> str:
    """``"twonn -3.1 [-4.2, -2.0] compresses"``; ``"n/a: <reason>"``."""
    if answer is None:
        return "-"
    if answer.get("verdict") == NOT_APPLICABLE and answer.get("value") is None:
        reason = answer.get("reason") or NOT_APPLICABLE
        return f"n/a: {reason if len(reason) <= 40 else reason[:39] + '…'}"
    text = f"{answer.get('estimator') or answer.get('metric') or ''} " + (
        format_estimate(answer) if answer.get("value") is not None else "-"
    )
    return f"{text.strip()} {answer['verdict']}"


def timings_table(result: dict[str, Any]) -> Table:
    """Seconds and memory high-water mark of every stage of the run (provenance),
    with each family's slowest layers."""
    prov = result["provenance"]
    table = Table(title="where the time went", header_style="bold")
    for col in ("stage", "seconds", "share", "rss MB", "slowest layers"):
        table.add_column(
            col, justify="left" if col in ("stage", "slowest layers") else "right"
        )
    total = prov.get("duration_s") or sum(prov.get("timings_s", {}).values()) or 1.0
    per_layer = prov.get("layer_timings_s", {})
    for stage, seconds in prov.get("timings_s", {}).items():
        slow = sorted(per_layer.get(stage, {}).items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            stage,
            f"{seconds:.2f}",
            f"{100 * seconds / total:.0f}%",
            f"{prov.get('memory_peaks_mb', {}).get(stage, {}).get('rss', 0):.0f}",
            ", ".join(f"{name} {s:.2f}" for name, s in slow),
        )
    return table
