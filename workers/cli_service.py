"""``bottlelens serve``, ``teams``, ``keys``, ``db`` and ``quickstart``: the service
on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from contract.config import AnalysisConfig
from workers.cli_common import ThreadsOption, console, err_console, fail
from workers.cli_ops import register as register_ops

keys_app = typer.Typer(help="API keys of a team.", no_args_is_help=True)
teams_app = typer.Typer(
    help="Teams (each has its own models, data and keys).", no_args_is_help=True
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
_DEFAULT_SAMPLES = int(AnalysisConfig().samples or 0)


def register(app: typer.Typer) -> None:
    """Add these commands, and the operators' (``workers/cli_ops.py``), to ``app``."""
    app.command()(serve)
    app.command()(quickstart)
    app.add_typer(keys_app, name="keys")
    app.add_typer(teams_app, name="teams")
    app.add_typer(db_app, name="db")
    register_ops(app, teams_app, keys_app, console, fail)


def _service_error(exc: Exception) -> typer.Exit:
    return fail(getattr(exc, "message", None) or str(exc))


def serve(
    embedded: Annotated[
        bool,
        typer.Option(
            help="SQLite, a SQLite queue and one worker under ./.bottlelens/; "
            "no Postgres, Redis or Docker needed."
        ),
    ] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the REST API (with --embedded: the whole service on this machine)."""
    if embedded:
        from workers.embedded import serve as serve_embedded

        raise typer.Exit(code=serve_embedded(host, port))
    import uvicorn

    uvicorn.run("service.main:create_app", factory=True, host=host, port=port)


@teams_app.command("create")
def teams_create(name: Annotated[str, typer.Argument(help="The team's name.")]) -> None:
    """Create a team."""
    from service import store
    from service.db import session_scope
    from service.errors import ServiceError

    try:
        with session_scope() as session:
            team = store.create_team(session, name)
    except ServiceError as exc:
        raise _service_error(exc) from exc
    console.print(f"team {team.name} created (id {team.id})")


@keys_app.command("create")
def keys_create(
    team: Annotated[str, typer.Option(help="Team name or id.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: read, submit, admin.")
    ] = "read,submit",
) -> None:
    """Create an API key and print it (it is shown this once)."""
    from service import store
    from service.db import session_scope
    from service.errors import ServiceError

    try:
        with session_scope() as session:
            key_id, token = store.create_api_key(session, team, scopes)
    except ServiceError as exc:
        raise _service_error(exc) from exc
    err_console.print(
        f"key {key_id} for team {team} ({scopes}); it is shown once, keep it now:"
    )
    print(token)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key; requests with it fail from now on."""
    from service import store
    from service.db import session_scope

    with session_scope() as session:
        revoked = store.revoke_api_key(session, key_id)
    if not revoked:
        raise fail(f"no active key {key_id!r} (unknown, or revoked already)")
    console.print(f"key {key_id} revoked")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Bring the database schema up to date (BOTTLELENS_DATABASE_URL)."""
    from service.db import upgrade

    upgrade(revision=revision)
    console.print(f"database at {revision}")


def quickstart(
    port: Annotated[int, typer.Option(help="Port of the local service.")] = 8765,
    samples: Annotated[
        int, typer.Option(help="Samples to analyse.")
    ] = _DEFAULT_SAMPLES,
    threads: ThreadsOption = None,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running", help="Keep the service up until Ctrl-C at the end."
        ),
    ] = False,
) -> None:
    """The REST API end to end: embedded service, demo upload, analysis, report.

    Starts the service under ./.bottlelens/, uploads the demo model and
    sklearn:digits over HTTP, follows the analysis, prints the per-layer table,
    saves the HTML report, prints the URLs (and a curl line with the key) while
    the service runs, and stops it (--keep-running: at Ctrl-C).
    """
    from analysis.threads import set_threads
    from workers.quickstart import QuickstartError, run_quickstart

    set_threads(threads)  # the service started below inherits OMP_NUM_THREADS
    try:
        run_quickstart(
            port=port, samples=samples, console=console, keep_running=keep_running
        )
    except QuickstartError as exc:
        raise fail(str(exc)) from exc
