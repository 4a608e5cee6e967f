"""The in-process API on SQLite for the client and the CLI: the real app behind
FastAPI's TestClient, whose transport the ``bottlelens.client.Client`` uses.

No Celery worker runs: ``sent`` records the tasks the API enqueues.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from bottlelens.client import Client
from service import store
from service.db import get_engine, session_scope
from service.main import create_app
from service.models import Base
from service.settings import Settings
from tests.service.conftest import Team, demo_result, make_team, sent, sqlite_url

__all__ = ["demo_result", "sent", "sqlite_url"]  # fixtures shared with tests/service


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(text(f"DELETE FROM {table.name}"))
    return engine


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=sqlite_url,
        storage_dir=tmp_path / "storage",
        broker_url="redis://127.0.0.1:6379/15",
        max_upload_bytes=4 * 1024 * 1024,
    )


@pytest.fixture
def server(
    engine: Engine, settings: Settings, sent: list[dict[str, Any]]
) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def team(engine: Engine) -> Team:
    return make_team(engine, "alpha")


@pytest.fixture
def other_team(engine: Engine) -> Team:
    return make_team(engine, "beta")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def connect(server: TestClient, sleeps: list[float]) -> Iterator[Any]:
    """``connect(key)``: a ``Client`` on the in-process app; waits are recorded."""
    made: list[Client] = []

    def make(api_key: str | None, **options: Any) -> Client:
        client = Client(
            "http://testserver",
            api_key,
            transport=server._transport,
            sleep=sleeps.append,
            **options,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def finish(engine: Engine, analysis_id: str, result: dict[str, Any]) -> None:
    """Save ``result`` as a worker would."""
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis_id, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", result)
