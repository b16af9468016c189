"""Usage figures beyond one instrument and one period: sums, quotas, buckets, timelines.

Everything here is pure (no database, no clock), on top of the domain's
``measure``. The additive quantities (hours, day counts, pro-rated quota) of
several instruments or several days add up, and the ratios are recomputed
from the sums, never averaged: an institution's startup rate is its
instruments' powered-on working hours over their working hours.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.metrics import HOUR, Usage
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span, utc, utc_span


@dataclass(frozen=True, slots=True)
class Totals:
    """Additive usage quantities of one or more instruments over one or more periods."""

    period_h: float = 0.0
    scheduled_h: float = 0.0
    on_scheduled_h: float = 0.0
    running_scheduled_h: float = 0.0
    effective_h: float = 0.0
    external_h: float = 0.0
    unknown_h: float = 0.0
    quota_h: float = 0.0
    working_days: int = 0
    days_on: int = 0

    @classmethod
    def of(cls, usage: Usage, quota_h: float) -> Totals:
        return cls(
            period_h=usage.period_h,
            scheduled_h=usage.scheduled_h,
            on_scheduled_h=usage.on_scheduled_h,
            running_scheduled_h=usage.running_scheduled_h,
            effective_h=usage.effective_h,
            external_h=usage.external_h,
            unknown_h=usage.unknown_h,
            quota_h=quota_h,
            working_days=usage.working_days,
            days_on=usage.days_on,
        )

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @staticmethod
    def sum(parts: Iterable[Totals]) -> Totals:
        total = Totals()
        for part in parts:
            total += part
        return total


def ratio(part: float, whole: float) -> float | None:
    """``part / whole``, or None when ``whole`` is zero (the ratio is undefined)."""
    return part / whole if whole else None


def quota_hours(annual_h: float, period: Span, calendar: WorkingCalendar) -> float:
    """The annual quota pro-rated to ``period``: by the share of each local year it covers.

    A whole calendar year gets exactly ``annual_h``, leap or not, and the
    quota of a period is the sum of its days' quotas.
    """
    start, end = utc_span(period)
    total = 0.0
    for year in range(start.astimezone(calendar.zone).year, _last_day(end, calendar).year + 1):
        year_start = calendar.day_span(date(year, 1, 1))[0]
        year_end = calendar.day_span(date(year, 12, 31))[1]
        overlap = min(end, year_end) - max(start, year_start)
        total += annual_h * max(overlap, timedelta(0)) / (year_end - year_start)
    return total


class Step(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


def buckets(period: Span, calendar: WorkingCalendar, step: Step) -> list[tuple[str, Span]]:
    """The local days or months of ``calendar`` that ``period`` touches, clipped to it.

    Labels are ``YYYY-MM-DD`` or ``YYYY-MM``. A day is a local day, so a
    daylight-saving change gives a 23- or 25-hour bucket.
    """
    start, end = utc_span(period)
    out: list[tuple[str, Span]] = []
    for day in calendar.local_days((start, end)):
        if step is Step.DAY:
            label, first = day.isoformat(), day
        else:
            label, first = f"{day:%Y-%m}", day.replace(day=1)
            if out and out[-1][0] == label:
                continue
        last = day if step is Step.DAY else _month_end(first)
        span = (max(start, calendar.day_span(first)[0]), min(end, calendar.day_span(last)[1]))
        out.append((label, span))
    return out


def segments(
    intervals: Sequence[StateInterval], period: Span, known_until: datetime
) -> list[tuple[State, datetime, datetime]]:
    """The state of every moment of ``period``: stored intervals, gaps as ``unknown``.

    Open intervals end at ``known_until`` as in the metrics; time no interval
    covers is unknown, never off. Adjacent segments of one state are merged.
    """
    start, end = utc_span(period)
    out: list[tuple[State, datetime, datetime]] = []

    def add(state: State, a: datetime, b: datetime) -> None:
        if out and out[-1][0] is state and out[-1][2] == a:
            out[-1] = (state, out[-1][1], b)
        else:
            out.append((state, a, b))

    cursor = start
    for interval in sorted(intervals, key=lambda i: utc(i.start)):
        finish = utc(interval.end) if interval.end is not None else utc(known_until)
        a, b = max(utc(interval.start), cursor), min(finish, end)
        if a >= b:
            continue
        if a > cursor:
            add(State.UNKNOWN, cursor, a)
        add(interval.state, a, b)
        cursor = b
    if cursor < end:
        add(State.UNKNOWN, cursor, end)
    return out


def hours(span: Span) -> float:
    return (span[1] - span[0]).total_seconds() / HOUR


def _last_day(end: datetime, calendar: WorkingCalendar) -> date:
    return (end - timedelta(microseconds=1)).astimezone(calendar.zone).date()


def _month_end(first: date) -> date:
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)
