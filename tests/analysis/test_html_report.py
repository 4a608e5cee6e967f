"""The HTML report: self-contained, every section and figure, axes with units,
reasons as notes, misclassified samples marked, nothing read outside its folder.

The input is a real result (tests/data/report_result.json, ``bottlelens demo`` on
400 digits, seed 0) with seeded attribution files (tests/report_data.py).
"""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from analysis.report import result_tables
from analysis.reporting import render_html, write_html
from analysis.reporting.figures import saturation
from tests.report_data import MISSED_ROW, report_result, write_artifacts

FIGURES = ["width", "id", "information", "probe", "cka", "attribution-0"]
SECTIONS = [
    "overview",
    "width",
    "id",
    "information",
    "probe",
    "cka",
    "attribution",
    "warnings",
]


class _Page(HTMLParser):
    """Figures, section ids, every URL-bearing attribute and the SVG texts."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.sections: list[str] = []
        self.urls: list[str] = []
        self.texts: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-figure" in a:
            self.figures[str(a["data-figure"])] = tag
        if tag == "section":
            self.sections.append(str(a.get("id")))
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href", "xlink:href", "action", "data"):
            if a.get(name):
                self.urls.append(str(a[name]))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _Page]:
    result = report_result()
    folder = write_artifacts(result, tmp_path_factory.mktemp("maps"))
    html = render_html(result, folder)
    parsed = _Page()
    parsed.feed(html)
    return html, parsed


def test_every_section_and_figure_is_there_and_nothing_is_fetched(
    page: tuple[str, _Page],
) -> None:
    html, parsed = page
    assert parsed.sections == [*SECTIONS, "notes"]
    assert list(parsed.figures) == FIGURES
    # small data drawn as vectors, the maps as a raster
    assert parsed.figures["width"] == parsed.figures["cka"] == "svg"
    assert parsed.figures["attribution-0"] == "img"
    assert parsed.scripts == 0
    # every link stays inside the page: anchors, in-SVG ids, data: images
    assert parsed.urls and all(
        u.startswith(("#", "data:image/png;base64,")) for u in parsed.urls
    )
    assert "default-src 'none'" in html  # the browser refuses any fetch as well
    assert not re.search(r"url\((?!#)", html)  # no CSS or SVG url() to a file


def test_axes_name_their_quantity_and_unit(page: tuple[str, _Page]) -> None:
    text = " ".join(page[1].texts)
    for label in (
        "width (units, log scale)",
        "intrinsic dimension (dimensions, log scale)",
        "I(X;T) (nats)",
        "I(T;Y) (nats)",
        "probe accuracy (fraction correct)",
        "linear CKA (0 to 1)",
        "layer (input to output)",
    ):
        assert label in text, label


def test_binning_is_greyed_as_saturated_with_its_reason(
    page: tuple[str, _Page],
) -> None:
    result = report_result()
    # every binning I(X;T) of this run sits at ln 400 = 5.99 (flag near_ceiling)
    assert saturation(result["layers"], "binning") is not None
    assert saturation(result["layers"], "ksg") is None
    text = " ".join(page[1].texts)
    assert "binning (saturated)" in text and "ksg (saturated)" not in text
    assert "within 5% of the estimator's ceiling" in text


def test_reasons_are_numbered_notes_and_empty_columns_are_kept_out(
    page: tuple[str, _Page],
) -> None:
    html, _ = page
    # I(T;Y) gaussian is null at every layer: its header is dropped, the reason
    # is a note, once
    assert ">I(T;Y) gaussian (nats)</th>" not in html
    assert ">I(X;T) gaussian (nats)</th>" in html
    notes = re.findall(r"<li>(.*?)</li>", html.split('id="notes"')[1])
    reason = notes.index("discrete Y: no Gaussian bound") + 1
    assert f"I(T;Y) gaussian (nats): no value at any row (see note {reason})" in notes
    assert sum(n.startswith("low_samples: fewer samples") for n in notes) == 1


def test_the_misclassified_sample_is_counted_and_framed(
    page: tuple[str, _Page],
) -> None:
    from analysis.reporting.maps import row_label

    assert ">1 misclassified</span> of 16 samples" in page[0]
    entry = report_result()["attribution"][0]
    text, miss = row_label(entry, MISSED_ROW)
    label, wrong = entry["labels"][MISSED_ROW], entry["predicted"][MISSED_ROW]
    assert miss and f"label {label} predicted {wrong}" in text
    assert row_label(entry, 0)[1] is False


@pytest.mark.slow
def test_maps_never_come_from_outside_the_folder(tmp_path: Path) -> None:
    result = report_result()
    outside = write_artifacts(result, tmp_path / "outside")
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "inputs.npy").symlink_to(outside / "inputs.npy")
    entry = result["attribution"][0]
    entry["files"] = {"npy": ["../outside/inputs.npy", "input_ig.npy"], "png": []}
    html = render_html(result, folder)
    assert 'data-figure="attribution-0"' not in html
    assert "maps not shown" in html
    result["attribution"][0]["files"]["npy"] = ["inputs.npy", "input_ig.npy"]
    assert "maps not shown" in render_html(result, None)


@pytest.mark.slow
def test_a_large_similarity_matrix_is_a_raster(tmp_path: Path) -> None:
    result = report_result()
    many = [copy.deepcopy(result["layers"][0]) for _ in range(60)]
    for i, layer in enumerate(many):
        layer["name"], layer["index"] = f"l{i}", i
    result["layers"] = many
    result["similarity"] = {
        "layers": [la["name"] for la in many],
        "matrix": [[1.0 if i == j else 0.5 for j in range(60)] for i in range(60)],
    }
    result["attribution"] = []
    parsed = _Page()
    parsed.feed(render_html(result))
    assert parsed.figures["cka"] == "img" and parsed.figures["id"] == "svg"


def test_write_html_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    write_html(report_result(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def _table_text(result: dict[str, Any], width: int) -> str:
    console = Console(width=width, record=True)
    for shown in result_tables(result):
        console.print(shown)
    return console.export_text()


def test_console_tables_fit_80_columns_without_cut_cells() -> None:
    text = _table_text(report_result(), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # folded, never cut
    assert "I(T;Y) gaussian: no value at any layer" in text
    assert "discrete Y: no Gaussian bound" in text
    # the maps' file is listed once per bottleneck, not once per method
    assert text.count("fc2.png") == 1
    wide = _table_text(report_result(), 200)
    assert max(len(line) for line in wide.splitlines()) <= 200


# --- series and audit-run reports, from documents shaped like the API's answers ---

SERIES_SECTIONS = ["overview", "id", "mi-input", "mi-output", "plane", "capacity"]
SERIES_FIGURES = [
    "intrinsic_dimension-twonn",
    "mi_input-ksg",
    "mi_output-ksg",
    "plane",
    "gap-accuracy",
]


def _point(model: str, step: int, tag: float, v: float | None, **mi: Any) -> dict:
    place = {"model_id": model, "step": step, "epoch": step // 10, "tag": tag}
    if mi:
        return {**place, "analysis_id": f"a{model}", **mi}
    lo, hi = (None, None) if v is None else (v * 0.9, v * 1.1)
    return {
        **place,
        "analysis_id": f"a{model}",
        "value": v,
        "ci_low": lo,
        "ci_high": hi,
    }


def series_documents() -> tuple[dict, list[dict], list[dict]]:
    """A series of three MLP checkpoints (neck widths 2, 4, 16 as tags), two layers,
    one ID estimator, one MI estimator and the accuracy gap on the output."""
    steps, tags = (0, 100, 200), (2.0, 4.0, 16.0)
    models = [f"m{k}" for k in range(3)]
    series = {
        "id": "s" * 32,
        "name": "necks",
        "architecture": "mlp",
        "architecture_config": {"widths": [64, 8, 64]},
        "checkpoints": 3,
        "created_at": "2026-11-28T10:00:00Z",
    }
    checkpoints = [
        {
            "model": {
                "id": m,
                "sha256": "ab" * 32,
                "filename": f"{m}.safetensors",
                "architecture": "mlp",
                "architecture_config": {"widths": [64, int(t), 64]},
            },
            "step": s,
            "epoch": s // 10,
            "tag": t,
        }
        for m, s, t in zip(models, steps, tags, strict=True)
    ]
    plane = [
        {
            "layer": layer,
            "index": i,
            "estimator": "ksg",
            "points": [
                _point(m, s, t, None, mi_input=1.0 + i + k, mi_output=0.5 + 0.1 * k)
                for k, (m, s, t) in enumerate(zip(models, steps, tags, strict=True))
            ],
        }
        for i, layer in enumerate(("fc1", "fc2"))
    ]

    def trajectory(metric: str, est: str, values: dict[str, list]) -> dict:
        return {
            "series_id": series["id"],
            "metric": metric,
            "estimator": est,
            "dataset_id": "d" * 32,
            "order": "tag",
            "layers": [
                {
                    "layer": layer,
                    "index": i,
                    "points": [
                        _point(m, s, t, v)
                        for m, s, t, v in zip(models, steps, tags, vals, strict=True)
                    ],
                }
                for i, (layer, vals) in enumerate(values.items())
            ],
            "information_plane": plane,
        }

    ids = {"fc1": [2.0, 3.5, 6.0], "fc2": [1.5, 2.5, None]}
    trajectories = [
        trajectory("intrinsic_dimension", "twonn", ids),
        trajectory("mi_input", "ksg", {"fc1": [1.0, 2.0, 3.0], "fc2": [2, 3, 4]}),
        trajectory("mi_output", "ksg", {"fc1": [0.5, 0.6, 0.7], "fc2": [0.5] * 3}),
        trajectory("generalisation_gap", "accuracy", {"fc2": [0.02, 0.05, 0.12]}),
    ]
    return series, checkpoints, trajectories


def audit_documents() -> tuple[dict, dict, dict, dict]:
    """An audit of one model with two rules, and a run on which the TwoNN ID of
    fc2 rose by half against its baseline (the result files of both runs)."""
    base = report_result()
    new = copy.deepcopy(base)
    for layer in new["layers"]:
        for m in layer["metrics"]:
            if layer["name"] == "fc2" and m["estimator"] == "twonn":
                old = m["value"]
                m.update(value=old * 1.5, ci_low=old * 1.4, ci_high=old * 1.6)
    before = fg_rows(base, "fc2", "intrinsic_dimension", "twonn")["value"]
    audit = {
        "id": "u" * 32,
        "name": "nightly",
        "model_id": "m" * 32,
        "series_id": None,
        "dataset_id": "d" * 32,
        "config": {"metrics": ["id"]},
        "schedule": {"interval_s": 86400},
        "baseline": "previous",
        "rules": [
            {
                "metric": "intrinsic_dimension",
                "estimator": "twonn",
                "layers": "fc*",
                "operator": "relative_change",
                "threshold": 0.2,
                "require_no_overlap": False,
            },
            {
                "metric": "probe_accuracy",
                "estimator": "logistic_regression",
                "layers": "bottlenecks",
                "operator": "below",
                "threshold": 0.5,
                "require_no_overlap": True,
            },
        ],
        "webhook_url": "https://hooks.example.org/secret-token",
        "status": "active",
        "next_run_at": "2026-11-29T03:00:00Z",
        "created_at": "2026-11-27T03:00:00Z",
    }
    run = {
        "id": "r" * 32,
        "audit_id": audit["id"],
        "scheduled_for": "2026-11-28T03:00:00Z",
        "status": "alert",
        "analysis_id": "b" * 32,
        "baseline_analysis_id": "a" * 32,
        "fired": [
            {
                "rule": 0,
                "layer": "fc2",
                "metric": "intrinsic_dimension",
                "estimator": "twonn",
                "operator": "relative_change",
                "baseline_value": before,
                "new_value": before * 1.5,
                "threshold": 0.2,
                "change": before * 0.5,
                "intervals_overlap": False,
            }
        ],
        "error": None,
        "created_at": "2026-11-28T03:00:01Z",
        "finished_at": "2026-11-28T03:01:00Z",
    }
    return audit, run, new, base


def fg_rows(result: dict, layer: str, metric: str, est: str) -> dict:
    (found,) = [la for la in result["layers"] if la["name"] == layer]
    return next(
        m for m in found["metrics"] if (m["metric"], m["estimator"]) == (metric, est)
    )


def _parse(html: str) -> _Page:
    parsed = _Page()
    parsed.feed(html)
    return parsed


def _self_contained(html: str, parsed: _Page) -> None:
    assert parsed.scripts == 0
    assert all(u.startswith(("#", "data:image/png;base64,")) for u in parsed.urls)
    assert "default-src 'none'" in html
    assert not re.search(r"url\((?!#)", html)
    # no address outside the SVG's XML namespace names (names, never fetched)
    assert not re.findall(r"https?://", re.sub(r'xmlns(:\w+)?="[^"]*"', "", html))


def test_the_series_report_has_every_section_figure_and_anchor() -> None:
    from analysis.reporting import render_series_html

    series, checkpoints, trajectories = series_documents()
    html = render_series_html(series, checkpoints, trajectories)
    parsed = _parse(html)
    assert parsed.sections == [*SERIES_SECTIONS, "analyses", "notes"]
    assert list(parsed.figures) == SERIES_FIGURES
    assert set(parsed.figures.values()) == {"svg"}
    _self_contained(html, parsed)
    # every checkpoint row is an anchor the tables' heads and the analyses link to
    for k in range(3):
        assert f'id="checkpoint-{k}"' in html
        assert html.count(f'href="#checkpoint-{k}"') == 4 + 1  # 4 tables, 1 list
        assert f'id="analysis-am{k}"' in html and f'href="#analysis-am{k}"' in html
    text = " ".join(parsed.texts)
    for label in (
        "tag (the checkpoint's ordering number, e.g. neck width)",
        "intrinsic dimension (dimensions, log scale)",
        "I(X;T) (nats)",
        "I(T;Y) (nats)",
        "gap: train − held-out accuracy (fraction)",
        "tag 16",  # a column head per checkpoint, ordered by tag
    ):
        assert label in text, label
    # the missing ID of fc2 at tag 16 is n/a with its note, not a blank
    assert "no finite value at this checkpoint" in html
    assert "0.12 [0.108, 0.132]" in html  # the gap with its interval


def test_the_series_report_without_capacity_or_mi_keeps_what_there_is() -> None:
    from analysis.reporting import render_series_html, series_trajectories

    series, checkpoints, trajectories = series_documents()
    only_id = [{**trajectories[0], "information_plane": []}]
    html = render_series_html(series, {"data": checkpoints}, only_id)
    assert _parse(html).sections == ["overview", "id", "analyses", "notes"]
    config = {
        "metrics": ["id", "mi", "capacity"],
        "id": {"methods": ["twonn", "mle"]},
        "mi": {"methods": ["ksg"]},
        "capacity": {"scores": ["accuracy"]},
    }
    assert series_trajectories([config, {"metrics": ["probe"]}]) == [
        ("intrinsic_dimension", "twonn"),
        ("intrinsic_dimension", "mle"),
        ("mi_input", "ksg"),
        ("mi_output", "ksg"),
        ("generalisation_gap", "accuracy"),
    ]


def test_the_audit_run_report_shows_the_rules_the_run_and_what_fired() -> None:
    from analysis.reporting import render_audit_html

    audit, run, new, base = audit_documents()
    html = render_audit_html(audit, run, new, base)
    parsed = _parse(html)
    assert parsed.sections == ["audit", "run", "outcome", "pictures"]
    assert list(parsed.figures) == ["fired-0"]
    _self_contained(html, parsed)
    assert "secret-token" not in html and "hooks.example.org" in html
    text = " ".join(parsed.texts)
    before = fg_rows(base, "fc2", "intrinsic_dimension", "twonn")
    for label in (
        "layer (input to output; red: fired)",
        "intrinsic_dimension (twonn, as measured)",
        "|new − base| / |base| > 0.2",
        "new < 0.5",
        "every 86400 s",
        "alert",
        # both values with their intervals, from the two result documents
        f"{before['value']:.3g} [{before['ci_low']:.3g}, {before['ci_high']:.3g}]",
        f"{before['value'] * 1.5:.3g} [{before['value'] * 1.4:.3g}, "
        f"{before['value'] * 1.6:.3g}]",
    ):
        assert label in text, label
    # the picture names every layer of the result, not only the fired one
    picture = html[html.index('data-figure="fired-0"') :]
    picture = picture[: picture.index("</svg>")]
    assert all(f">{la['name']}<" in picture for la in new["layers"])


def test_the_audit_run_report_says_why_a_run_failed_or_that_none_fired() -> None:
    from analysis.reporting import render_audit_html

    audit, run, _, _ = audit_documents()
    failed = {
        **run,
        "status": "error",
        "fired": [],
        "error": {
            "code": "analysis_failed",
            "message": "the analysis failed",
            "problems": ["fc9: no such layer"],
        },
    }
    html = render_audit_html(audit, failed)
    assert _parse(html).sections == ["audit", "run", "outcome"]
    assert "analysis_failed: the analysis failed" in html and "fc9: no such" in html
    passed = render_audit_html(audit, {**run, "status": "pass", "fired": []})
    assert "no rule fired" in passed and "data-figure" not in passed
    alone = render_audit_html(audit, run)  # no result documents: fired rows only
    assert list(_parse(alone).figures) == ["fired-0"]
    assert "without intervals" in alone
