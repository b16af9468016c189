"""Report periods from ``from``/``to`` query parameters.

A date names a local day of each instrument's institution, because that is
how a report for "March" is meant: March in Shanghai, not March in UTC. A
date-time with an offset (RFC 3339) is an exact instant. ``to`` as a date is
inclusive (the period ends at local midnight after it), so ``from=to`` is a
one-day report.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import PlainValidator

from api.problems import InvalidParameter
from api.queries import InstrumentRecord
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.timeset import Span

_UTC = WorkingCalendar(tz="UTC")

YEARS = (1900, 9998)

MAX_PERIOD = timedelta(days=5 * 366)
"""Longer reports are split by the caller: they read every interval of the period at once."""


def parse_bound(value: object) -> date | datetime:
    """A date (``YYYY-MM-DD``) or an RFC 3339 date-time with offset, in UTC."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    bound = _parse(value.strip())
    # Far from datetime's limits, so shifting by a time zone or a day cannot overflow.
    if not YEARS[0] <= bound.year <= YEARS[1]:
        raise ValueError(f"year {bound.year} is outside {YEARS[0]}–{YEARS[1]}")
    return bound.astimezone(UTC) if isinstance(bound, datetime) else bound


def _parse(text: str) -> date | datetime:
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected a date (YYYY-MM-DD) or an RFC 3339 date-time, got {text!r}"
        ) from None
    if instant.tzinfo is None:
        raise ValueError(f"date-time {text!r} needs a UTC offset, e.g. 'Z' or '+08:00'")
    return instant


Bound = Annotated[
    date | datetime, PlainValidator(parse_bound, json_schema_input_type=date | datetime)
]


def check(start: date | datetime, end: date | datetime) -> None:
    """Reject a period that is wrong in every time zone, before any instrument is read.

    Two dates or two date-times compare the same way everywhere; a date
    against a date-time depends on the time zone and is left to ``resolve``.
    """
    if isinstance(start, datetime) == isinstance(end, datetime):
        resolve(start, end, _UTC)


def resolve(start: date | datetime, end: date | datetime, calendar: WorkingCalendar) -> Span:
    """The period ``[start, end)`` in UTC, dates taken as local days of ``calendar``."""
    begin = start if isinstance(start, datetime) else calendar.day_span(start)[0]
    finish = end if isinstance(end, datetime) else calendar.day_span(end)[1]
    if begin >= finish:
        if not isinstance(start, datetime) and not isinstance(end, datetime):
            raise InvalidParameter("to", "must not be before 'from' (both days count)")
        mixed = isinstance(start, datetime) != isinstance(end, datetime)
        zone = f" (dates taken in time zone {calendar.tz})" if mixed else ""
        raise InvalidParameter("to", f"must be after 'from'{zone}")
    if finish - begin > MAX_PERIOD:
        raise InvalidParameter("to", "the period may span at most 5 years; ask for it in parts")
    return begin, finish


def resolve_each(
    start: date | datetime, end: date | datetime, records: Iterable[InstrumentRecord]
) -> dict[str, Span]:
    """Each instrument's period (``resolve`` in its institution's calendar), by instrument id.

    Resolved once per institution: a platform's thousands of instruments share
    a handful.
    """
    by_institution: dict[str, Span] = {}
    spans: dict[str, Span] = {}
    for record in records:
        institution = record.institution
        if institution.id not in by_institution:
            by_institution[institution.id] = resolve(start, end, institution.calendar)
        spans[record.instrument.id] = by_institution[institution.id]
    return spans
