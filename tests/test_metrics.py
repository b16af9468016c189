"""Usage metrics: hand-computed cases and the properties every report relies on."""

from __future__ import annotations

from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval, timeline
from instrumetry.domain.metrics import Usage, compute_usage, measure
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span

SHANGHAI = WorkingCalendar()
BERLIN = ZoneInfo("Europe/Berlin")
OFF, STANDBY, RUNNING, UNKNOWN = State.OFF, State.STANDBY, State.RUNNING, State.UNKNOWN


def sh(day: int, hour: int, minute: int = 0) -> datetime:
    """A local time in Shanghai in March 2026 (the 2nd is a Monday)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI.zone)


def days(calendar: WorkingCalendar, first: date, last: date) -> Span:
    return calendar.day_span(first)[0], calendar.day_span(last)[1]


def chain(start: datetime, *steps: tuple[State, datetime | None]) -> list[StateInterval]:
    """Intervals from ``start``: each step holds a state until the given end."""
    intervals = []
    for state, end in steps:
        intervals.append(StateInterval(state, start, end))
        if end is not None:
            start = end
    return intervals


MON, TUE = date(2026, 3, 2), date(2026, 3, 3)


def test_a_run_across_midnight() -> None:
    intervals = chain(
        sh(2, 0),
        (OFF, sh(2, 17)),
        (STANDBY, sh(2, 22)),
        (RUNNING, sh(3, 2)),
        (STANDBY, sh(3, 3)),
        (OFF, None),
    )
    usage = measure(intervals, days(SHANGHAI, MON, TUE), sh(3, 20), SHANGHAI)
    assert usage.scheduled_h == 20
    assert usage.on_scheduled_h == 1  # 17:00–18:00 on Monday
    assert usage.startup_rate == 0.05
    assert usage.utilisation == 0
    assert (usage.working_days, usage.days_on, usage.days_on_share) == (2, 2, 1.0)
    assert usage.on_h == 10
    assert usage.running_h == 4
    assert usage.effective_h == 5  # 21:30–02:30: the run and 30 min either side
    assert usage.unknown_h == 4  # after the agent was last heard from at 20:00
    assert usage.coverage == pytest.approx(44 / 48)
    monday = measure(intervals, days(SHANGHAI, MON, MON), sh(3, 20), SHANGHAI)
    tuesday = measure(intervals, days(SHANGHAI, TUE, TUE), sh(3, 20), SHANGHAI)
    assert (monday.effective_h, tuesday.effective_h) == (2.5, 2.5)


def test_preparation_before_midnight_counts_on_the_day_it_happened() -> None:
    intervals = chain(sh(2, 0), (OFF, sh(2, 23)), (STANDBY, sh(3, 0, 10)), (RUNNING, sh(3, 1)))
    monday = measure(intervals, days(SHANGHAI, MON, MON), sh(3, 1), SHANGHAI)
    tuesday = measure(intervals, days(SHANGHAI, TUE, TUE), sh(3, 1), SHANGHAI)
    both = measure(intervals, days(SHANGHAI, MON, TUE), sh(3, 1), SHANGHAI)
    assert monday.effective_h == pytest.approx(1 / 3)  # 23:40–24:00, before a run on Tuesday
    assert tuesday.effective_h == 1
    assert both.effective_h == pytest.approx(monday.effective_h + tuesday.effective_h)


def test_a_run_with_no_preparation_time() -> None:
    intervals = chain(sh(2, 0), (OFF, sh(2, 10)), (RUNNING, sh(2, 11)), (OFF, sh(3, 0)))
    usage = measure(intervals, days(SHANGHAI, MON, MON), sh(3, 0), SHANGHAI)
    assert usage.effective_h == 1
    assert usage.startup_rate == usage.utilisation == 0.1
    assert usage.days_on == 1
    assert usage.coverage == 1


def test_an_instrument_never_switched_on() -> None:
    usage = measure(chain(sh(1, 0), (OFF, None)), days(SHANGHAI, MON, TUE), sh(4, 0), SHANGHAI)
    assert (usage.startup_rate, usage.utilisation, usage.days_on_share) == (0, 0, 0)
    assert usage.effective_h == 0
    assert usage.coverage == 1
    assert usage.sharing_rate is None


def test_an_unknown_gap_lowers_coverage_and_is_never_off() -> None:
    intervals = chain(
        sh(2, 0),
        (OFF, sh(2, 8)),
        (STANDBY, sh(2, 12)),
        (UNKNOWN, sh(2, 14)),
        (STANDBY, sh(2, 18)),
        (OFF, sh(3, 0)),
    )
    usage = measure(intervals, days(SHANGHAI, MON, MON), sh(3, 0), SHANGHAI)
    assert usage.startup_rate == 0.8
    assert usage.unknown_h == 2
    assert usage.coverage == pytest.approx(22 / 24)


def test_a_silent_agent_leaves_its_open_interval_unknown() -> None:
    """Standby since 08:00, last heard from at 10:00: 2 h on, the rest unknown, none off."""
    usage = measure(
        [StateInterval(STANDBY, sh(2, 8), None)], days(SHANGHAI, MON, MON), sh(2, 10), SHANGHAI
    )
    assert usage.on_h == 2
    assert usage.unknown_h == 22
    assert usage.on_h + usage.unknown_h == usage.period_h  # nothing was counted as off
    assert usage.startup_rate == 0.2
    assert usage.coverage == pytest.approx(2 / 24)


def test_holidays_and_extra_workdays() -> None:
    calendar = WorkingCalendar(
        holidays=frozenset({date(2026, 3, 4)}), extra_workdays=frozenset({date(2026, 3, 7)})
    )
    week = days(calendar, MON, date(2026, 3, 8))
    always_on = chain(sh(1, 0), (STANDBY, sh(4, 10)), (RUNNING, sh(4, 12)), (STANDBY, sh(9, 0)))
    usage = measure(always_on, week, sh(9, 0), calendar)
    assert (usage.working_days, usage.days_on) == (5, 5)  # Wednesday off, Saturday worked
    assert usage.scheduled_h == 50
    assert usage.startup_rate == 1
    assert usage.utilisation == 0  # the only run was on the holiday
    assert usage.effective_h == 3  # which still counts: day and night, holiday or not


def test_external_hours_and_sharing_rate() -> None:
    intervals = chain(sh(2, 0), (OFF, sh(2, 9)), (RUNNING, sh(2, 13)), (OFF, sh(3, 0)))
    usage = measure(
        intervals,
        days(SHANGHAI, MON, MON),
        sh(3, 0),
        SHANGHAI,
        external_windows=[(sh(2, 12), sh(2, 15))],
    )
    assert (usage.effective_h, usage.external_h, usage.sharing_rate) == (4, 1, 0.25)


def berlin(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(("day", "day_hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_daylight_saving_days(day: date, day_hours: int) -> None:
    calendar = WorkingCalendar(tz="Europe/Berlin", extra_workdays=frozenset({day}))
    period = calendar.day_span(day)
    usage = measure([StateInterval(STANDBY, period[0], period[1])], period, period[1], calendar)
    assert usage.period_h == usage.on_h == day_hours
    assert usage.scheduled_h == 10
    assert usage.startup_rate == usage.coverage == 1


def test_a_run_across_the_autumn_change_lasts_three_hours() -> None:
    """01:30 CEST to 03:30 CET: two hours on the wall clock, three in fact."""
    calendar = WorkingCalendar(tz="Europe/Berlin")
    period = calendar.day_span(date(2026, 10, 25))
    intervals = chain(
        period[0], (OFF, berlin(10, 25, 1, 30)), (RUNNING, berlin(10, 25, 3, 30)), (OFF, period[1])
    )
    usage = measure(intervals, period, period[1], calendar)
    assert usage.running_h == usage.effective_h == 3
    assert usage.scheduled_h == 0  # a Sunday
    assert usage.startup_rate is None


def test_compute_usage_clips_a_wider_line_to_the_period() -> None:
    intervals = [StateInterval(STANDBY, sh(1, 0), sh(5, 0))]
    monday = days(SHANGHAI, MON, MON)
    wide = timeline(intervals, (sh(1, 0), sh(5, 0)), sh(5, 0))
    assert compute_usage(wide, monday, SHANGHAI) == measure(intervals, monday, sh(5, 0), SHANGHAI)


# Timelines of random intervals around Berlin's autumn change (2026-10-25).
FIRST_DAY = date(2026, 10, 23)
ORIGIN = berlin(10, 23, 22).astimezone(UTC)  # two hours before the first inner midnight

states = st.sampled_from([OFF, STANDBY, RUNNING, UNKNOWN])
steps = st.lists(
    st.tuples(st.integers(1, 36).map(lambda n: 5 * n), states), min_size=1, max_size=60
)


def build(step_list: list[tuple[int, State]], open_end: bool) -> list[StateInterval]:
    intervals = []
    start = ORIGIN
    for minutes, state in step_list:
        end = start + timedelta(minutes=minutes)
        intervals.append(StateInterval(state, start, end))
        start = end
    if open_end:
        last = intervals[-1]
        intervals[-1] = StateInterval(last.state, last.start, None)
    return intervals


ADDITIVE = (
    "period_h",
    "scheduled_h",
    "on_h",
    "on_scheduled_h",
    "running_h",
    "running_scheduled_h",
    "effective_h",
    "external_h",
    "unknown_h",
    "working_days",
    "days_on",
)


@settings(max_examples=150, deadline=None)
@given(
    steps,
    st.tuples(st.booleans(), st.integers(0, 6000)),
    st.integers(1, 5),
    st.frozensets(st.integers(0, 6)),
    st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 600)), max_size=3),
)
def test_a_period_is_the_sum_of_its_days(
    step_list: list[tuple[int, State]],
    known: tuple[bool, int],
    day_count: int,
    workdays: frozenset[int],
    orders: list[tuple[int, int]],
) -> None:
    """Additive quantities of several local days equal the sum over each day.

    This is what lets daily rollups be summed into monthly reports; the days
    include Berlin's autumn change (a 25-hour day).
    """
    open_end, known_after = known
    calendar = WorkingCalendar(tz="Europe/Berlin", workdays=workdays)
    intervals = build(step_list, open_end)
    known_until = ORIGIN + timedelta(minutes=known_after)
    external = [
        (ORIGIN + timedelta(minutes=s), ORIGIN + timedelta(minutes=s + n)) for s, n in orders
    ]
    local_days = [FIRST_DAY + timedelta(days=n) for n in range(day_count)]

    def usage(period: Span) -> Usage:
        return measure(intervals, period, known_until, calendar, external_windows=external)

    whole = usage(days(calendar, local_days[0], local_days[-1]))
    parts = [usage(calendar.day_span(day)) for day in local_days]
    for name in ADDITIVE:
        assert getattr(whole, name) == pytest.approx(sum(getattr(p, name) for p in parts)), name
    for part in [whole, *parts]:
        check_bounds(part)


def check_bounds(usage: Usage) -> None:
    for ratio in (usage.startup_rate, usage.utilisation, usage.days_on_share, usage.coverage):
        assert ratio is None or 0 <= ratio <= 1 + 1e-9
    assert usage.running_scheduled_h <= usage.on_scheduled_h <= usage.scheduled_h + 1e-9
    assert usage.running_h <= usage.effective_h + 1e-9 <= usage.on_h + 2e-9
    assert usage.external_h <= usage.effective_h + 1e-9
    assert usage.on_h + usage.unknown_h <= usage.period_h + 1e-9
    assert usage.days_on <= usage.working_days
    assert len(astuple(usage)) == len(ADDITIVE)
