"""The worker app with faults switched on by the environment, for the fault tests:
``celery -A tests.workers.fault_app worker ...``.

- ``BOTTLELENS_TEST_RUNAWAY=1``: the analysis never ends and swallows the soft time
  limit, as native code that ignores signals would; only the hard limit stops it.
- ``BOTTLELENS_TEST_SAVE_SLEEP_S=N``: ``save_results`` writes its rows, touches
  ``BOTTLELENS_TEST_MARK`` and sleeps N seconds before its transaction commits,
  so that a test can kill the worker or the database connection in between.
- ``BOTTLELENS_TEST_DELAY_S``: every progress report sleeps, as in ``slow_app``.

The production code stays free of test hooks: this module wraps it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from celery import signals

import workers.tasks as tasks
from service import store
from workers.celery_app import app

_run_job = tasks.run_job
_save_results = store.save_results
DELAY_S = float(os.environ.get("BOTTLELENS_TEST_DELAY_S", "0"))
RUNAWAY = os.environ.get("BOTTLELENS_TEST_RUNAWAY") == "1"
SAVE_SLEEP_S = float(os.environ.get("BOTTLELENS_TEST_SAVE_SLEEP_S", "0"))
MARK = os.environ.get("BOTTLELENS_TEST_MARK", "")
_slept: list[bool] = []  # the first save sleeps; a retry in this process does not


def _fault_run_job(*args: Any, progress: Any = None, **kwargs: Any) -> Any:
    if RUNAWAY:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # bounded: the hard limit comes first
            time.sleep(0.1)

    def slow(stage: str, done: int, total: int) -> None:
        time.sleep(DELAY_S)
        if progress is not None:
            progress(stage, done, total)

    return _run_job(*args, progress=slow, **kwargs)


@signals.task_prerun.connect
def _ignore_soft_limit(**_: Any) -> None:
    """The pool process gets the soft limit as SIGUSR1: a runaway ignores it from
    the task's first instant, as native code that never returns to Python would."""
    if RUNAWAY:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _sleepy_save_results(session: Any, analysis_id: str, *a: Any, **k: Any) -> bool:
    saved = _save_results(session, analysis_id, *a, **k)
    if saved and SAVE_SLEEP_S and MARK and not _slept:
        _slept.append(True)
        Path(MARK).write_text(str(os.getpid()))
        time.sleep(SAVE_SLEEP_S)
    return saved


tasks.run_job = _fault_run_job
store.save_results = _sleepy_save_results  # type: ignore[assignment]
__all__ = ["app"]
