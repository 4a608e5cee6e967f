"""Alembic is the only way the schema changes: empty database -> head, no drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import alembic_config, make_engine, upgrade
from service.models import Base
from tests.service.conftest import fresh_pg_database


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _check(url: str) -> None:
    upgrade(url)
    assert _drift(url) == []
    assert set(Base.metadata.tables) <= _tables(url)
    command.downgrade(alembic_config(url), "base")
    assert _tables(url) == {"alembic_version"}
    upgrade(url)
    assert _drift(url) == []


def test_empty_sqlite_upgrades_to_head_without_drift(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'fresh' / 'db.sqlite'}")


def test_empty_postgresql_upgrades_to_head_without_drift() -> None:
    with fresh_pg_database() as url:
        _check(url)


@pytest.mark.parametrize("table", ["layer", "metric_value", "bottleneck"])
def test_result_tables_have_their_query_indexes(sqlite_url: str, table: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        indexed = [
            tuple(ix["column_names"]) for ix in inspect(engine).get_indexes(table)
        ]
        indexed += [
            tuple(uq["column_names"])
            for uq in inspect(engine).get_unique_constraints(table)
        ]
    finally:
        engine.dispose()
    wanted = {
        "layer": ("analysis_id", "index"),
        "metric_value": ("layer_id", "metric", "estimator"),
        "bottleneck": ("analysis_id", "position"),
    }[table]
    assert wanted in indexed
