"""The HTML report and the API docs in a real browser: Debian's Chromium, headless,
network off (tests/e2e/cdp.py).

The report (tests/data/report_result.json with seeded maps) must render every
figure with no console error and no request but its own file; each section's
screenshot is compared loosely with the one in docs/screenshots (its size and its
grey-level histogram: the report changed, not a pixel). ``/v1/docs`` must list the
API's operations from the package's own Swagger UI files, nothing from a CDN.

``BOTTLELENS_UPDATE_SCREENSHOTS=1`` rewrites the stored screenshots.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cdp import Page, browser_path, chromium
from tests.report_data import report_result, write_artifacts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        browser_path() is None,
        reason="no Chromium on this machine (apt-get install chromium; .ci/run "
        "installs it where Debian's packages are reachable)",
    ),
]
SHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
SECTIONS = ["overview", "width", "id", "information", "probe", "cka", "attribution"]
FIGURES = ["width", "id", "information", "probe", "cka", "attribution-0"]
# How far a section's screenshot may drift from the stored one.
SIZE_TOLERANCE = 0.15  # relative, each side
HISTOGRAM_TOLERANCE = 0.25  # L1 distance of 16-bin grey-level histograms (max 2)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    with chromium(tmp_path_factory.mktemp("profile")) as page:
        yield page


def _histogram(path: Path) -> list[float]:
    from PIL import Image

    grey = Image.open(path).convert("L")
    counts = grey.histogram()  # 256 levels
    bins = [sum(counts[i : i + 16]) for i in range(0, 256, 16)]
    total = sum(bins)
    return [b / total for b in bins]


def _close_to(shot: Path, stored: Path) -> str | None:
    """Why ``shot`` is not close to ``stored``, or None."""
    from PIL import Image

    (w, h), (sw, sh) = Image.open(shot).size, Image.open(stored).size
    if abs(w - sw) > SIZE_TOLERANCE * sw or abs(h - sh) > SIZE_TOLERANCE * sh:
        return f"size {w}x{h}, stored {sw}x{sh}"
    distance = sum(abs(a - b) for a, b in zip(_histogram(shot), _histogram(stored)))
    if distance > HISTOGRAM_TOLERANCE:
        return f"grey-level histogram {distance:.3f} from the stored one"
    return None


def test_the_report_renders_offline_with_every_figure(
    browser: Page, tmp_path: Path
) -> None:
    from analysis.reporting import write_html

    result = report_result()
    page = write_html(
        result, tmp_path / "report.html", write_artifacts(result, tmp_path / "maps")
    )
    browser.open(page.as_uri())
    drawn = browser.evaluate(
        "[...document.querySelectorAll('[data-figure]')].map(e => {"
        "const r = e.getBoundingClientRect();"
        "const ok = e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0);"
        "return [e.dataset.figure, ok && r.width > 100 && r.height > 100];})"
    )
    assert [name for name, _ in drawn] == FIGURES
    assert all(ok for _, ok in drawn), drawn
    assert browser.errors() == []
    assert browser.failed_requests() == []
    assert all(u == page.as_uri() or u.startswith("data:") for u in browser.requests())

    update = os.environ.get("BOTTLELENS_UPDATE_SCREENSHOTS") == "1"
    SHOTS.mkdir(parents=True, exist_ok=True)
    drift = {}
    for section in SECTIONS:
        shot = browser.screenshot(f"#{section}", tmp_path / f"{section}.png")
        stored = SHOTS / f"report-{section}.png"
        if update or not stored.exists():
            stored.write_bytes(shot.read_bytes())
            continue
        why = _close_to(shot, stored)
        if why:
            drift[section] = why
    assert drift == {}, f"sections look different from docs/screenshots: {drift}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    """The API on a free loopback port (SQLite; the docs page touches no data)."""
    import uvicorn

    from service.db import upgrade
    from service.main import create_app
    from service.settings import Settings

    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    upgrade(url)
    settings = Settings(
        database_url=url, storage_dir=tmp_path / "storage", broker_url="memory://"
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_api_docs_list_the_operations_offline(browser: Page, api: str) -> None:
    browser.open(f"{api}/docs")  # the short address points to /v1/docs
    count = browser.settle("document.querySelectorAll('.opblock').length")
    paths = browser.evaluate(
        "[...document.querySelectorAll('.opblock-summary-path')]"
        ".map(e => e.getAttribute('data-path'))"
    )
    assert count >= 10
    assert "/v1/analyses/{analysis_id}/report" in paths
    assert browser.errors() == []
    assert browser.failed_requests() == []
    assert all(u.startswith((api, "data:")) for u in browser.requests())
