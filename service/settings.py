"""The one settings object of the service and the workers (environment: BOTTLELENS_*).

Numerical hyperparameters are not settings: they live in the analysis config stored
with every result.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contract.archives import (
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_COMPRESSION_RATIO,
    DEFAULT_MAX_CSV_COLUMNS,
    DEFAULT_MAX_CSV_ROWS,
)

EMBEDDED_DIR = Path(".bottlelens")


class Settings(BaseSettings):
    """Where the data lives, how the queue is reached and the per-team limits.

    The defaults are the embedded mode: SQLite and local files under ``./.bottlelens/``.
    """

    model_config = SettingsConfigDict(env_prefix="BOTTLELENS_", extra="forbid")

    database_url: str = f"sqlite:///{EMBEDDED_DIR / 'bottlelens.sqlite'}"
    broker_url: str = f"sqla+sqlite:///{EMBEDDED_DIR / 'broker.sqlite'}"
    storage_dir: Path = EMBEDDED_DIR / "storage"
    broker_timeout_s: float = Field(default=3.0, gt=0)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    # Threads of the API's sync routes (the database pool lends 15 connections).
    api_threads: int = Field(default=8, ge=1)
    # Defaults of the per-team limits (a team row may override them).
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_queued_analyses: int = Field(default=20, ge=1)
    queue_full_retry_after_s: int = Field(default=30, ge=1)
    # What an upload may unpack to (zip members, declared arrays), checked by the
    # API from the zip directory and by the worker before anything is allocated.
    max_archive_bytes: int = Field(default=DEFAULT_MAX_ARCHIVE_BYTES, ge=1)
    max_compression_ratio: float = Field(default=DEFAULT_MAX_COMPRESSION_RATIO, ge=1)
    max_csv_columns: int = Field(default=DEFAULT_MAX_CSV_COLUMNS, ge=1)
    max_csv_rows: int = Field(default=DEFAULT_MAX_CSV_ROWS, ge=2)
    # Leases of the workers and the queue's time limits.
    lease_s: int = Field(default=120, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    queued_grace_s: int = Field(default=300, ge=1)
    reconcile_interval_s: int = Field(default=60, ge=1)
    # Each worker writes a heartbeat this often; /v1/ready wants one this recent.
    worker_heartbeat_interval_s: float = Field(default=15.0, gt=0)
    worker_heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    # Redis hands an unacknowledged task to another worker after this long.
    broker_visibility_timeout_s: int = Field(default=4 * 3600, ge=2)
    # A task is killed after this long; keep it below the visibility timeout.
    task_time_limit_s: int = Field(default=3 * 3600, ge=1)
    # Audits: the scheduler's tick, the shortest schedule, the per-team limits.
    scheduler_tick_s: int = Field(default=30, ge=1)
    audit_min_interval_s: int = Field(default=60, ge=1)
    max_audits_per_team: int = Field(default=20, ge=1)
    max_audit_runs_per_day: int = Field(default=200, ge=1)
    # Webhooks of audits: hosts (names, addresses or CIDR networks) an admin allows;
    # a JSON list or comma-separated. Loopback, link-local and private addresses
    # are refused unless an entry names them.
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr | None = None  # signs every body (HMAC-SHA256)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1)
    webhook_backoff_s: float = Field(default=30.0, gt=0)

    @field_validator("webhook_allowlist", mode="before")
    @classmethod
    def _allowlist(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        """``postgresql://`` means psycopg 3 here (psycopg2 is not installed)."""
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        if not url.startswith(("sqlite:", "postgresql+psycopg:")):
            raise ValueError(
                "database_url must start with sqlite:/// or postgresql:// "
                f"(got {url.split(':', 1)[0]}:...)"
            )
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests pass their own ``Settings`` instead."""
    return Settings()
