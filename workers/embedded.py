"""``bottlelens serve --embedded``: the whole service on one machine, no Docker.

SQLite holds the data and the queue (``sqla+sqlite``), files go under
``./.bottlelens/``, the API runs in this process (uvicorn) and one worker in a child
process (``celery worker -c 1``, one pool process, with an embedded beat for the
reconciler).
Ctrl-C or SIGTERM stops the API, then the worker: warm shutdown first, then a kill
after a grace period; an analysis cut short that way is re-run by the reconciler
when the service is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from contract.tasks import QUEUES
from service.settings import EMBEDDED_DIR

log = logging.getLogger(__name__)

DEFAULT_TEAM = "default"
KEY_FILE = "api_key"
# Settings the embedded mode fixes, whatever the environment says.
_FIXED = ("DATABASE_URL", "BROKER_URL", "STORAGE_DIR")


@dataclass(frozen=True)
class Embedded:
    """Where an embedded service keeps its files."""

    root: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.root / 'bottlelens.sqlite'}"

    @property
    def broker_url(self) -> str:
        return f"sqla+sqlite:///{self.root / 'broker.sqlite'}"

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    def env(self) -> dict[str, str]:
        values = (self.database_url, self.broker_url, str(self.storage_dir))
        return {f"BOTTLELENS_{k}": v for k, v in zip(_FIXED, values, strict=True)}


def configure(root: Path | str = EMBEDDED_DIR) -> Embedded:
    """Point this process (and the children it starts) at the embedded files."""
    emb = Embedded(Path(root).resolve())
    emb.root.mkdir(parents=True, exist_ok=True)
    os.environ.update(emb.env())
    _clear_settings_caches()
    return emb


def _clear_settings_caches() -> None:
    from service.db import get_engine
    from service.settings import get_settings

    get_settings.cache_clear()
    get_engine.cache_clear()


def prepare(emb: Embedded) -> tuple[str, bool]:
    """Upgrade the schema, make sure the default team exists, and return an API key.

    The key is created once and kept in ``<root>/api_key`` (mode 0600) so that every
    start prints the same one; a revoked or unknown key is replaced. Returns
    ``(plaintext, created)``.
    """
    from service import store
    from service.db import session_scope, upgrade
    from service.errors import Conflict

    upgrade(emb.database_url)
    with contextlib.suppress(Conflict), session_scope() as session:
        store.create_team(session, DEFAULT_TEAM)  # Conflict: it exists
    key_file = emb.root / KEY_FILE
    if key_file.is_file():
        token = key_file.read_text().strip()
        with session_scope() as session:
            record = store.api_key_for_token(session, token)
        if record and not record.revoked:
            return token, False
    with session_scope() as session:
        _, token = store.create_api_key(session, DEFAULT_TEAM, "read,submit,admin")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def worker_command(emb: Embedded, *, loglevel: str = "warning") -> list[str]:
    """One worker process on both queues, with beat running the reconciler.

    A prefork pool of one, not ``solo``: a solo pool enforces no time limit, so a
    runaway analysis would hold the only worker for ever; the pool process is
    killed at the hard limit and replaced."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        ",".join(QUEUES),
        "-c",
        "1",
        "--pool",
        "prefork",
        "--beat",
        "--schedule",
        str(emb.root / "celerybeat-schedule"),
        "--hostname",
        f"embedded@{socket.gethostname()}",
        "--loglevel",
        loglevel,
    ]


def start_worker(
    emb: Embedded, *, loglevel: str = "warning"
) -> subprocess.Popen[bytes]:
    """The worker in its own process group: Ctrl-C reaches this process only, and the
    worker and its beat child are stopped together."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        worker_command(emb, loglevel=loglevel),
        env={**os.environ, **emb.env()},
        start_new_session=True,
        preexec_fn=die_with_parent,  # runs before any thread of ours starts
    )


def die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if ``serve`` dies without stopping it."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the group (a Celery warm shutdown), SIGKILL what is left after grace."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("the worker did not stop in %.0f s; killing it", grace_s)
    # The beat child may outlive the worker: kill whatever is left of the group.
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    root: Path | str = EMBEDDED_DIR,
    grace_s: float = 10.0,
    loglevel: str = "warning",
) -> int:
    """Run the embedded service until Ctrl-C/SIGTERM; the exit status."""
    import uvicorn

    emb = configure(root)
    token, created = prepare(emb)
    print(
        f"bottlelens embedded: data in {emb.root}\n"
        f"API key ({'new' if created else 'kept in ' + str(emb.root / KEY_FILE)}): "
        f"{token}\n"
        f"API on http://{host}:{port} (docs at /v1/docs); Ctrl-C stops it",
        flush=True,
    )
    worker = start_worker(emb, loglevel=loglevel)
    server = uvicorn.Server(
        uvicorn.Config(
            "service.main:create_app",
            factory=True,
            host=host,
            port=port,
            log_level=loglevel,
        )
    )
    lost = threading.Event()

    def watch() -> None:
        # A dead worker leaves analyses queued for ever: stop the API too, loudly.
        worker.wait()
        if not server.should_exit:
            lost.set()
            server.should_exit = True

    def on_signal(sig: int, _frame: object) -> None:
        # uvicorn handles SIGINT/SIGTERM while it runs and raises them again when it
        # is done; this handler takes them then, so the worker is always stopped.
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    threading.Thread(target=watch, name="watch-worker", daemon=True).start()
    try:
        server.run()
    finally:
        stop_process_group(worker, grace_s)
    if lost.is_set():
        print(f"the worker exited ({worker.returncode}); stopped", file=sys.stderr)
        return 1
    return 0 if server.started else 1
