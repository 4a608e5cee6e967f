"""``GET /v1/analyses/{id}/report``: the worker's HTML page, served as it is."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from contract.result import REPORT_FILE
from service.settings import Settings
from service.storage import artifacts_dir
from tests.service.conftest import Team, ready_model_and_dataset
from tests.service.test_api_analyses import _finish, _submit


def test_the_report_is_html_once_finished_and_404_when_none_was_written(
    client: TestClient,
    engine: Engine,
    team: Team,
    demo_result: dict,
    settings: Settings,
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, team)
    analysis_id = _submit(client, team, model, dataset).json()["id"]
    url = f"/v1/analyses/{analysis_id}/report"
    read = team.headers("read")
    running = client.get(url, headers=read)
    assert running.status_code == 409 and running.json()["code"] == "no_results"
    _finish(engine, analysis_id, demo_result)
    missing = client.get(url, headers=read)
    assert missing.status_code == 404 and "bottlelens report" in missing.text
    folder = artifacts_dir(settings.storage_dir, analysis_id)
    folder.mkdir(parents=True)
    page = "<!DOCTYPE html><html><body>report</body></html>"
    (folder / REPORT_FILE).write_text(page)
    r = client.get(url, headers=read)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text == page
