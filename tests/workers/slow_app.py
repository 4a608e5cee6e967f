"""The worker app with every progress report slowed down, for the fault tests:
``celery -A tests.workers.slow_app worker ...`` with ``BOTTLELENS_TEST_DELAY_S``.

The production code stays free of test hooks: this module wraps ``run_job``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import workers.tasks as tasks
from workers.celery_app import app

_run_job = tasks.run_job
DELAY_S = float(os.environ.get("BOTTLELENS_TEST_DELAY_S", "0.5"))


def _slow_run_job(*args: Any, progress: Any = None, **kwargs: Any) -> Any:
    def slow(stage: str, done: int, total: int) -> None:
        time.sleep(DELAY_S)
        if progress is not None:
            progress(stage, done, total)

    return _run_job(*args, progress=slow, **kwargs)


tasks.run_job = _slow_run_job
__all__ = ["app"]
