"""The reporting export: its columns, the SQL view, and a cursor that gives every row
exactly once, also while analyses finish concurrently (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from service import store
from service.db import alembic_config, make_engine, session_scope
from service.models import AnalysisExportRow
from service.schemas_series import EXPORT_COLUMNS
from tests.service.conftest import Team, make_team, ready_model_and_dataset
from tests.service.test_series import checkpoint, new_series, succeed


@pytest.fixture
def bigger(engine: Engine) -> Team:
    return make_team(engine, "bigger", max_queued_analyses=50)


def _rows_of(demo: dict[str, Any]) -> int:
    return sum(len(la["metrics"]) for la in demo["layers"])


def _queued(client: TestClient, team: Team, model: str, dataset: str) -> str:
    r = client.post(
        "/v1/analyses",
        headers=team.headers(),
        json={"model_id": model, "dataset_id": dataset},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _export(client: TestClient, team: Team, since: str, **params: Any) -> Any:
    r = client.get(
        "/v1/exports/metrics",
        headers=team.headers("read"),
        params={"since": since, "format": "json", **params},
    )
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] == r.headers["X-Next-Cursor"]
    return r.json()


def _follow(client: TestClient, team: Team, since: str, limit: int) -> tuple[list, str]:
    rows: list[dict[str, Any]] = []
    while True:
        page = _export(client, team, since, limit=limit)
        rows += page["data"]
        if page["next_cursor"] == since:
            return rows, since
        since = page["next_cursor"]


def test_columns_csv_and_the_sql_view_agree(
    client: TestClient, engine: Engine, bigger: Team, demo_result: dict[str, Any]
) -> None:
    _, dataset = ready_model_and_dataset(client, engine, bigger)
    sid = new_series(client, bigger)
    model = checkpoint(client, engine, bigger, sid, n=3, step="700")
    succeed(engine, _queued(client, bigger, model, dataset), demo_result)

    r = client.get("/v1/exports/metrics", headers=bigger.headers("read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    assert tuple(table[0]) == EXPORT_COLUMNS
    assert len(table) - 1 == _rows_of(demo_result)
    first = dict(zip(EXPORT_COLUMNS, table[1], strict=True))
    assert (first["series_id"], first["step"], first["layer"]) == (
        sid,
        "700",
        "flatten",
    )
    assert first["dataset_name"] == "sklearn:digits" and first["team_id"] == bigger.id
    assert first["model_sha256"] and first["finished_at"].endswith("+00:00")
    assert first["is_bottleneck"] in ("true", "false")

    with engine.connect() as conn:
        view = conn.execute(
            text("SELECT * FROM metric_export WHERE team_id = :t"), {"t": bigger.id}
        )
        assert tuple(view.keys()) == EXPORT_COLUMNS
        in_view = Counter(
            (row.layer, row.metric, row.estimator, row.value) for row in view
        )
    exported = Counter(
        (x["layer"], x["metric"], x["estimator"], x["value"])
        for x in _export(client, bigger, "0")["data"]
    )
    assert in_view == exported and sum(exported.values()) == _rows_of(demo_result)


def test_the_cursor_pages_whole_analyses_and_gives_each_row_once(
    client: TestClient,
    engine: Engine,
    bigger: Team,
    other_team: Team,
    demo_result: dict[str, Any],
) -> None:
    model, dataset = ready_model_and_dataset(client, engine, bigger)
    ids = [_queued(client, bigger, model, dataset) for _ in range(4)]
    for analysis_id in ids:
        succeed(engine, analysis_id, demo_result)
    n = _rows_of(demo_result)
    # limit n + 1: a page holds one analysis (two would pass the limit)
    first = _export(client, bigger, "0", limit=n + 1)
    assert Counter(x["analysis_id"] for x in first["data"]) == {ids[0]: n}
    rows, cursor = _follow(client, bigger, first["next_cursor"], limit=n + 1)
    assert Counter(x["analysis_id"] for x in rows) == {a: n for a in ids[1:]}
    assert _export(client, bigger, cursor)["data"] == []  # nothing new: same cursor
    # one more finishes: the saved cursor gives it, and only it
    late = _queued(client, bigger, model, dataset)
    succeed(engine, late, demo_result)
    more, _ = _follow(client, bigger, cursor, limit=10)  # limit < n: still whole
    assert Counter(x["analysis_id"] for x in more) == {late: n}
    # another team's rows are absent
    assert _export(client, other_team, "0")["data"] == []


def test_concurrent_writers_lose_and_repeat_no_row(
    client: TestClient, engine: Engine, bigger: Team, demo_result: dict[str, Any]
) -> None:
    """Eight analyses finish from eight threads while a reader follows the cursor
    with small pages; every row comes exactly once."""
    model, dataset = ready_model_and_dataset(client, engine, bigger)
    ids = [_queued(client, bigger, model, dataset) for _ in range(8)]
    for analysis_id in ids:
        with session_scope(engine) as s:
            assert store.claim_analysis(s, analysis_id, "w", lease_s=60, max_attempts=3)
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def write(analysis_id: str) -> None:
        with session_scope(engine) as s:
            assert store.save_results(s, analysis_id, "w", demo_result)

    def read() -> None:
        cursor = "0"
        while True:
            finished = done.is_set()  # read once more after the last writer
            page = _export(client, bigger, cursor, limit=50)
            seen.extend(page["data"])
            cursor = page["next_cursor"]
            if finished and not page["data"]:
                return

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(a,)) for a in ids]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert Counter(x["analysis_id"] for x in seen) == {
        a: _rows_of(demo_result) for a in ids
    }


def test_numbers_follow_commit_order_while_a_saver_holds_its_transaction(
    client: TestClient, engine: Engine, bigger: Team, demo_result: dict[str, Any]
) -> None:
    """A saves and holds its transaction open; B's save waits for A's commit, and
    a reader meanwhile sees neither, so no cursor can move past A's number."""
    model, dataset = ready_model_and_dataset(client, engine, bigger)
    a, b = (_queued(client, bigger, model, dataset) for _ in range(2))
    for analysis_id in (a, b):
        with session_scope(engine) as s:
            assert store.claim_analysis(s, analysis_id, "w", lease_s=60, max_attempts=3)
    b_done = threading.Event()

    def save_b() -> None:
        with session_scope(engine) as s:
            assert store.save_results(s, b, "w", demo_result)
        b_done.set()

    with session_scope(engine) as held:
        assert store.save_results(held, a, "w", demo_result)
        other = threading.Thread(target=save_b)
        other.start()
        time.sleep(0.5)
        assert not b_done.is_set()  # B waits on the export_sequence lock
        assert _export(client, bigger, "0")["data"] == []
    other.join(timeout=30)
    assert b_done.is_set()
    with session_scope(engine) as s:
        seqs = dict(
            s.execute(
                select(AnalysisExportRow.analysis_id, AnalysisExportRow.seq)
            ).all()
        )
    assert seqs[a] < seqs[b]


