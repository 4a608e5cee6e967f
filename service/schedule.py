"""When an audit is due: 5-field cron in UTC, or a fixed interval from an anchor.

Pure functions over aware UTC datetimes; the scheduler passes its clock in.

The catch-up rule: at a tick the due time is the *latest* scheduled time at or before
``now`` (``latest_slot``), so however many periods were missed while nothing ticked,
one run catches up, for the most recent of them. ``next_slot`` is the first scheduled
time after that one: the audit is not due again before it, whatever a clock that
jumps back says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

# (name, low, high) of the five fields, in order.
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),  # 0 and 7 are Sunday
)
_MONTHS = [
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# A valid expression matches at least once in any 8 years (29 February included).
_SEARCH_DAYS = 8 * 366


class ScheduleError(ValueError):
    """A cron expression or interval that cannot be used; the message says why."""


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression (minute hour day-of-month month day-of-week),
    read in UTC. Both day fields restricted: a day matches when either does (cron's
    rule)."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday, as datetime.weekday()
    any_day: bool
    any_weekday: bool

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, day.weekday() in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def parse_cron(expr: str) -> Cron:
    """``"*/15 * * * *"``, ``"0 3 * * mon-fri"``...: ``*``, lists, ranges, steps,
    month and weekday names. ScheduleError names the field at fault."""
    parts = expr.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"a cron expression has 5 fields (minute hour day month weekday), "
            f"got {len(parts)}: {expr[:100]!r}"
        )
    values = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = values
    cron = Cron(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset((d - 1) % 7 for d in weekdays),  # cron 0 = Sunday
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )
    start = datetime(2000, 1, 1, tzinfo=UTC)
    dates = (start + timedelta(days=i) for i in range(_SEARCH_DAYS))
    if not any(cron.day_matches(day) for day in dates):
        raise ScheduleError(f"the cron expression {expr!r} never matches a day")
    return cron


def _field(text: str, name: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = _number(step_text, name) if step_text else 1
        if step < 1:
            raise ScheduleError(f"cron {name}: the step must be at least 1")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _number(a, name), _number(b, name)
        else:
            first = _number(body, name)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ScheduleError(
                f"cron {name}: {item!r} is outside {low}-{high} or reversed"
            )
        out.update(range(first, last + 1, step))
    return out


def _number(text: str, name: str) -> int:
    lowered = text.lower()
    if name == "month" and lowered in _MONTHS:
        return _MONTHS.index(lowered) + 1
    if name == "day of week" and lowered in _DAYS:
        return _DAYS.index(lowered)
    if not text.isdigit() or len(text) > 4:
        raise ScheduleError(f"cron {name}: {text[:20]!r} is not a number")
    return int(text)


def _floor_minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def cron_next(cron: Cron, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` names."""
    start = _floor_minute(after) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    for _ in range(_SEARCH_DAYS):
        if cron.day_matches(day):
            for hour in cron.hours:
                for minute in cron.minutes:
                    t = day.replace(hour=hour, minute=minute)
                    if t >= start:
                        return t
        day += timedelta(days=1)
    raise ScheduleError("the cron expression never matches")  # parse_cron checked


def cron_latest(cron: Cron, at: datetime) -> datetime:
    """The last time at or before ``at`` that ``cron`` names."""
    end = _floor_minute(at)
    day = end.replace(hour=0, minute=0)
    for _ in range(_SEARCH_DAYS):
        if cron.day_matches(day):
            for hour in reversed(cron.hours):
                for minute in reversed(cron.minutes):
                    t = day.replace(hour=hour, minute=minute)
                    if t <= end:
                        return t
        day -= timedelta(days=1)
    raise ScheduleError("the cron expression never matches")


@dataclass(frozen=True)
class Schedule:
    """A cron expression, or ``interval_s`` seconds counted from ``anchor``."""

    cron: str | None = None
    interval_s: int | None = None

    def check(self, *, min_interval_s: int) -> None:
        """ScheduleError unless exactly one of the two is given and usable."""
        if (self.cron is None) == (self.interval_s is None):
            raise ScheduleError("give exactly one of cron and interval_s")
        if self.cron is not None:
            parse_cron(self.cron)
            self._check_gaps(min_interval_s)
        elif self.interval_s is not None and self.interval_s < min_interval_s:
            raise ScheduleError(
                f"interval_s must be at least {min_interval_s} "
                "(BOTTLELENS_AUDIT_MIN_INTERVAL_S)"
            )

    def _check_gaps(self, min_interval_s: int) -> None:
        assert self.cron is not None
        cron = parse_cron(self.cron)
        gap = min_gap_s(cron)
        if gap < min_interval_s:
            raise ScheduleError(
                f"the cron expression {self.cron!r} runs {gap} s apart at times; "
                f"the floor is {min_interval_s} s (BOTTLELENS_AUDIT_MIN_INTERVAL_S)"
            )

    def latest_slot(self, anchor: datetime, now: datetime) -> datetime | None:
        """The latest scheduled time in ``[anchor, now]``; None before the first."""
        if self.cron is not None:
            t = cron_latest(parse_cron(self.cron), now)
            return t if t >= anchor else None
        assert self.interval_s is not None
        if now < anchor:
            return None
        k = int((now - anchor).total_seconds() // self.interval_s)
        return anchor + timedelta(seconds=k * self.interval_s)

    def next_slot(self, anchor: datetime, after: datetime) -> datetime:
        """The first scheduled time strictly after ``after`` (and not before
        ``anchor``)."""
        if self.cron is not None:
            return cron_next(parse_cron(self.cron), max(after, anchor - _TICK))
        assert self.interval_s is not None
        if after < anchor:
            return anchor
        k = int((after - anchor).total_seconds() // self.interval_s) + 1
        return anchor + timedelta(seconds=k * self.interval_s)

    def runs_per_day(self) -> float:
        """About how many runs a day it makes (at most, for cron)."""
        if self.interval_s is not None:
            return 86400 / self.interval_s
        assert self.cron is not None
        cron = parse_cron(self.cron)
        return float(len(cron.hours) * len(cron.minutes))


_TICK = timedelta(microseconds=1)


def min_gap_s(cron: Cron) -> int:
    """The shortest time between two consecutive matches within a day, and across
    midnight (the expression's minutes and hours only; a day field makes gaps
    longer, never shorter)."""
    times = [h * 60 + m for h in cron.hours for m in cron.minutes]
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(times[0] + 1440 - times[-1])
    return 60 * min(gaps)
