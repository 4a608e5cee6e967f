"""Cron in UTC and intervals: known answers, a minute-by-minute oracle, catch-up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from service.schedule import (
    Schedule,
    ScheduleError,
    cron_latest,
    cron_next,
    min_gap_s,
    parse_cron,
)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 3 * * *", "2026-01-01T03:00:00", "2026-01-02T03:00:00"),
        ("0 3 * * *", "2026-01-01T02:59:59", "2026-01-01T03:00:00"),
        ("*/15 * * * *", "2026-01-01T10:07:00", "2026-01-01T10:15:00"),
        ("*/15 * * * *", "2026-01-01T23:50:00", "2026-01-02T00:00:00"),
        # 2026-11-27 is a Friday: the next weekday 09:00 is Monday the 30th.
        ("0 9 * * mon-fri", "2026-11-27T09:00:00", "2026-11-30T09:00:00"),
        ("0 9 * * 1-5", "2026-11-27T08:00:00", "2026-11-27T09:00:00"),
        # Both day fields restricted: the 13th or a Friday (2026-11-20 is a Friday).
        ("0 0 13 * fri", "2026-11-14T00:00:00", "2026-11-20T00:00:00"),
        ("0 0 13 * fri", "2026-11-27T00:00:00", "2026-12-04T00:00:00"),
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("30 23 31 dec *", "2026-06-01T00:00:00", "2026-12-31T23:30:00"),
        ("0 0 * * 7", "2026-11-28T12:00:00", "2026-11-29T00:00:00"),  # Sunday
        ("5-10/5 1 * * *", "2026-01-01T01:05:00", "2026-01-01T01:10:00"),
    ],
)
def test_cron_next_known_answers(expr: str, after: str, expected: str) -> None:
    assert cron_next(parse_cron(expr), t(after)) == t(expected)


def _matches(expr: str, when: datetime) -> bool:
    """The oracle: one minute at a time, straight from the definition."""
    cron = parse_cron(expr)
    return (
        when.minute in cron.minutes
        and when.hour in cron.hours
        and cron.day_matches(when)
    )


@pytest.mark.parametrize(
    "expr", ["*/7 * * * *", "0 */5 * * *", "15,45 2-4 * * sat,sun", "0 12 1,15 * 3"]
)
def test_next_and_latest_agree_with_a_minute_by_minute_search(expr: str) -> None:
    cron = parse_cron(expr)
    rng = random.Random(0)
    start = t("2026-01-01T00:00:00")
    for _ in range(20):
        now = start + timedelta(seconds=rng.randrange(0, 40 * 86400))
        nxt, latest = cron_next(cron, now), cron_latest(cron, now)
        assert latest <= now < nxt
        assert _matches(expr, nxt) and _matches(expr, latest)
        minute = latest + timedelta(minutes=1)
        while minute < nxt:  # nothing matches in between
            assert not _matches(expr, minute), minute
            minute += timedelta(minutes=1)


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("x * * * *", "not a number"),
        ("5-1 * * * *", "reversed"),
        ("*/0 * * * *", "step"),
        ("0 0 31 2 *", "never matches"),
    ],
)
def test_bad_cron_is_refused_naming_the_field(expr: str, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        parse_cron(expr)


def test_minimum_gap_and_the_interval_floor() -> None:
    assert min_gap_s(parse_cron("* * * * *")) == 60
    assert min_gap_s(parse_cron("0 */2 * * *")) == 7200
    assert min_gap_s(parse_cron("0 1,23 * * *")) == 2 * 3600  # across midnight
    with pytest.raises(ScheduleError, match="floor is 120"):
        Schedule(cron="* * * * *").check(min_interval_s=120)
    with pytest.raises(ScheduleError, match="at least 60"):
        Schedule(interval_s=59).check(min_interval_s=60)
    with pytest.raises(ScheduleError, match="exactly one"):
        Schedule(cron="0 * * * *", interval_s=60).check(min_interval_s=60)
    Schedule(interval_s=60).check(min_interval_s=60)


def test_interval_slots_count_from_the_anchor() -> None:
    s, anchor = Schedule(interval_s=60), t("2026-01-01T10:00:00")
    assert s.latest_slot(anchor, t("2026-01-01T09:59:59")) is None
    assert s.latest_slot(anchor, anchor) == anchor
    assert s.latest_slot(anchor, t("2026-01-01T10:05:30")) == t("2026-01-01T10:05:00")
    assert s.next_slot(anchor, t("2026-01-01T10:05:00")) == t("2026-01-01T10:06:00")
    assert s.next_slot(anchor, t("2026-01-01T09:00:00")) == anchor


def test_catch_up_is_one_slot_the_latest() -> None:
    """Down from 10:01 to 10:30: the slot at a tick is the latest, 10:30 only."""
    s, anchor = Schedule(interval_s=60), t("2026-01-01T10:00:00")
    assert s.latest_slot(anchor, t("2026-01-01T10:30:10")) == t("2026-01-01T10:30:00")
    c = Schedule(cron="0 * * * *")
    assert c.latest_slot(anchor, t("2026-01-02T07:59:00")) == t("2026-01-02T07:00:00")
    assert c.latest_slot(anchor, t("2026-01-01T10:59:00")) == anchor
    assert c.latest_slot(t("2026-01-01T10:00:01"), t("2026-01-01T10:59:00")) is None
