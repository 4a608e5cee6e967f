"""The HTML report of one analysis: one self-contained page (styles inline, pictures
inline SVG or data-URI PNG, no script, no font or file fetched) that reads the same
offline, from disk, from the REST API or on paper."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from analysis.reporting import figures as fg
from analysis.reporting.maps import artifact, attribution_figure, map_columns
from contract.necks import NOT_APPLICABLE, QUESTIONS
from contract.result import FLAGS

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
sans-serif;color:#1b1b1b;max-width:1100px;margin:0 auto;padding:1.5em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:2em}nav a{margin-right:1em}
table{border-collapse:collapse;margin:.8em 0;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td{white-space:nowrap}td.l,th.l{text-align:left}
tr.neck td{font-weight:600;background:#fff4f4}
.figure{max-width:100%;height:auto;display:block;margin:.6em 0}
.note{color:#555;font-size:12.5px}.miss{color:#d62728}ol.fn{font-size:12px;
color:#444}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em}
dt{font-weight:600}dd{margin:0;word-break:break-all}
@media print{nav{display:none}section{break-inside:avoid-page}
body{max-width:none;padding:0}}
"""
Section = tuple[str, str, str]  # (id, heading, html)


class _Notes:
    """Reasons of ``null`` values as numbered footnotes, each reason once."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def ref(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"<sup>{self.reasons.index(reason) + 1}</sup>"

    def html(self) -> str:
        if not self.reasons:
            return ""
        items = "".join(f"<li>{escape(r)}</li>" for r in self.reasons)
        return f'<ol class="fn">{items}</ol>'


def _cell(m: dict[str, Any] | None, notes: _Notes) -> str:
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


def _table(
    head: Sequence[str],
    body: Sequence[Sequence[str]],
    necks: Sequence[bool] = (),
    notes: _Notes | None = None,
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


def _estimators(result: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    return list(
        dict.fromkeys(
            m["estimator"]
            for layer in result["layers"]
            for m in layer["metrics"]
            if m["metric"] in metrics
        )
    )


def _dl(items: dict[str, Any]) -> str:
    pairs = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{escape(_text(v))}</dd>"
        for k, v in items.items()
        if v not in (None, "", [], {})
    )
    return f"<dl>{pairs}</dl>"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _config_text(config: dict[str, Any]) -> str:
    """One line per top-level key: short enough to read, whole enough to rerun."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(config.items())]
    return "{\n" + ",\n".join(lines) + "\n}"


def _overview(result: dict[str, Any]) -> str:
    prov = dict(result.get("provenance") or {})
    timings = prov.pop("timings_s", None)
    parts = [
        "<h3>Model</h3>",
        _dl(result["model"]),
        "<h3>Dataset</h3>",
        _dl(result["dataset"]),
        "<h3>Analysis config</h3>",
        f"<pre>{escape(_config_text(result['config']))}</pre>",
        "<h3>Provenance</h3>",
        _dl(prov),
    ]
    if timings:
        parts.append(_dl({f"time of {k} (s)": round(v, 3) for k, v in timings.items()}))
    return "".join(parts)


def _layer_rows(result: dict[str, Any], notes: _Notes) -> str:
    ests = _estimators(result, ["intrinsic_dimension"])
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
                *(_cell(by.get(e), notes) for e in ests),
            ]
        )
        necks.append(layer["is_bottleneck"])
    return _table(head, body, necks, notes)


def _bottleneck_rows(result: dict[str, Any]) -> str:
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
    return _table(head, body)


def _information_rows(result: dict[str, Any], notes: _Notes) -> str:
    methods = _estimators(result, ["mi_input", "mi_output"])
    cols = [(m, e) for e in methods for m in ("mi_input", "mi_output")]
    head = ["layer", "#"] + [
        f"{'I(X;T)' if m == 'mi_input' else 'I(T;Y)'} {e} (nats)" for m, e in cols
    ]
    body = [
        [escape(layer["name"]), str(layer["index"])]
        + [_cell(fg.rows(layer, m).get(e), notes) for m, e in cols]
        for layer in result["layers"]
    ]
    necks = [layer["is_bottleneck"] for layer in result["layers"]]
    return _table(head, body, necks, notes)


def _attribution(result: dict[str, Any], folder: Path | None, notes: _Notes) -> str:
    parts = []
    shape = (result["dataset"].get("meta") or {}).get("image_shape")
    for k, entry in enumerate(result.get("attribution") or []):
        parts.append(f"<h3>at {escape(entry['layer'])}</h3>")
        if entry.get("error"):
            parts.append(f'<p class="note">skipped: {escape(entry["error"])}</p>')
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
        body = [
            [
                escape(method),
                _cell(units[method], notes),
                _cell(shares.get(method), notes),
                "" if sanity.get(method) is None else f"{sanity[method]:.2f}",
            ]
            for method in units
        ]
        parts.append(
            _table(
                [
                    "method",
                    "effective units",
                    "top-k share",
                    "sanity ρ (randomised model)",
                ],
                body,
            )
        )
        misses = _misses(entry)
        if misses is not None:
            parts.append(
                f'<p class="note">target: {escape(str(entry.get("target")))}; '
                f'<span class="{"miss" if misses else ""}">{misses} '
                "misclassified</span> of "
                f"{len(entry.get('labels') or [])} samples shown (red frame)</p>"
            )
        columns = map_columns(entry, folder)
        if columns:
            fig = attribution_figure(entry, columns, shape)
            parts.append(
                fg.embed(
                    fig,
                    f"attribution-{k}",
                    raster=True,
                    alt=f"attribution maps at {entry['layer']}",
                )
            )
            continue
        pngs = [
            p
            for p in (artifact(folder, n) for n in entry["files"].get("png", []))
            if p is not None
        ]
        for png in pngs:  # maps drawn by an older bottlelens: shown as they are
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(
                f'<img class="figure" data-figure="attribution-{k}" '
                f'alt="attribution maps" src="data:image/png;base64,{data}">'
            )
        if not pngs:
            parts.append(
                '<p class="note">maps not shown: the artifacts folder was '
                "not given or holds none of the files the result names</p>"
            )
    return "".join(parts)


