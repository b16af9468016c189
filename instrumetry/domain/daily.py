"""Usage per local day: the one implementation behind daily rollups and daily series.

The collector stores one row per instrument and local day (``daily_usage``)
and the API sums days into series and periods; both compute a day here, so a
stored day and a day measured from intervals are the same floats. A day is a
local day of the institution's calendar (23 or 25 hours across a
daylight-saving change), clipped to the period asked for.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval, Timeline, timeline
from instrumetry.domain.metrics import HOUR, Allowances, Usage, compute_usage
from instrumetry.domain.timeset import Span, utc_span


class LineSlicer:
    """Cut the part of a timeline that can matter for a span (spans overlapping it), cheaply.

    Time sets are sorted and disjoint, so a bisection finds the spans that
    overlap a day; ``compute_usage`` then clips exactly. This keeps a run of
    days linear in the number of intervals instead of quadratic.
    """

    def __init__(self, line: Timeline) -> None:
        self._sets = (line.on, line.running, line.unknown)
        self._ends = [[end for _, end in spans] for spans in self._sets]
        self._starts = [[start for start, _ in spans] for spans in self._sets]

    def __call__(self, span: Span) -> Timeline:
        on, running, unknown = (
            spans[bisect_right(ends, span[0]) : bisect_left(starts, span[1])]
            for spans, ends, starts in zip(self._sets, self._ends, self._starts, strict=True)
        )
        return Timeline(on=on, running=running, unknown=unknown)


@dataclass(frozen=True, slots=True)
class DayUsage:
    """The usage of one local ``day`` within ``span`` (the whole day unless clipped)."""

    day: date
    span: Span
    usage: Usage


def days_of(
    intervals: Sequence[StateInterval],
    period: Span,
    known_until: datetime,
    calendar: WorkingCalendar,
    *,
    allowances: Allowances,
    external_windows: Sequence[Span] = (),
) -> list[DayUsage]:
    """An instrument's usage per local day of ``period``, the first and last days clipped to it.

    ``intervals`` must cover ``period`` widened by the allowances. The
    timeline is built once and each day reads only its own stretch of it
    (widened by the allowances, which is all a day's effective time depends
    on), so a year of days costs about as much as one year-long ``measure``,
    and a day's figures do not depend on which other days were asked for.
    """
    start, end = utc_span(period)
    line = timeline(intervals, (start - allowances.post, end + allowances.prep), known_until)
    cut = LineSlicer(line)
    days = []
    for day in calendar.local_days((start, end)):
        whole = calendar.day_span(day)
        span = (max(start, whole[0]), min(end, whole[1]))
        around = (span[0] - allowances.post, span[1] + allowances.prep)
        usage = compute_usage(cut(around), span, calendar, allowances, external_windows)
        days.append(DayUsage(day, span, usage))
    return days


def total(parts: Iterable[Usage]) -> Usage:
    """The usage of consecutive periods as one: hours and day counts add, in order."""
    period_h = scheduled_h = on_h = on_scheduled_h = running_h = running_scheduled_h = 0.0
    effective_h = external_h = unknown_h = 0.0
    working_days = days_on = 0
    for part in parts:
        period_h += part.period_h
        scheduled_h += part.scheduled_h
        on_h += part.on_h
        on_scheduled_h += part.on_scheduled_h
        running_h += part.running_h
        running_scheduled_h += part.running_scheduled_h
        effective_h += part.effective_h
        external_h += part.external_h
        unknown_h += part.unknown_h
        working_days += part.working_days
        days_on += part.days_on
    return Usage(
        period_h=period_h,
        scheduled_h=scheduled_h,
        on_h=on_h,
        on_scheduled_h=on_scheduled_h,
        running_h=running_h,
        running_scheduled_h=running_scheduled_h,
        effective_h=effective_h,
        external_h=external_h,
        unknown_h=unknown_h,
        working_days=working_days,
        days_on=days_on,
    )


def basis(calendar: WorkingCalendar, allowances: Allowances) -> str:
    """A fingerprint of what a stored day depends on besides the intervals.

    A changed time zone, working window, holiday list or allowance makes every
    stored day stale; readers compare this fingerprint and measure such days
    from intervals until they are rebuilt. Sorted, so it is the same in every
    process (set order is not).
    """
    text = "|".join(
        (
            calendar.tz,
            ",".join(str(d) for d in sorted(calendar.workdays)),
            calendar.day_start.isoformat(),
            calendar.day_end.isoformat(),
            ",".join(d.isoformat() for d in sorted(calendar.holidays)),
            ",".join(d.isoformat() for d in sorted(calendar.extra_workdays)),
            str(allowances.prep.total_seconds()),
            str(allowances.post.total_seconds()),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StoredDay:
    """What a daily rollup keeps of one whole local day: every figure but external hours.

    External hours depend on service orders, imported after the fact, so they
    are not stored: readers measure a day with external order windows from
    intervals.
    """

    on_h: float
    on_scheduled_h: float
    running_h: float
    running_scheduled_h: float
    effective_h: float
    unknown_h: float
    scheduled_h: float
    working_day: bool
    day_on: bool

    @classmethod
    def of(cls, usage: Usage) -> StoredDay:
        return cls(
            on_h=usage.on_h,
            on_scheduled_h=usage.on_scheduled_h,
            running_h=usage.running_h,
            running_scheduled_h=usage.running_scheduled_h,
            effective_h=usage.effective_h,
            unknown_h=usage.unknown_h,
            scheduled_h=usage.scheduled_h,
            working_day=usage.working_days > 0,
            day_on=usage.days_on > 0,
        )

    def usage(self, span: Span) -> Usage:
        """The day's usage again, for the whole local day ``span`` and no external windows."""
        return Usage(
            period_h=(span[1] - span[0]).total_seconds() / HOUR,
            scheduled_h=self.scheduled_h,
            on_h=self.on_h,
            on_scheduled_h=self.on_scheduled_h,
            running_h=self.running_h,
            running_scheduled_h=self.running_scheduled_h,
            effective_h=self.effective_h,
            external_h=0.0,
            unknown_h=self.unknown_h,
            working_days=int(self.working_day),
            days_on=int(self.day_on),
        )
