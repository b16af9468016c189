"""Keeping the daily rollups (``daily_usage``) in step with the intervals.

Whenever a batch rebuilds an instrument's intervals from time T, or moves its
``last_seen`` (open intervals count until then) past local midnight, the local
days whose figures may have changed are recomputed in the same transaction:
from the day that holds T minus the allowances (a run's preparation time
reaches back into the day before), or that held the old ``last_seen``, to the
day before the day of ``last_seen``. The open day itself (the one that holds
``last_seen``) gets no row from the collector, and any row it had is deleted:
the next heartbeat would make that row stale anyway, readers measure the open
day from intervals, and recomputing a busy instrument's whole day at every
batch made the collector's cost grow with the day's length. It is computed
once it is over, by the batch that moves ``last_seen`` past midnight. The
figures are ``instrumetry.domain.daily.days_of``'s, the ones the API measures
from intervals, so a stored day and a measured day are equal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import StoredDay, basis, days_of
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.metrics import Allowances
from instrumetry.domain.states import State

log = logging.getLogger(__name__)

ALLOWANCES = Allowances()
"""The API measures with the same defaults; the stored basis would tell if they ever differed."""
_REACH_BACK = max(ALLOWANCES.prep, ALLOWANCES.post)

# One row per institution, with the calendar once and its instruments as arrays:
# a batch of heartbeats from 10,000 instruments moves the last_seen of each, and
# reading and building each one's calendar took 240 ms for one institution's
# 10,000 (75 ms now).
_INSTRUMENTS = """
SELECT s.id, s.tz, s.workdays, s.day_start, s.day_end, s.holidays, s.extra_workdays,
       array_agg(i.id), array_agg(i.last_seen)
  FROM instruments i JOIN institutions s ON s.id = i.institution_id
 WHERE i.id = ANY(%s)
 GROUP BY s.id
"""
# Through intervals_overlapping (migration 0016): from the interval in force at
# each range's start, not from the instrument's first interval on.
_INTERVALS = """
SELECT r.id, iv.state, iv.start_time, iv.end_time
  FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS r(id, a, b)
 CROSS JOIN LATERAL intervals_overlapping(r.id, r.a, r.b) AS iv
 ORDER BY r.id, iv.start_time
"""
_DELETE = """
DELETE FROM daily_usage d USING unnest(%s::text[], %s::date[]) AS u(id, first)
 WHERE d.instrument_id = u.id AND d.day >= u.first