def _misses(entry: dict[str, Any]) -> int | None:
    labels, predicted = entry.get("labels"), entry.get("predicted")
    if labels is None or predicted is None:
        return None
    return sum(a != b for a, b in zip(labels, predicted, strict=False))


def _necks(result: dict[str, Any], notes: _Notes) -> str:
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
                cells.append(f"{who} {_cell(a, notes)}<br>{escape(a['verdict'])}")
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
    return _table(head, body) + f'<ul class="note">{questions}</ul>'


def render_html(result: dict[str, Any], artifacts_dir: str | Path | None = None) -> str:
    """The report of one analysis as one self-contained HTML page.

    Parameters
    ----------
    result:
        The result document (``AnalysisResult.to_dict()``, a ``--out`` file, or
        ``GET /v1/analyses/{id}/results``).
    artifacts_dir:
        The folder holding the attribution files the result names; without it the
        maps are left out with a note.

    Returns
    -------
    str
        The page. Sections: what was analysed, width profile and bottlenecks,
        intrinsic dimension, information plane, probe accuracy, CKA, attribution,
        the per-neck answers when present, warnings.

    Example
    -------
    >>> html = render_html(result.to_dict(), "out.artifacts")  # doctest: +SKIP
    """
    folder = Path(artifacts_dir) if artifacts_dir is not None else None
    layers = result["layers"]
    notes = _Notes()
    sections: list[Section] = [("overview", "What was analysed", _overview(result))]
    with_fig: Callable[[Any, str, str], str] = lambda fig, key, alt: fg.embed(  # noqa: E731
        fig, key, raster=len(layers) ** 2 > fg.SVG_MAX_ITEMS and key == "cka", alt=alt
    )
    sections.append(
        (
            "width",
            "Width profile and bottlenecks",
            with_fig(fg.width_profile(layers), "width", "width per layer")
            + _bottleneck_rows(result),
        )
    )
    ids = _estimators(result, ["intrinsic_dimension"])
    body = (
        with_fig(fg.id_profile(layers, ids), "id", "intrinsic dimension") if ids else ""
    )
    sections.append(("id", "Intrinsic dimension", body + _layer_rows(result, notes)))
    mi = [
        e
        for e in _estimators(result, ["mi_input"])
        if any(
            fg.rows(la, "mi_output").get(e, {}).get("value") is not None
            for la in layers
        )
    ]
    if _estimators(result, ["mi_input", "mi_output"]):
        plane = (
            with_fig(
                fg.information_plane(layers, mi), "information", "information plane"
            )
            if mi
            else ""
        )
        sections.append(
            (
                "information",
                "Information plane",
                plane + '<p class="note">Points are numbered by layer (#); '
                "error bars are the intervals; red ring: bottleneck; hollow: "
                "low_samples; triangle: near_ceiling.</p>"
                + _information_rows(result, notes),
            )
        )
    if any(fg.rows(la, "probe_accuracy") for la in layers):
        classes = (result["dataset"].get("meta") or {}).get("classes")
        sections.append(
            (
                "probe",
                "Probe accuracy",
                with_fig(fg.probe_accuracy(layers, classes), "probe", "probe accuracy"),
            )
        )
    sim = result.get("similarity") or {}
    if sim.get("matrix"):
        sections.append(
            (
                "cka",
                "Representation similarity (CKA)",
                with_fig(
                    fg.cka_heatmap(sim["layers"], sim["matrix"]), "cka", "CKA heat map"
                ),
            )
        )
    if result.get("attribution"):
        sections.append(
            (
                "attribution",
                "Attribution at the bottlenecks",
                _attribution(result, folder, notes),
            )
        )
    if result.get("necks"):
        sections.append(("necks", "What each bottleneck does", _necks(result, notes)))
    warnings = result.get("warnings") or []
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings) or "<li>none</li>"
    sections.append(("warnings", "Warnings", f"<ul>{items}</ul>"))
    return _page(result, sections, notes)


def _page(result: dict[str, Any], sections: list[Section], notes: _Notes) -> str:
    model = result["model"].get("architecture") or result["model"].get("class", "model")
    title = f"{model} on {result['dataset'].get('spec', 'data')}"
    nav = "".join(f'<a href="#{sid}">{escape(h)}</a>' for sid, h, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{escape(h)}</h2>{html}</section>'
        for sid, h, html in sections
    )
    notes_html = (
        f'<section id="notes"><h2>Notes</h2>{notes.html()}</section>'
        if notes.reasons
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>bottlelens report: {escape(title)}</title><style>{_CSS}</style>"
        f"</head><body><h1>bottlelens report</h1><p>{escape(title)}, "
        f"{result['provenance'].get('n_samples', '?')} samples, schema version "
        f"{result.get('schema_version')}</p><nav>{nav}</nav>{body}{notes_html}"
        "</body></html>\n"
    )
