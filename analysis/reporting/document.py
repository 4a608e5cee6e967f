"""The HTML report of one analysis: one self-contained page (styles inline, pictures
inline SVG or data-URI PNG, no script, no font or file fetched) that reads the same
offline, from disk, from the REST API or on paper."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from analysis.reporting import figures as fg
from analysis.reporting import tables as tb
from analysis.reporting.maps import artifact, attribution_figure, map_columns

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
.alert{color:#d62728;font-weight:600}.pass{color:#2ca02c;font-weight:600}
@media print{nav{display:none}section{break-inside:avoid-page}
body{max-width:none;padding:0}}
"""
Section = tuple[str, str, str]  # (id, heading, html)


def dl(items: dict[str, Any]) -> str:
    pairs = "".join(
        f"<dt>{escape(str(k))}</dt><dd>{escape(_text(v))}</dd>"
        for k, v in items.items()
        if v not in (None, "", [], {})
    )
    return f"<dl>{pairs}</dl>"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def config_text(config: dict[str, Any]) -> str:
    """One line per top-level key: short enough to read, whole enough to rerun."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(config.items())]
    return "{\n" + ",\n".join(lines) + "\n}"


def _overview(result: dict[str, Any]) -> str:
    prov = dict(result.get("provenance") or {})
    timings = prov.pop("timings_s", None)
    parts = [
        "<h3>Model</h3>",
        dl(result["model"]),
        "<h3>Dataset</h3>",
        dl(result["dataset"]),
        "<h3>Analysis config</h3>",
        f"<pre>{escape(config_text(result['config']))}</pre>",
        "<h3>Provenance</h3>",
        dl(prov),
    ]
    if timings:
        parts.append(dl({f"time of {k} (s)": round(v, 3) for k, v in timings.items()}))
    return "".join(parts)


def _attribution(result: dict[str, Any], folder: Path | None, notes: tb.Notes) -> str:
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
                tb.cell(units[method], notes),
                tb.cell(shares.get(method), notes),
                "" if sanity.get(method) is None else f"{sanity[method]:.2f}",
            ]
            for method in units
        ]
        parts.append(
            tb.table(
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
    notes = tb.Notes()
    sections: list[Section] = [("overview", "What was analysed", _overview(result))]

    def with_fig(fig: Any, key: str, alt: str) -> str:
        # a line per estimator stays small; the CKA matrix grows as layers squared
        raster = key == "cka" and len(layers) ** 2 > fg.SVG_MAX_ITEMS
        return fg.embed(fig, key, raster=raster, alt=alt)

    sections.append(
        (
            "width",
            "Width profile and bottlenecks",
            with_fig(fg.width_profile(layers), "width", "width per layer")
            + tb.bottleneck_rows(result),
        )
    )
    ids = tb.estimators(result, ["intrinsic_dimension"])
    body = (
        with_fig(fg.id_profile(layers, ids), "id", "intrinsic dimension") if ids else ""
    )
    sections.append(("id", "Intrinsic dimension", body + tb.layer_rows(result, notes)))
    mi = [
        e
        for e in tb.estimators(result, ["mi_input"])
        if any(
            fg.rows(la, "mi_output").get(e, {}).get("value") is not None
            for la in layers
        )
    ]
    if tb.estimators(result, ["mi_input", "mi_output"]):
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
                + tb.information_rows(result, notes),
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
        sections.append(
            ("necks", "What each bottleneck does", tb.necks_rows(result, notes))
        )
    warnings = result.get("warnings") or []
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings) or "<li>none</li>"
    sections.append(("warnings", "Warnings", f"<ul>{items}</ul>"))
    return _page(result, sections, notes)


def _page(result: dict[str, Any], sections: list[Section], notes: tb.Notes) -> str:
    model = result["model"].get("architecture") or result["model"].get("class", "model")
    title = f"{model} on {result['dataset'].get('spec', 'data')}"
    lead = (
        f"{title}, {result['provenance'].get('n_samples', '?')} samples, schema "
        f"version {result.get('schema_version')}"
    )
    return page(title, lead, sections, notes)


def page(title: str, lead: str, sections: list[Section], notes: tb.Notes) -> str:
    """The page shell every report shares: styles, a browser policy that refuses
    any fetch, a heading, the line under it, a link per section, the sections and
    the numbered notes."""
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
        f"</head><body><h1>bottlelens report</h1><p>{escape(lead)}</p>"
        f"<nav>{nav}</nav>{body}{notes_html}</body></html>\n"
    )
