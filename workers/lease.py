"""Holding an analysis lease while the work runs.

A thread renews the lease (``store.heartbeat``) every ``lease_s / 4`` seconds, at most
every two, with the latest stage and progress, so the lease lives exactly as long as
the worker process does, whether or not the analysis reports progress. When a renewal
is refused (the analysis was cancelled, or the lease expired and another worker took
it over) the next progress report raises :class:`AnalysisStopped`, which ends
``analyse`` with its hooks removed.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from service import store
from service.db import session_scope

log = logging.getLogger(__name__)

# Where each stage of ``analysis.analyse`` lies on the overall 0..1 progress.
_STAGES = {
    "loading": (0.0, 0.02),
    "profile": (0.02, 0.05),
    "capture": (0.05, 0.35),
    "metrics": (0.35, 0.9),
    "cka": (0.9, 0.93),
    "attribution": (0.93, 0.99),
}


class AnalysisStopped(Exception):
    """The analysis must stop: it was cancelled or its lease was lost."""


def overall_progress(stage: str, done: int, total: int) -> float:
    """``progress(stage, done, total)`` of ``analyse`` as one fraction of the run."""
    low, high = _STAGES.get(stage, (0.0, 0.0))
    frac = done / total if total > 0 else 0.0
    return round(low + (high - low) * min(max(frac, 0.0), 1.0), 4)


class Lease:
    """Context manager renewing the lease of ``analysis_id`` from a thread."""

    def __init__(self, analysis_id: str, worker_id: str, lease_s: float) -> None:
        self.analysis_id, self.worker_id, self.lease_s = analysis_id, worker_id, lease_s
        self.every_s = max(0.2, min(lease_s / 4, 2.0))
        self.stage, self.progress = "loading", 0.0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{analysis_id}", daemon=True
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self, stage: str, done: int, total: int) -> None:
        """The ``progress`` callback of ``analyse``; raises once the lease is gone."""
        self.stage, self.progress = stage, overall_progress(stage, done, total)
        self.check()

    def check(self) -> None:
        if self.lost.is_set():
            raise AnalysisStopped(self.analysis_id)

    def renew(self) -> bool:
        """One heartbeat; False (and ``lost`` set) when the store refuses it."""
        with session_scope() as session:
            alive = store.heartbeat(
                session,
                self.analysis_id,
                self.worker_id,
                stage=self.stage,
                progress=self.progress,
                lease_s=self.lease_s,
            )
        if not alive:
            self.lost.set()
        return alive

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not self.renew():
                    log.info("analysis %s: lease refused, stopping", self.analysis_id)
                    return
            except Exception:
                # The database may come back before the lease runs out; if it does
                # not, the next renewal is refused and the work stops then.
                log.exception("analysis %s: heartbeat failed", self.analysis_id)
