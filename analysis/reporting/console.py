"""The result's tables for a terminal, readable at 80 columns.

A value is two lines (value, then interval), headers wrap, every column may fold,
a column with no value at any layer is left out (and a note says why), a reason or
a flag becomes a numbered note under the tables instead of a cut-off cell text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

from analysis.reporting.tables import Notes as HtmlNotes
from contract.result import FLAGS

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
NOTED_FLAGS = ("low_samples", "near_ceiling")


class Notes(HtmlNotes):
    """Numbered notes shared by every table of one result, each text once."""

    def mark(self, text: str) -> str:
        return str(self.number(text)).translate(_SUPERSCRIPT)

    def lines(self) -> list[str]:
        return [
            f"{str(i + 1).translate(_SUPERSCRIPT)} {t}"
            for i, t in enumerate(self.reasons)
        ]


def cell(m: dict[str, Any] | None, notes: Notes) -> str:
    """``"4.12\\n[3.90, 4.40]¹"``; ``"-"`` when absent; ``"n/a²"`` when null."""
    if m is None:
        return "-"
    if m.get("value") is None:
        return "n/a" + notes.mark(m.get("reason") or "not finite")
    text = f"{m['value']:.3g}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f"\n[{m['ci_low']:.3g}, {m['ci_high']:.3g}]"
    marks = [
        notes.mark(f"{f}: {FLAGS[f]}")
        for f in (m.get("flags") or [])
        if f in NOTED_FLAGS
    ]
    return text + ",".join(marks)


def fitted(
    title: str,
    head: Sequence[str],
    body: Sequence[Sequence[str]],
    notes: Notes,
    *,
    bold_rows: Sequence[bool] = (),
    keep: int = 1,
) -> Table:
    """A table that folds to the console's width; a value column (after the first
    ``keep``) with nothing but ``-`` or ``n/a`` is left out with a note."""
    columns = []
    for j, name in enumerate(head):
        cells = [r[j] for r in body]
        if j >= keep and body and all(c == "-" or c.startswith("n/a") for c in cells):
            if any(c != "-" for c in cells):
                flat = name.replace("\n", " ")
                reasons = sorted({c[3:] for c in cells if c != "-"})
                notes.mark(
                    f"{flat}: no value at any layer (see note {', '.join(reasons)})"
                )
            continue
        columns.append(j)
    table = Table(
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        title_justify="left",
    )
    for j in columns:
        table.add_column(
            head[j], overflow="fold", justify="left" if j < keep else "right"
        )
    for i, r in enumerate(body):
        bold = i < len(bold_rows) and bold_rows[i]
        table.add_row(*(r[j] for j in columns), style="bold" if bold else None)
    return table


def _rows(layer: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    return {m["estimator"]: m for m in layer["metrics"] if m["metric"] == metric}


def _estimators(result: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    return list(
        dict.fromkeys(
            m["estimator"]
            for layer in result["layers"]
            for m in layer["metrics"]
            if m["metric"] in metrics
        )
    )


def layer_table(result: dict[str, Any], notes: Notes, title: str | None) -> Table:
    """Layer (index, name, module, shape, width; ◆ at a bottleneck) and each
    intrinsic-dimension estimator."""
    ests = _estimators(result, ["intrinsic_dimension"])
    head = [
        "#",
        "layer",
        "module\nshape",
        "width",
        *(f"ID\n{e.replace('_', ' ')}" for e in ests),
    ]
    body = []
    for layer in result["layers"]:
        by = _rows(layer, "intrinsic_dimension")
        width = str(layer["width"])
        if layer.get("projected_to"):
            width += f"\n→{layer['projected_to']}"
        neck = " ◆" if layer["is_bottleneck"] else ""
        body.append(
            [
                str(layer["index"]),
                layer["name"] + neck,
                f"{layer['module']}\n{'x'.join(str(s) for s in layer['shape'])}",
                width,
                *(cell(by.get(e), notes) for e in ests),
            ]
        )
    bold = [layer["is_bottleneck"] for layer in result["layers"]]
    return fitted(title or "layers", head, body, notes, bold_rows=bold, keep=4)


def information_table(result: dict[str, Any], notes: Notes) -> Table | None:
    """I(X;T) and I(T;Y) per MI estimator and the probe accuracy, per layer."""
    methods = _estimators(result, ["mi_input", "mi_output"])
    has_probe = any(_rows(layer, "probe_accuracy") for layer in result["layers"])
    if not methods and not has_probe:
        return None
    cols = [(m, e) for e in methods for m in ("mi_input", "mi_output")]
    head = ["layer"] + [
        f"{'I(X;T)' if m == 'mi_input' else 'I(T;Y)'}\n{e}" for m, e in cols
    ]
    if has_probe:
        head.append("probe\nacc")
    body = []
    for layer in result["layers"]:
        row = [layer["name"] + (" ◆" if layer["is_bottleneck"] else "")]
        row += [cell(_rows(layer, m).get(e), notes) for m, e in cols]
        if has_probe:
            row.append(
                cell(_rows(layer, "probe_accuracy").get("logistic_regression"), notes)
            )
        body.append(row)
    bold = [layer["is_bottleneck"] for layer in result["layers"]]
    return fitted("information (nats)", head, body, notes, bold_rows=bold)


def attribution_table(result: dict[str, Any], notes: Notes) -> Table | None:
    """Per bottleneck and method: effective units, top-k share, sanity rho; the
    maps' file once per bottleneck."""
    entries = result.get("attribution") or []
    if not entries:
        return None
    head = [
        "layer",
        "method",
        "effective\nunits",
        "top-k\nshare",
        "sanity\nrho",
        "maps",
    ]
    body = []
    for entry in entries:
        if entry.get("error"):
            body.append(
                [entry["layer"], "-", "-", "-", "-", "n/a" + notes.mark(entry["error"])]
            )
            continue
        units = {
            m["estimator"]: m
            for m in entry["metrics"]
            if m["metric"] == "attribution_effective_units"
        }
        shares = {
            m["estimator"]: m
            for m in entry["metrics"]
            if m["metric"] == "attribution_topk_share"
        }
        sanity = entry.get("sanity") or {}
        pngs = ", ".join(entry.get("files", {}).get("png", []))
        for k, method in enumerate(units):
            rho = sanity.get(method)
            body.append(
                [
                    entry["layer"] if k == 0 else "",
                    method.replace("_", " "),
                    cell(units[method], notes).replace("\n", " "),
                    cell(shares.get(method), notes).replace("\n", " "),
                    "-" if rho is None else f"{rho:.2f}",
                    pngs if k == 0 else "",
                ]
            )
    return fitted("attribution at the bottlenecks", head, body, notes, keep=2)
