"""Working calendars: local days, holidays, extra workdays, daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.timeset import seconds

EVERY_DAY = frozenset(range(7))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def hours(spans: list[tuple[datetime, datetime]]) -> float:
    return seconds(spans) / 3600


def test_default_week_in_shanghai() -> None:
    calendar = WorkingCalendar()
    week = calendar.day_span(date(2026, 3, 2))[0], calendar.day_span(date(2026, 3, 8))[1]
    windows = calendar.windows(week)
    assert len(windows) == 5
    # 08:00–18:00 in UTC+8 is 00:00–10:00 UTC.
    assert windows[0] == (utc(2026, 3, 2, 0), utc(2026, 3, 2, 10))
    assert hours(windows) == 50
    assert len(calendar.working_days(week)) == 5


def test_holiday_and_extra_workday() -> None:
    calendar = WorkingCalendar(
        holidays=frozenset({date(2026, 3, 4)}), extra_workdays=frozenset({date(2026, 3, 7)})
    )
    week = calendar.day_span(date(2026, 3, 2))[0], calendar.day_span(date(2026, 3, 8))[1]
    days = calendar.working_days(week)
    assert days == [date(2026, 3, d) for d in (2, 3, 5, 6, 7)]
    assert hours(calendar.windows(week)) == 50


def test_period_inside_a_day_clips_the_window() -> None:
    calendar = WorkingCalendar()
    period = utc(2026, 3, 2, 3), utc(2026, 3, 2, 4, 30)  # 11:00–12:30 local
    assert hours(calendar.windows(period)) == 1.5
    assert calendar.local_days(period) == [date(2026, 3, 2)]


def test_a_utc_day_overlaps_two_local_days() -> None:
    calendar = WorkingCalendar()
    assert calendar.local_days((utc(2026, 3, 2), utc(2026, 3, 3))) == [
        date(2026, 3, 2),
        date(2026, 3, 3),
    ]


def test_empty_period_has_no_days() -> None:
    calendar = WorkingCalendar()
    instant = utc(2026, 3, 2, 5)
    assert calendar.local_days((instant, instant)) == []
    assert calendar.windows((instant, instant)) == []


@pytest.mark.parametrize(
    ("day", "day_hours", "night_window_hours"),
    [
        (date(2026, 3, 29), 23, 2),  # 02:00 CET jumps to 03:00 CEST
        (date(2026, 10, 25), 25, 4),  # 03:00 CEST falls back to 02:00 CET
        (date(2026, 3, 30), 24, 3),
    ],
)
def test_daylight_saving_days_in_berlin(day: date, day_hours: int, night_window_hours: int) -> None:
    span = WorkingCalendar(tz="Europe/Berlin").day_span(day)
    assert (span[1] - span[0]) == timedelta(hours=day_hours)
    # A window across the change is as long as the clocks on the wall make it.
    night = WorkingCalendar(
        tz="Europe/Berlin", workdays=EVERY_DAY, day_start=time(1), day_end=time(4)
    )
    assert hours(night.windows(span)) == night_window_hours
    # 08:00–18:00 is never touched by the change.
    office = WorkingCalendar(tz="Europe/Berlin", workdays=EVERY_DAY)
    assert hours(office.windows(span)) == 10


def test_bad_calendars_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        WorkingCalendar(tz="Mars/Olympus")
    with pytest.raises(ConfigError, match="start before it ends"):
        WorkingCalendar(day_start=time(18), day_end=time(8))


@given(
    st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 12, 31)),
    st.integers(1, 40),
    st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
)
def test_windows_of_a_period_are_those_of_its_days(first: date, days: int, tz: str) -> None:
    calendar = WorkingCalendar(tz=tz)
    period = calendar.day_span(first)[0], calendar.day_span(first + timedelta(days=days - 1))[1]
    local_days = calendar.local_days(period)
    assert len(local_days) == days
    per_day = sum(hours(calendar.windows(calendar.day_span(d))) for d in local_days)
    assert hours(calendar.windows(period)) == pytest.approx(per_day)
    assert hours(calendar.windows(period)) == 10 * len(calendar.working_days(period))
