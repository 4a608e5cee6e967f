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
from sqlalchemy import Engine

from bottlelens.client import Client
from service import store
from service.db import session_scope
from tests.service.conftest import (
    client,
    demo_result,
    engine,
    other_team,
    safetensors_bytes,
    sent,
    settings,
    sqlite_url,
    team,
)

# The service tests' fixtures, on SQLite only.
__all__ = [
    "client",
    "demo_result",
    "engine",
    "other_team",
    "sent",
    "settings",
    "sqlite_url",
    "team",
]


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def server(client: TestClient) -> TestClient:
    return client


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
    for api in made:
        api.close()


def finish(engine: Engine, analysis_id: str, result: dict[str, Any]) -> None:
    """Save ``result`` as a worker would."""
    with session_scope(engine) as s:
        assert store.claim_analysis(s, analysis_id, "w1", lease_s=60, max_attempts=3)
    with session_scope(engine) as s:
        assert store.save_results(s, analysis_id, "w1", result)


DIGITS_INFO = {
    "n_samples": 1797,
    "sample_shape": [64],
    "dtype": "float32",
    "has_labels": True,
    "sha256": "ab" * 32,
}


def ready(engine: Engine, kind: str, object_id: str, **info: Any) -> None:
    with session_scope(engine) as s:
        store.mark_upload(s, kind, object_id, status="ready", info=info or None)


def model_and_dataset(api: Client, engine: Engine, tmp_path: Path) -> tuple[str, str]:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(safetensors_bytes())
    model = api.upload_model(weights, "mlp", {"widths": [4, 2]})
    dataset = api.create_dataset(spec="sklearn:digits")
    ready(engine, "model", model.id)
    ready(engine, "dataset", dataset.id, **DIGITS_INFO)
    return model.id, dataset.id
