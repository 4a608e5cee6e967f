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
