"""Engines, the one ``session_scope()``, and schema upgrades through Alembic.

SQLite (embedded mode) gets WAL, ``busy_timeout`` and foreign keys on every
connection, and SQLAlchemy emits ``BEGIN`` itself so that a store function can ask
for ``BEGIN IMMEDIATE`` (``begin_write``): in WAL mode a read-then-write transaction
that starts deferred fails when another writer commits first, whatever the timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
_IMMEDIATE = "bottlelens_sqlite_immediate"


def make_engine(url: str, *, busy_timeout_ms: int | None = None) -> Engine:
    """A new engine for ``url``; SQLite files get their folder created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if busy_timeout_ms is None:
        busy_timeout_ms = get_settings().sqlite_busy_timeout_ms
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy sends BEGIN, not the driver
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = bool(conn.get_execution_options().get(_IMMEDIATE))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        conn.info[_IMMEDIATE] = immediate

    return engine


@lru_cache(maxsize=8)
def get_engine(url: str | None = None, busy_timeout_ms: int | None = None) -> Engine:
    """The process-wide engine of ``url`` (default: the settings' database).

    ``get_engine.cache_clear()`` forgets them (after the settings changed).
    """
    return make_engine(
        url or get_settings().database_url, busy_timeout_ms=busy_timeout_ms
    )


@lru_cache(maxsize=8)
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, always close."""
    session = _sessionmaker(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def begin_write(session: Session) -> None:
    """Start the session's transaction as a writer (``BEGIN IMMEDIATE`` on SQLite).

    On PostgreSQL nothing is needed here: the store locks rows with
    ``SELECT ... FOR UPDATE``. On SQLite it must come before the first statement of
    the transaction, so every read-then-write store function calls it first.
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    if session.in_transaction():
        conn = session.connection()
        if not conn.info.get(_IMMEDIATE):
            raise RuntimeError(
                "a store function that writes must open its transaction on SQLite: "
                "call it first in a fresh session_scope()"
            )
        return
    session.connection(execution_options={_IMMEDIATE: True})


def alembic_config(database_url: str | None = None) -> Any:
    """The Alembic config of this repository, pointed at ``database_url``."""
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url or get_settings().database_url
    cfg.attributes["configure_logger"] = False  # leave the caller's logging alone
    return cfg


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Run ``alembic upgrade head`` on ``database_url`` (``bottlelens db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)
