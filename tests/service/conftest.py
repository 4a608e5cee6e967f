"""Fixtures of the service tests: real SQLite and PostgreSQL, a TestClient, teams.

Every database test runs twice (``db`` is parametrized over both backends). Each
backend is migrated once per session with Alembic; tables are emptied before each
test. PostgreSQL gets a fresh, uniquely named database that is dropped at the end.
No Celery worker runs: ``TaskQueue.send`` is replaced by a recorder.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from service import store
from service.db import get_engine, session_scope, upgrade
from service.main import create_app
from service.models import Base
from service.queue import TaskQueue
from service.settings import Settings

PG_ADMIN = "host=127.0.0.1 user=postgres dbname=test"
DATA = Path(__file__).parent / "data"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """An empty, uniquely named PostgreSQL database, dropped afterwards."""
    name = f"bottlelens_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            # A throwaway database: commits need not wait for the disk.
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'bottlelens.sqlite'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        upgrade(url)
        yield url
        get_engine(url).dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = get_engine(db_url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:  # DELETE: faster than TRUNCATE on small tables
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))
    return engine


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        storage_dir=tmp_path / "storage",
        broker_url="redis://127.0.0.1:6379/15",
        max_upload_bytes=64 * 1024,
        max_queued_analyses=3,
        queue_full_retry_after_s=17,
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Tasks the API sent, instead of sending them to a broker."""
    calls: list[dict[str, Any]] = []

    def record(self: TaskQueue, name: str, args: list[Any], **options: Any) -> None:
        calls.append({"name": name, "args": args, **options})

    def revoke(self: TaskQueue, task_id: str) -> bool:
        calls.append({"name": "revoke", "args": [task_id]})
        return True

    monkeypatch.setattr(TaskQueue, "send", record)
    monkeypatch.setattr(TaskQueue, "revoke", revoke)
    return calls


@pytest.fixture
def client(
    engine: Engine, settings: Settings, sent: list[dict[str, Any]]
) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@dataclass
class Team:
    id: str
    name: str
    keys: dict[str, str]  # scopes -> plaintext key

    def headers(self, scopes: str = "read,submit") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scopes]}"}


def make_team(engine: Engine, name: str, **limits: Any) -> Team:
    with session_scope(engine) as s:
        team = store.create_team(s, name, **limits)
        keys = {
            scopes: store.create_api_key(s, name, scopes)[1]
            for scopes in ("read", "submit", "read,submit", "admin")
        }
    return Team(team.id, name, keys)


@pytest.fixture
def team(engine: Engine) -> Team:
    return make_team(engine, "alpha")


@pytest.fixture
def other_team(engine: Engine) -> Team:
    return make_team(engine, "beta")


@pytest.fixture(scope="session")
def demo_result() -> dict[str, Any]:
    """A result of the real pipeline (``bottlelens demo``), saved once as JSON."""
    result: dict[str, Any] = json.loads((DATA / "demo_result.json").read_text())
    return result


def safetensors_bytes(n: int = 2) -> bytes:
    """A tiny valid safetensors file, written by hand (no torch in these tests)."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    ).encode()
    return len(header).to_bytes(8, "little") + header + b"\x00" * (4 * n)


def upload_model(
    client: TestClient, team: Team, content: bytes | None = None, **fields: str
) -> Any:
    data = {"architecture": "mlp", "architecture_config": '{"widths": [4, 2]}'}
    data.update(fields)
    return client.post(
        "/v1/models",
        headers=team.headers(),
        files={"file": ("model.safetensors", content or safetensors_bytes())},
        data=data,
    )


def ready_model_and_dataset(
    client: TestClient, engine: Engine, team: Team
) -> tuple[str, str]:
    """A model and a built-in dataset, marked ready as a validating worker would."""
    model = upload_model(client, team).json()
    dataset = client.post(
        "/v1/datasets", headers=team.headers(), data={"spec": "sklearn:digits"}
    ).json()
    with session_scope(engine) as s:
        store.mark_upload(s, "model", model["id"], status="ready")
    with session_scope(engine) as s:
        store.mark_upload(
            s,
            "dataset",
            dataset["id"],
            status="ready",
            info={
                "n_samples": 1797,
                "sample_shape": [64],
                "dtype": "float32",
                "has_labels": True,
                "sha256": "ab" * 32,
            },
        )
    return model["id"], dataset["id"]
