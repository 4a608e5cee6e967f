"""The worker's heartbeat: a row in ``worker_heartbeat`` written when the worker is
ready and every ``worker_heartbeat_interval_s`` after, so that ``/v1/ready`` knows
a worker runs. A worker that stops cleanly removes its row; one that dies stops
counting after ``worker_heartbeat_timeout_s``.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from service import store
from service.db import session_scope

log = logging.getLogger(__name__)


class Heartbeat:
    """Beats from a daemon thread of the worker's main process (not a task: a
    worker busy with a long analysis still beats)."""

    def __init__(
        self,
        worker: str,
        queues: list[str],
        interval_s: float,
        engine: Engine | None = None,
    ) -> None:
        self.worker, self.queues, self.interval_s = worker, queues, interval_s
        self.engine = engine  # None: the settings' database
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="bottlelens-heartbeat", daemon=True
        )

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        try:
            with session_scope(self.engine) as session:
                store.record_worker_heartbeat(session, self.worker, self.queues)
        except Exception as exc:  # the database may be back at the next beat
            log.warning("could not write the worker heartbeat: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s)
        try:
            with session_scope(self.engine) as session:
                store.forget_worker(session, self.worker)
        except Exception as exc:
            log.warning("could not remove the worker heartbeat: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
