"""Benchmark: a daily usage series of one instrument over a year, as the API computes it.

The API's series reads the instrument's intervals once, builds its timeline
once and lets each day read only its own stretch (``instrumetry.domain.daily.days_of``,
which the collector's daily rollups use too).
The reference, measured in the same run, is the straightforward way: one
``measure`` per day over the whole year's intervals. Both must give the same
figures; the benchmark checks that before it reports times.

    PYTHONPATH=. python -m bench.api_usage_series [--runs-per-day N] [--repeat N]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from api.usage import Step, Totals, buckets, quota_hours
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import days_of
from instrumetry.domain.intervals import StateInterval, derive
from instrumetry.domain.metrics import Allowances, measure
from instrumetry.domain.states import State

CALENDAR = WorkingCalendar(tz="Europe/Berlin")  # with both daylight-saving changes
YEAR = (CALENDAR.day_span(date(2026, 1, 1))[0], CALENDAR.day_span(date(2026, 12, 31))[1])
ALLOWANCES = Allowances()


def year_of_intervals(runs_per_day: int, seed: int) -> list[StateInterval]:
    """A busy instrument: on most days switched on, several runs, off at night; a few gaps."""
    rng = random.Random(seed)
    changes: list[tuple[datetime, State]] = []
    day = datetime(2026, 1, 1, tzinfo=UTC)
    while day < YEAR[1]:
        if rng.random() < 0.85:
            moment = day + timedelta(hours=7, minutes=rng.randrange(120))
            changes.append((moment, State.STANDBY))
            for _ in range(runs_per_day):
                moment += timedelta(minutes=rng.randrange(10, 60))
                changes.append((moment, State.RUNNING))
                moment += timedelta(minutes=rng.randrange(20, 90))
                changes.append((moment, State.STANDBY))
            changes.append((moment + timedelta(minutes=rng.randrange(5, 60)), State.OFF))
        if rng.random() < 0.03:
            changes.append((day + timedelta(hours=21), State.UNKNOWN))
        day += timedelta(days=1)
    return derive(changes)


def naive(intervals: list[StateInterval]) -> list[Totals]:
    return [
        Totals.of(
            measure(intervals, span, YEAR[1], CALENDAR, allowances=ALLOWANCES),
            quota_hours(1400, span, CALENDAR),
        )
        for _, span in buckets(YEAR, CALENDAR, Step.DAY)
    ]


def fast(intervals: list[StateInterval]) -> list[Totals]:
    days = days_of(intervals, YEAR, YEAR[1], CALENDAR, allowances=ALLOWANCES)
    return [Totals.of(day.usage, quota_hours(1400, day.span, CALENDAR)) for day in days]


def timed(
    function: Callable[[list[StateInterval]], list[Totals]],
    intervals: list[StateInterval],
    repeat: int,
) -> tuple[list[Totals], list[float]]:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = function(intervals)
        samples.append(time.perf_counter() - began)
    return result, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-day", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    intervals = year_of_intervals(args.runs_per_day, seed=1)
    expected, reference = timed(naive, intervals, max(1, args.repeat // 2))
    got, ours = timed(fast, intervals, args.repeat)
    for a, b in zip(expected, got, strict=True):
        for name in Totals.__dataclass_fields__:
            assert abs(getattr(a, name) - getattr(b, name)) < 1e-9, name
    whole = measure(intervals, YEAR, YEAR[1], CALENDAR, allowances=ALLOWANCES)
    assert abs(sum(t.effective_h for t in got) - whole.effective_h) < 1e-6
    ours_ms = statistics.median(ours) * 1000
    reference_ms = statistics.median(reference) * 1000
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"one instrument, {len(intervals):,} intervals in 2026, {len(got)} local days")
    print(f"daily series, domain.daily.days_of:   median {ours_ms:.0f} ms")
    print(f"reference, one measure per day:      median {reference_ms:.0f} ms")
    print(f"ratio: {reference_ms / ours_ms:.1f}x; figures identical, the days sum to the year")


if __name__ == "__main__":
    main()
