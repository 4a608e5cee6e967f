"""Commands that run and look after the service without Docker: ``worker``,
``scheduler``, ``architectures``, ``teams list`` and ``keys list``.

Registered on the command line's apps by :func:`register`; each imports what it
needs when it runs, so ``bottlelens --help`` stays fast.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from contract.tasks import GPU_QUEUE, QUEUES


def default_concurrency(queues: list[str], cores: int | None = None) -> int:
    """Processes for a worker on ``queues``: one where a GPU queue is served (one
    device, one analysis at a time), else one per two cores (each process then gets
    two torch threads from the thread policy)."""
    if GPU_QUEUE in queues:
        return 1
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // 2)


def worker_argv(
    queues: list[str], concurrency: int, hostname: str, loglevel: str
) -> list[str]:
    return [
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "--hostname",
        hostname,
        "--loglevel",
        loglevel,
    ]


def register(
    app: typer.Typer,
    teams_app: typer.Typer,
    keys_app: typer.Typer,
    console: Console,
    fail: Any,
) -> None:
    """Add the commands of this module to the ``bottlelens`` apps."""

    @app.command()
    def worker(
        queues: Annotated[
            str,
            typer.Option(
                help="Comma-separated queues: gpu (analyses on a device), "
                "cpu (uploads' checks and analyses with device cpu), control (the "
                "reconciler and the audit tick: keep it on at least one worker)."
            ),
        ] = ",".join(QUEUES),
        concurrency: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Worker processes. Default: 1 when gpu is served, else one "
                "per two cores; each process gets cores / processes torch threads.",
            ),
        ] = None,
        hostname: Annotated[
            str | None, typer.Option(help="Worker name (default: QUEUES@host).")
        ] = None,
        loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    ) -> None:
        """Run a worker of the service (Celery), on the gpu, cpu and control queues.

        It reads BOTTLELENS_DATABASE_URL, BOTTLELENS_BROKER_URL and
        BOTTLELENS_STORAGE_DIR, as the API does.
        """
        from workers.celery_app import app as celery

        names = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = sorted(set(names) - set(QUEUES))
        if not names or unknown:
            raise fail(f"--queues takes {', '.join(QUEUES)}, got {queues!r}")
        processes = concurrency or default_concurrency(names)
        name = hostname or f"{'+'.join(names)}@{socket.gethostname()}"
        console.print(
            f"worker {name}: queues {','.join(names)}, {processes} process(es)",
            highlight=False,
        )
        celery.worker_main(worker_argv(names, processes, name, loglevel))

    @app.command()
    def scheduler(
        schedule: Annotated[
            Path, typer.Option(help="Where beat keeps its last run times.")
        ] = Path(".bottlelens/celerybeat-schedule"),
        loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    ) -> None:
        """Run the scheduler (Celery beat): the reconciler and the audit tick.

        Run exactly one beside any number of workers.
        """
        from workers.celery_app import app as celery

        schedule.parent.mkdir(parents=True, exist_ok=True)
        periodic = ", ".join(sorted(celery.conf.beat_schedule))
        console.print(f"scheduler: {periodic} (schedule file {schedule})")
        celery.Beat(schedule=str(schedule), loglevel=loglevel).run()

    @app.command()
    def architectures() -> None:
        """List every architecture name with its config keys, types, defaults.

        Plugins are listed with the entry point that provides them.
        """
        console.print(architectures_table(), soft_wrap=False)

    @teams_app.command("list")
    def teams_list() -> None:
        """Every team with its limits and number of active keys."""
        from service.db import session_scope
        from service.store.teams import list_teams

        with session_scope() as session:
            teams = list_teams(session)
        table = Table(title="teams", header_style="bold")
        for col in ("name", "id", "max upload bytes", "max queued", "active keys"):
            table.add_column(col)
        for t in teams:
            table.add_row(
                t["name"],
                t["id"],
                _or_default(t["max_upload_bytes"]),
                _or_default(t["max_queued_analyses"]),
                str(t["active_keys"]),
            )
        console.print(table if teams else "no team yet: bottlelens teams create NAME")

    @keys_app.command("list")
    def keys_list(
        team: Annotated[
            str | None, typer.Option(help="Only this team's (name or id).")
        ] = None,
        revoked: Annotated[bool, typer.Option(help="Show revoked keys too.")] = False,
    ) -> None:
        """API keys: id, team, scopes, dates. A key's secret is never shown again."""
        from service.db import session_scope
        from service.errors import ServiceError
        from service.store.teams import list_api_keys

        try:
            with session_scope() as session:
                keys = list_api_keys(session, team, revoked=revoked)
        except ServiceError as exc:
            raise fail(exc.message) from exc
        table = Table(title="API keys", header_style="bold")
        for col in ("id", "team", "scopes", "created", "revoked"):
            table.add_column(col)
        for k in keys:
            table.add_row(
                k["id"],
                k["team"],
                k["scopes"],
                f"{k['created_at']:%Y-%m-%d %H:%M}",
                "" if k["revoked_at"] is None else f"{k['revoked_at']:%Y-%m-%d %H:%M}",
            )
        console.print(table if keys else "no key: bottlelens keys create --team NAME")


def _or_default(value: int | None) -> str:
    return "(settings)" if value is None else str(value)


def architectures_table() -> Table:
    """Built-ins from the contract; plugins from entry-point metadata, never
    imported here (their builder checks its own config)."""
    from importlib import metadata

    from contract.architectures import (
        BUILTIN_CONFIGS,
        ENTRY_POINT_GROUP,
        config_keys,
        plugin_names,
    )

    table = Table(title="architectures (--arch)", header_style="bold")
    for col in ("name", "key", "type", "default"):
        table.add_column(col)
    for name in BUILTIN_CONFIGS:
        for i, (key, (kind, default)) in enumerate(config_keys(name).items()):
            shown = list(default) if isinstance(default, tuple) else default
            table.add_row(name if i == 0 else "", key, kind, _json(shown))
        table.add_section()
    plugins = {
        ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
    }
    for name in plugin_names():
        table.add_row(name, "(plugin)", plugins[name], "its builder checks the config")
    return table


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
