"""Progress where no terminal draws a bar (a log, a pipe, a scheduled run): one
line when a stage ends, with the elapsed time, and in a long stage a line every
``interval_s`` with an estimate of what is left of it."""

from __future__ import annotations

import time
from collections.abc import Callable


class StageLines:
    """A ``progress(stage, done, total)`` callback that writes lines.

    ``done``/``total`` of the stage give the estimate: the stage's time so far times
    ``(total - done) / done``; a total below 1 (unknown) gives none. Call
    :meth:`close` at the end to write the last stage's line.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.interval_s, self.clock = write, interval_s, clock
        self.start = clock()
        self.stage: str | None = None
        self.stage_start = self.last_line = self.start
        self.done = self.total = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage != self.stage:
            self._end(now)
            self.stage, self.stage_start, self.last_line = stage, now, now
        self.done, self.total = done, total
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            self.write(f"{self._head(now)} {done}/{total}, {self._left(now)}")

    def _left(self, now: float) -> str:
        if self.total < 1 or self.done < 1:
            return "time left unknown"
        left = (now - self.stage_start) * (self.total - self.done) / self.done
        return f"about {left:.0f} s left in this stage"

    def _head(self, now: float) -> str:
        return f"[{now - self.start:7.1f} s] {self.stage:<12}"

    def _end(self, now: float) -> None:
        if self.stage is not None:
            count = f"{self.done}/{self.total}" if self.total >= 1 else f"{self.done}"
            self.write(
                f"{self._head(now)} {count} done in {now - self.stage_start:.1f} s"
            )

    def close(self) -> None:
        self._end(self.clock())
        self.stage = None


class FractionLines:
    """The same lines for a progress fraction of a whole run (``GET
    /v1/analyses/{id}``: ``stage`` and ``progress`` in 0..1): a line per stage,
    with the estimate of the run's time left from the fraction done."""

    def __init__(
        self, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.write, self.clock = write, clock
        self.start = clock()
        self.stage: str | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if stage == self.stage:
            return
        self.stage = stage
        elapsed = self.clock() - self.start
        left = (
            f"about {elapsed * (1 - fraction) / fraction:.0f} s left"
            if 0 < fraction < 1
            else "time left unknown"
        )
        self.write(f"[{elapsed:7.1f} s] {stage:<12} {fraction:4.0%}, {left}")
