"""The Celery client of the API: tasks are sent by name, so the API never imports
the workers (nor torch). A broker that cannot be reached is ``Unavailable`` (503)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery

from contract.tasks import ROUTES, RUN_ANALYSIS, VALIDATE_UPLOAD
from service.errors import Unavailable

# One quick retry (a pooled connection may have gone stale), then fail: a request
# must not hang while the broker is down (kombu's default waits seconds).
_RETRY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
log = logging.getLogger(__name__)


class TaskQueue:
    """Sends ``bottlelens.*`` tasks to the broker of ``broker_url``."""

    def __init__(self, broker_url: str, *, timeout_s: float = 3.0) -> None:
        self.broker_url = broker_url
        self.timeout_s = timeout_s
        self._celery = Celery("bottlelens-api", broker=broker_url, set_as_current=False)
        # redis-py retries connections on its own too: bound its sockets as well.
        options: dict[str, Any] = dict(_RETRY)
        if broker_url.startswith(("redis://", "rediss://")):
            options |= {
                "socket_connect_timeout": timeout_s,
                "socket_timeout": timeout_s,
            }
        self._celery.conf.update(
            broker_connection_retry=False,
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=timeout_s,
            broker_transport_options=options,
            task_ignore_result=True,
        )
        self._local_broker_dir()

    def send(
        self, name: str, args: list[Any], *, queue: str, task_id: str | None = None
    ) -> None:
        """Publish one task; the one place that talks to the broker to send."""
        try:
            self._celery.send_task(
                name,
                args=args,
                queue=queue,
                task_id=task_id,
                retry=True,
                retry_policy=_RETRY,
            )
        except Exception as exc:  # kombu wraps most, but not all, transport errors
            log.warning("could not send %s to the broker: %s", name, exc)
            raise Unavailable(
                "the task queue cannot be reached; nothing was created, try again "
                "in a minute",
                code="broker_unavailable",
            ) from exc

    def validate_upload(self, kind: str, object_id: str) -> None:
        self.send(VALIDATE_UPLOAD, [kind, object_id], queue=ROUTES[VALIDATE_UPLOAD])

    def run_analysis(self, analysis_id: str, queue: str) -> None:
        # The task id is the analysis id, so that cancel can revoke it by id.
        self.send(RUN_ANALYSIS, [analysis_id], queue=queue, task_id=analysis_id)

    def revoke(self, analysis_id: str) -> bool:
        """Best effort: the cancelled status is what stops a running worker."""
        try:
            self._celery.control.revoke(analysis_id)
        except Exception as exc:
            log.warning("could not revoke %s: %s", analysis_id, exc)
            return False
        return True

    def ping(self) -> bool:
        try:
            with self._celery.connection_for_write() as conn:
                conn.ensure_connection(timeout=self.timeout_s, **_RETRY)
        except Exception:
            return False
        return True

    def _local_broker_dir(self) -> None:
        """The embedded broker is a SQLite file: its folder must exist."""
        prefix = "sqla+sqlite:///"
        if self.broker_url.startswith(prefix):
            path = Path(self.broker_url.removeprefix(prefix).split("?")[0])
            path.parent.mkdir(parents=True, exist_ok=True)