def test_parquet_and_its_absence(
    client: TestClient,
    engine: Engine,
    bigger: Team,
    demo_result: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    model, dataset = ready_model_and_dataset(client, engine, bigger)
    succeed(engine, _queued(client, bigger, model, dataset), demo_result)
    url, h = "/v1/exports/metrics", bigger.headers("read")
    r = client.get(url, headers=h, params={"format": "parquet"})
    assert r.status_code == 200, r.text
    table = pq.read_table(io.BytesIO(r.content))
    assert tuple(table.column_names) == EXPORT_COLUMNS
    assert table.num_rows == _rows_of(demo_result)
    assert str(table.schema.field("finished_at").type) == "timestamp[us, tz=UTC]"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    r = client.get(url, headers=h, params={"format": "parquet"})
    assert r.status_code == 422 and r.json()["code"] == "parquet_unavailable"
    assert "bottlelens[parquet]" in r.json()["message"]
    r = client.get(url, headers=h, params={"since": "-1"})
    assert r.status_code == 422


def test_the_migration_numbers_analyses_that_succeeded_before_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0002")
    engine = make_engine(url)
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO team VALUES ('t', 'team', NULL, NULL, '{now}')")
        )
        for i, finished in enumerate(("2026-01-03", "2026-01-02")):
            conn.execute(
                text(
                    "INSERT INTO analysis (id, team_id, config, queue, status, "
                    "progress, attempt, created_at, finished_at) VALUES "
                    f"('a{i}', 't', '{{}}', 'cpu', 'succeeded', 1, 1, '{now}', "
                    f"'{finished}')"
                )
            )
            conn.execute(
                text(
                    'INSERT INTO layer (id, analysis_id, position, name, "index", '
                    f"module, shape, width, is_bottleneck) VALUES ({i + 1}, 'a{i}', 0, "
                    "'fc', 0, 'Linear', '[4]', 4, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO metric_value (analysis_id, layer_id, position, "
                    "metric, estimator, value, n_samples, params, flags) VALUES "
                    f"('a{i}', {i + 1}, 0, 'intrinsic_dimension', 'twonn', 2.5, 10, "
                    "'{}', '[]')"
                )
            )
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        numbered = conn.execute(
            text("SELECT analysis_id, seq, n_rows FROM analysis_export ORDER BY seq")
        ).all()
        last = conn.execute(text("SELECT last_seq FROM export_sequence")).scalar()
        in_view = conn.execute(text("SELECT COUNT(*) FROM metric_export")).scalar()
    engine.dispose()
    assert [tuple(r) for r in numbered] == [
        ("a1", 1, 1),
        ("a0", 2, 1),
    ]  # by finished_at
    assert (last, in_view) == (2, 2)