"""
_COLUMNS = (
    "instrument_id, day, on_h, on_scheduled_h, running_h, running_scheduled_h, effective_h, "
    "unknown_h, scheduled_h, working_day, day_on, known_until, basis"
)


def changed_from(change: datetime) -> datetime:
    """The earliest moment whose figures a change of the timeline at ``change`` can alter.

    A run starting at ``change`` makes the powered-on time up to the
    preparation allowance before it effective (and, symmetrically, the
    post-processing allowance); reaching back by the larger is exact.
    """
    return change - _REACH_BACK


def refresh(
    cur: psycopg.Cursor[TupleRow],
    changed: Mapping[str, datetime],
    moved: Mapping[str, datetime],
    *,
    open_day: bool = False,
) -> int:
    """Recompute the finished days of each instrument whose figures may have changed.

    ``changed`` is, per instrument, the earliest moment whose figures an
    interval change may alter (``changed_from`` of the change); ``moved`` the
    previous ``last_seen`` of those whose ``last_seen`` moved forward. Rows
    from the first such day on are deleted, and the days before the day of
    ``last_seen`` written again; ``open_day`` writes that day too (a rebuild
    does, once). Moving within a local day recomputes nothing (this spares
    the collector a day's computation per instrument per heartbeat); once
    ``last_seen`` passes local midnight, the days from the old ``last_seen``
    on are recomputed, so every finished day is stored final. Runs in the
    caller's transaction, under its row locks. Returns the days written.
    """
    if not changed and not moved:
        return 0
    plans: dict[str, tuple[WorkingCalendar, date, date, datetime]] = {}
    first_days: dict[str, date] = {}
    for instrument_id, last_seen, calendar in _instruments(cur, {*changed, *moved}):
        if calendar is None:
            first_days[instrument_id] = date.min
            continue
        last = None if last_seen is None else last_seen.astimezone(calendar.zone).date()
        starts = [changed[instrument_id]] if instrument_id in changed else []
        if instrument_id in moved:
            previous = moved[instrument_id]
            if last is not None and previous.astimezone(calendar.zone).date() < last:
                starts.append(previous)
        if not starts:
            continue
        first = min(starts).astimezone(calendar.zone).date()
        first_days[instrument_id] = first
        through = None if last is None else last if open_day else last - timedelta(days=1)
        if last_seen is not None and through is not None and first <= through:
            plans[instrument_id] = (calendar, first, through, last_seen)
    if not first_days:
        return 0
    ids = sorted(first_days)
    cur.execute(_DELETE, (ids, [first_days[i] for i in ids]))
    if not plans:
        return 0
    spans = {
        instrument_id: (calendar.day_span(first)[0], calendar.day_span(last)[1])
        for instrument_id, (calendar, first, last, _) in plans.items()
    }
    ids = sorted(plans)
    cur.execute(
        _INTERVALS,
        (
            ids,
            [spans[i][0] - ALLOWANCES.post for i in ids],
            [spans[i][1] + ALLOWANCES.prep for i in ids],
        ),
    )
    intervals: dict[str, list[StateInterval]] = {}
    for instrument_id, state, start, end in cur.fetchall():
        intervals.setdefault(instrument_id, []).append(StateInterval(State(state), start, end))
    written = 0
    with cur.copy(f"COPY daily_usage ({_COLUMNS}) FROM STDIN") as copy:
        for instrument_id in ids:
            calendar, _, _, last_seen = plans[instrument_id]
            stamp = basis(calendar, ALLOWANCES)
            for found in days_of(
                intervals.get(instrument_id, []),
                spans[instrument_id],
                last_seen,
                calendar,
                allowances=ALLOWANCES,
            ):
                day = StoredDay.of(found.usage)
                copy.write_row(
                    (
                        instrument_id,
                        found.day,
                        day.on_h,
                        day.on_scheduled_h,
                        day.running_h,
                        day.running_scheduled_h,
                        day.effective_h,
                        day.unknown_h,
                        day.scheduled_h,
                        day.working_day,
                        day.day_on,
                        last_seen,
                        stamp,
                    )
                )
                written += 1
    return written


def rebuild(
    conn: psycopg.Connection[TupleRow],
    instrument_id: str | None = None,
    start: date | None = None,
) -> tuple[int, int]:
    """Recompute the rollups of every instrument (or one), from ``start`` or its first interval.

    For data stored before rollups existed, or after a calendar change; the
    open day included, current until ``last_seen`` moves again. One
    transaction per instrument, under its row lock, so a running collector
    waits for it rather than racing it. Returns (instruments, days written).
    """
    ids = instrument_ids(conn, instrument_id)
    days = 0
    for found in ids:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT 1 FROM instruments WHERE id = %s FOR NO KEY UPDATE", (found,))
            cur.execute(
                """SELECT min(start_time), (SELECT s.tz FROM instruments i JOIN institutions s
                                                ON s.id = i.institution_id WHERE i.id = %s)
                     FROM intervals WHERE instrument_id = %s""",
                (found, found),
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                cur.execute("DELETE FROM daily_usage WHERE instrument_id = %s", (found,))
                continue
            first_interval, tz = row
            since = changed_from(first_interval)
            if start is not None:
                with contextlib.suppress(ConfigError):  # refresh names a bad calendar
                    since = max(since, WorkingCalendar(tz=tz).day_span(start)[0])
            days += refresh(cur, {found: since}, {}, open_day=True)
    return len(ids), days


def instrument_ids(conn: psycopg.Connection[TupleRow], instrument_id: str | None) -> list[str]:
    """Every registered instrument's id in order, or only ``instrument_id`` if registered."""
    rows = conn.execute(
        "SELECT id FROM instruments WHERE %(id)s::text IS NULL OR id = %(id)s ORDER BY id",
        {"id": instrument_id},
    ).fetchall()
    return [found for (found,) in rows]


def _instruments(
    cur: psycopg.Cursor[TupleRow], ids: set[str]
) -> list[tuple[str, datetime | None, WorkingCalendar | None]]:
    """Each of ``ids`` with its ``last_seen`` and its institution's calendar (None if unusable)."""
    cur.execute(_INSTRUMENTS, (sorted(ids),))
    found: list[tuple[str, datetime | None, WorkingCalendar | None]] = []
    for institution, *calendar_row, instrument_ids, seen in cur.fetchall():
        calendar = _calendar(institution, calendar_row)
        found += [
            (i, last_seen, calendar) for i, last_seen in zip(instrument_ids, seen, strict=True)
        ]
    return found


def _calendar(institution: str, row: Sequence[Any]) -> WorkingCalendar | None:
    """The institution's calendar, or None (logged) if it is unusable: never wedge a batch."""
    tz, workdays, day_start, day_end, holidays, extra = row
    try:
        return WorkingCalendar(
            tz=tz,
            workdays=frozenset(workdays),
            day_start=day_start,
            day_end=day_end,
            holidays=frozenset(holidays),
            extra_workdays=frozenset(extra),
        )
    except ConfigError as error:
        log.warning(
            "no daily rollups for the instruments of institution %s: bad calendar (%s)",
            institution,
            error,
        )
        return None
