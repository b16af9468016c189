"""Sets of time as sorted, disjoint half-open spans ``[start, end)``.

Usage metrics are lengths of unions and intersections of such sets (ON ∩ W ∩ P
and so on, see DESIGN.md), so they are computed here once, exactly, with
aware datetimes. Every function returns a normalised set, in UTC.

UTC matters: Python subtracts and compares two datetimes that share a
``tzinfo`` by their wall clocks, so a run from 01:30 CEST to 03:30 CET would
last two hours instead of three. Spans from outside (a database session in
local time, a user's period) therefore go through ``normalize`` or ``utc``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

Span = tuple[datetime, datetime]
TimeSet = list[Span]


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC, where datetime arithmetic is elapsed time (see above)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: time sets need aware datetimes")
    return moment.astimezone(UTC)


def utc_span(span: Span) -> Span:
    return utc(span[0]), utc(span[1])


def normalize(spans: Iterable[Span]) -> TimeSet:
    """Convert spans to UTC, sort them, drop empty ones and merge those that overlap or touch."""
    merged: TimeSet = []
    for start, end in sorted(s for s in map(utc_span, spans) if s[0] < s[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def intersect(a: TimeSet, b: TimeSet) -> TimeSet:
    """The time in both ``a`` and ``b`` (both normalised)."""
    out: TimeSet = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: TimeSet, b: TimeSet) -> TimeSet:
    """The time in ``a`` but not in ``b`` (both normalised)."""
    out: TimeSet = []
    j = 0
    for start, end in a:
        cursor = start
        while j < len(b) and b[j][1] <= cursor:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def clip(spans: TimeSet, period: Span) -> TimeSet:
    """The part of ``spans`` inside ``period``."""
    return intersect(spans, normalize([period]))


def widen(spans: TimeSet, before: timedelta, after: timedelta) -> TimeSet:
    """Each span extended by ``before`` at its start and ``after`` at its end."""
    return normalize((start - before, end + after) for start, end in spans)


def seconds(spans: Iterable[Span]) -> float:
    """Total length in seconds."""
    return sum((end - start).total_seconds() for start, end in spans)


def overlaps(spans: TimeSet, window: Span) -> bool:
    """Whether normalised ``spans`` meet ``window``, by binary search.

    Equal to ``bool(intersect(spans, [window]))`` but logarithmic: counting the
    days with any ON time over a year asks this once per day, and a scan of the
    year's spans per day made annual reports quadratic in their intervals.
    """
    if window[0] >= window[1]:
        return False
    index = bisect.bisect_right(spans, window[0], key=lambda span: span[1])
    return index < len(spans) and spans[index][0] < window[1]
