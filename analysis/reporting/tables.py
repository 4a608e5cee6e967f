"""The report's tables: cells with intervals, reasons and flags as numbered notes,
columns with no value left out (with a note), bottleneck rows highlighted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from analysis.reporting import figures as fg
from contract.necks import NOT_APPLICABLE, QUESTIONS
from contract.result import FLAGS


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


class Notes:
    """Numbered notes (reasons of ``null`` values, flags), each text once; the
    HTML tables mark them as ``<sup>n</sup>``, the console's as superscripts."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def number(self, text: str) -> int:
        if text not in self.reasons:
            self.reasons.append(text)
        return self.reasons.index(text) + 1

    def ref(self, reason: str) -> str:
        return f"<sup>{self.number(reason)}</sup>"

    def html(self) -> str:
        if not self.reasons:
            return ""
        items = "".join(f"<li>{escape(r)}</li>" for r in self.reasons)
        return f'<ol class="fn">{items}</ol>'


def cell(m: dict[str, Any] | None, notes: Notes) -> str:
    if m is None:
        return ""
    if m.get("value") is None:
        return "n/a" + notes.ref(m.get("reason") or "not finite")
    text = f"{m['value']:.3g}"
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" [{m['ci_low']:.3g}, {m['ci_high']:.3g}]"
    marks = [f for f in (m.get("flags") or []) if f in ("low_samples", "near_ceiling")]
    if marks:
        refs = ",".join(notes.ref(f"{f}: {FLAGS[f]}")[5:-6] for f in marks)
        text += f"<sup>{refs}</sup>"
    return text


def table(
    head: Sequence[str],
    body: Sequence[Sequence[str]],
    necks: Sequence[bool] = (),
    notes: Notes | None = None,
) -> str:
    """A table whose cells are HTML already, the first column left-aligned. With
    ``notes``, a column with no value in any row (empty or n/a) is left out and a
    note says so."""
    keep = [0]
    for j in range(1, len(head)):
        cells = [r[j] for r in body]
        if notes is not None and all(c == "" or c.startswith("n/a") for c in cells):
            marks = sorted({c[8:-6] for c in cells if c})  # n/a<sup>k</sup>
            if marks:
                notes.ref(
                    f"{head[j]}: no value at any row (see note {', '.join(marks)})"
                )
            continue
        if notes is not None or any(cells):
            keep.append(j)
    th = "".join(
        f'<th class="{"l" if j == 0 else ""}">{escape(head[j])}</th>' for j in keep
    )
    trs = []
    for i, r in enumerate(body):
        cls = ' class="neck"' if i < len(necks) and necks[i] else ""
        tds = "".join(f'<td class="{"l" if j == 0 else ""}">{r[j]}</td>' for j in keep)
        trs.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def estimators(result: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    return list(
        dict.fromkeys(
            m["estimator"]
            for layer in result["layers"]
            for m in layer["metrics"]
            if m["metric"] in metrics
        )
    )


def layer_rows(result: dict[str, Any], notes: Notes) -> str:
    ests = estimators(result, ["intrinsic_dimension"])
    head = [
        "layer",
        "#",
        "module",
        "shape",
        "width",
        "neck",
        *(f"ID {e}" for e in ests),
    ]
    body, necks = [], []
    for layer in result["layers"]:
        by = fg.rows(layer, "intrinsic_dimension")
        width = str(layer["width"])
        if layer.get("projected_to"):
            width += f" → {layer['projected_to']}"
        body.append(
            [
                escape(layer["name"]),
                str(layer["index"]),
                escape(layer["module"]),
                "×".join(str(s) for s in layer["shape"]),
                width,
                "◆" if layer["is_bottleneck"] else "",
                *(cell(by.get(e), notes) for e in ests),
            ]
        )
        necks.append(layer["is_bottleneck"])
    return table(head, body, necks, notes)


def bottleneck_rows(result: dict[str, Any]) -> str:
    if not result["bottlenecks"]:
        return (
            '<p class="note">No bottleneck: no layer narrows by the factor '
            "and widens.</p>"
        )
    head = ["layer", "block", "width in", "width", "width out", "ratio", "kind", "skip"]
    body = [
        [
            escape(b["layer"]),
            escape(b.get("block") or "(model)"),
            str(b["width_in"]),
            str(b["width"]),
            str(b["width_out"]),
            f"{b['ratio']:.1f}",
            escape(b["kind"]),
            {None: "?", True: "yes", False: "no"}[b.get("skip_connection")],
        ]
        for b in result["bottlenecks"]
    ]
    return table(head, body)


def information_rows(result: dict[str, Any], notes: Notes) -> str:
    methods = estimators(result, ["mi_input", "mi_output"])
    cols = [(m, e) for e in methods for m in ("mi_input", "mi_output")]
    head = ["layer", "#"] + [
        f"{'I(X;T)' if m == 'mi_input' else 'I(T;Y)'} {e} (nats)" for m, e in cols
    ]
    body = [
        [escape(layer["name"]), str(layer["index"])]
        + [cell(fg.rows(layer, m).get(e), notes) for m, e in cols]
        for layer in result["layers"]
    ]
    necks = [layer["is_bottleneck"] for layer in result["layers"]]
    return table(head, body, necks, notes)


def necks_rows(result: dict[str, Any], notes: Notes) -> str:
    """The seven answers per bottleneck (``necks`` section): a row per neck, a
    column per question; not applicable answers point to their reason."""
    necks = (result.get("necks") or {}).get("necks") or []
    head = ["neck", "entering → leaving", *(q.replace("_", " ") for q in QUESTIONS)]
    body = []
    for neck in necks:
        answers = neck.get("answers") or {}
        cells = []
        for q in QUESTIONS:
            a = answers.get(q)
            if a is None:
                cells.append("")
            elif a.get("value") is None:
                cells.append(
                    escape(a.get("verdict") or NOT_APPLICABLE)
                    + notes.ref(a.get("reason") or NOT_APPLICABLE)
                )
            else:
                who = escape(a.get("estimator") or a.get("metric") or "")
                cells.append(f"{who} {cell(a, notes)}<br>{escape(a['verdict'])}")
        body.append(
            [
                escape(neck["layer"]),
                escape(f"{neck.get('entering') or '?'} → {neck.get('leaving') or '?'}"),
                *cells,
            ]
        )
    questions = "".join(
        f"<li><b>{escape(q.replace('_', ' '))}</b>: {escape(t)}</li>"
        for q, t in QUESTIONS.items()
    )
    return table(head, body) + f'<ul class="note">{questions}</ul>'
