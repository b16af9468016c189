"""Reading the registry and the derived intervals, as domain objects.

The only module of the API that writes SQL for reports, so the tables the API
depends on (see ``SCHEMA_VERSION``) are visible in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.classify import Thresholds
from instrumetry.domain.daily import StoredDay
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.registry import Category, Institution, Instrument
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span

SCHEMA_VERSION = 12
"""The newest migration whose tables the API reads (0012_agent_key_history.sql; monthly
rollups come from 0011, daily_usage from 0008, institutions' regions from 0009)."""


@dataclass(frozen=True, slots=True)
class InstrumentRecord:
    """An instrument with its institution and when its agent was last heard from."""

    instrument: Instrument
    institution: Institution
    last_seen: datetime | None
    annual_quota_h: float | None = None
    """The instrument's own standard annual hours; None: its category's."""
    region: str | None = None
    """Its institution's region, which capacity is grouped by; None: not recorded."""

    @property
    def quota_h(self) -> float:
        """Standard annual hours in force (定额机时)."""
        own = self.annual_quota_h
        return own if own is not None else self.instrument.category.annual_quota_h


@asynccontextmanager
async def snapshot(conn: AsyncConnection[Any]) -> AsyncIterator[None]:
    """A read-only transaction that sees one state, so a report never mixes two."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


async def schema_version(conn: AsyncConnection[Any]) -> int | None:
    """The newest applied migration, or None if the database was never migrated."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return None
    cur = await conn.execute("SELECT max(version) FROM schema_migrations")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def institution_exists(conn: AsyncConnection[Any], institution_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM institutions WHERE id = %s", (institution_id,))
    return await cur.fetchone() is not None


async def instruments(
    conn: AsyncConnection[Any],
    institution_id: str | None = None,
    instrument_id: str | None = None,
) -> list[InstrumentRecord]:
    """Every instrument (of one institution, or the one instrument, if given), ordered by id.

    Institutions are read apart, once each: a platform has thousands of
    instruments but a handful of calendars, each with its holiday list. Two
    statements: run it in a ``snapshot``, as every report does.
    """
    where = """WHERE (%(institution)s::text IS NULL OR i.institution_id = %(institution)s)
                 AND (%(instrument)s::text IS NULL OR i.id = %(instrument)s)"""
    params = {"institution": institution_id, "instrument": instrument_id}
    cur = await conn.execute(
        f"""SELECT s.id, s.name, s.tz, s.workdays, s.day_start, s.day_end,
                   s.holidays, s.extra_workdays, s.region
              FROM institutions s
             WHERE s.id IN (SELECT i.institution_id FROM instruments i {where})""",
        params,
    )
    institutions = {row[0]: (_institution(row[:8]), row[8]) for row in await cur.fetchall()}
    cur = await conn.execute(
        f"""SELECT i.id, i.name, i.model, i.category,
                   i.standby_w, i.run_w, i.hysteresis_w, i.min_dwell_s, i.last_seen,
                   i.annual_quota_h, i.institution_id
              FROM instruments i {where}
             ORDER BY i.id""",
        params,
    )
    records = []
    for row in await cur.fetchall():
        institution, region = institutions[row[10]]
        instrument = Instrument(
            id=row[0],
            institution_id=institution.id,
            name=row[1],
            model=row[2],
            category=Category(row[3]),
            thresholds=Thresholds(
                standby_w=row[4], run_w=row[5], hysteresis_w=row[6], min_dwell_s=row[7]
            ),
        )
        records.append(InstrumentRecord(instrument, institution, row[8], row[9], region))
    return records


def _institution(row: Sequence[Any]) -> Institution:
    institution_id, name, tz, workdays, day_start, day_end, holidays, extra = row
    try:
        calendar = WorkingCalendar(
            tz=tz,
            workdays=frozenset(workdays),
            day_start=day_start,
            day_end=day_end,
            holidays=frozenset(holidays),
            extra_workdays=frozenset(extra),
        )
    except ConfigError as error:
        raise ConfigError(f"institution {institution_id!r} has a bad calendar: {error}") from None
    return Institution(id=institution_id, name=name, calendar=calendar)


async def intervals(
    conn: AsyncConnection[Any], instrument_ids: Sequence[str], span: Span
) -> dict[str, list[StateInterval]]:
    """Each instrument's intervals that overlap ``span``, in time order."""
    cur = await conn.execute(
        """SELECT r.id, iv.state, iv.start_time, iv.end_time
             FROM unnest(%s::text[]) AS r(id)
            CROSS JOIN LATERAL intervals_overlapping(r.id, %s, %s) AS iv
            ORDER BY r.id, iv.start_time""",
        (sorted(set(instrument_ids)), span[0], span[1]),
    )
    found: defaultdict[str, list[StateInterval]] = defaultdict(list)
    for instrument_id, state, start, end in await cur.fetchall():
        found[instrument_id].append(StateInterval(State(state), start, end))
    return dict(found)


async def institution(conn: AsyncConnection[Any], institution_id: str) -> Institution | None:
    """One institution with its calendar, or None if there is none with this id."""
    cur = await conn.execute(
        """SELECT id, name, tz, workdays, day_start, day_end, holidays, extra_workdays
           FROM institutions WHERE id = %s""",
        (institution_id,),
    )
    row = await cur.fetchone()
    return None if row is None else _institution(row)


async def external_windows(
    conn: AsyncConnection[Any], instrument_ids: Sequence[str], period: Span
) -> dict[str, list[Span]]:
    """Each instrument's external service order windows that overlap ``period``.

    External service hours are effective hours inside these windows
    (DESIGN.md). The orders are the sharing platform's, imported into
    ``service_orders`` (migration 0005, with the orders API): one row per
    order, ``external`` true for customers outside the owner institution.
    """
    cur = await conn.execute(
        """SELECT instrument_id, starts_at, ends_at FROM service_orders
           WHERE external AND instrument_id = ANY(%s) AND starts_at < %s AND ends_at > %s
           ORDER BY instrument_id, starts_at""",
        (list(instrument_ids), period[1], period[0]),
    )
    found: defaultdict[str, list[Span]] = defaultdict(list)
    for instrument_id, start, end in await cur.fetchall():
        found[instrument_id].append((start, end))
    return dict(found)


async def intervals_within(
    conn: AsyncConnection[Any], ranges: Mapping[str, Sequence[Span]]
) -> dict[str, list[StateInterval]]:
    """Each instrument's intervals that overlap any of its ``ranges``, in time order, once each."""
    ids = [key for key, spans in ranges.items() for _ in spans]
    starts = [span[0] for spans in ranges.values() for span in spans]
    ends = [span[1] for spans in ranges.values() for span in spans]
    cur = await conn.execute(
        """SELECT DISTINCT r.id, iv.state, iv.start_time, iv.end_time
             FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS r(id, a, b)
            CROSS JOIN LATERAL intervals_overlapping(r.id, r.a, r.b) AS iv
            ORDER BY r.id, iv.start_time""",
        (ids, starts, ends),
    )
    found: defaultdict[str, list[StateInterval]] = defaultdict(list)
    for instrument_id, state, start, end in await cur.fetchall():
        found[instrument_id].append(StateInterval(State(state), start, end))
    return dict(found)


@dataclass(frozen=True, slots=True)
class Rollup:
    """One stored day of ``daily_usage`` (the collector keeps it; see collector/rollups.py)."""

    stored: StoredDay
    known_until: datetime
    """The instrument's ``last_seen`` when the day was computed."""
    basis: str
    """``instrumetry.domain.daily.basis`` of the calendar and allowances it was computed with."""


async def rollups(
    conn: AsyncConnection[Any], instrument_ids: Sequence[str], first: date, last: date
) -> dict[str, dict[date, Rollup]]:
    """Each instrument's stored days from ``first`` to ``last`` (inclusive), by day."""
    cur = await conn.execute(
        """SELECT instrument_id, day, on_h, on_scheduled_h, running_h, running_scheduled_h,
                  effective_h, unknown_h, scheduled_h, working_day, day_on, known_until, basis
             FROM daily_usage
            WHERE instrument_id = ANY(%s) AND day BETWEEN %s AND %s""",
        (list(instrument_ids), first, last),
    )
    found: defaultdict[str, dict[date, Rollup]] = defaultdict(dict)
    for instrument_id, day, *figures, known_until, stamp in await cur.fetchall():
        found[instrument_id][day] = Rollup(StoredDay(*figures), known_until, stamp)
    return dict(found)


@dataclass(frozen=True, slots=True)
class RollupRun:
    """Consecutive whole local days of one instrument whose stored rows may be summed."""

    instrument_id: str
    first: date
    last: date
    basis: str
    """The fingerprint a row must carry (``instrumetry.domain.daily.basis``)."""
    tz: str
    """The institution's time zone, to find where each day ends."""
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class RollupTotal:
    """The sums of a run's valid stored days, and the stored days that are not valid."""

    days: int
    on_h: float
    on_scheduled_h: float
    running_h: float
    running_scheduled_h: float
    effective_h: float
    unknown_h: float
    scheduled_h: float
    working_days: int
    days_on: int
    invalid: list[date]
    """The stored days of the run that are not valid, in no particular order."""


# A stored day is valid when computed with the current calendar and known as far as its end
# (computed from the day and the time zone) or as far as the instrument is now: the same
# test as api.daily._split applies row by row. The cheap comparison with last_seen comes
# first: after a rebuild it holds for most rows, which then need no time zone conversion.
_RUN_ROWS = """
  FROM unnest(%s::int[], %s::text[], %s::date[], %s::date[], %s::text[], %s::text[],
              %s::timestamptz[]) AS r(n, instrument_id, first_day, last_day, basis, tz, last_seen)
  JOIN daily_usage d ON d.instrument_id = r.instrument_id
                    AND d.day BETWEEN r.first_day AND r.last_day
  CROSS JOIN LATERAL (
      SELECT d.basis = r.basis
             AND (coalesce(d.known_until = r.last_seen, false)
                  OR d.known_until >= ((d.day + 1)::timestamp AT TIME ZONE r.tz)) AS ok
  ) v"""


def _run_params(runs: Sequence[RollupRun]) -> tuple[list[Any], ...]:
    return (
        list(range(len(runs))),
        [r.instrument_id for r in runs],
        [r.first for r in runs],
        [r.last for r in runs],
        [r.basis for r in runs],
        [r.tz for r in runs],
        [r.last_seen for r in runs],
    )


async def rollup_totals(conn: AsyncConnection[Any], runs: Sequence[RollupRun]) -> list[RollupTotal]:
    """Each run's valid stored days summed in PostgreSQL, in the order of ``runs``.

    A year of 2,000 instruments is ~730,000 rows: summing them where they are
    instead of reading them into Python is what makes period totals fast.
    """
    cur = await conn.execute(
        f"""SELECT r.n, count(*) FILTER (WHERE v.ok),
                  coalesce(sum(d.on_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.on_scheduled_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.running_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.running_scheduled_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.effective_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.unknown_h) FILTER (WHERE v.ok), 0),
                  coalesce(sum(d.scheduled_h) FILTER (WHERE v.ok), 0),
                  count(*) FILTER (WHERE v.ok AND d.working_day),
                  count(*) FILTER (WHERE v.ok AND d.day_on),
                  coalesce(array_agg(d.day) FILTER (WHERE NOT v.ok), '{{}}')
             {_RUN_ROWS}
            GROUP BY r.n""",
        _run_params(runs),
    )
    found = [RollupTotal(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, []) for _ in runs]
    for n, *figures in await cur.fetchall():
        found[n] = RollupTotal(*figures)
    return found


@dataclass(frozen=True, slots=True)
class MonthTotal:
    """The sums of a run's valid stored months, and which months they are."""

    months: list[date] | None
    """The first day of each valid month, in no particular order; None if all are valid."""
    total: RollupTotal
    """Their figures; ``days`` counts their days, ``invalid`` is empty."""


async def month_totals(
    conn: AsyncConnection[Any], runs: Sequence[tuple[RollupRun, int]]
) -> list[MonthTotal]:
    """Each run's valid stored months (``monthly_usage``) summed, in the order of ``runs``.

    Each run comes with the number of whole months it holds: when all are
    valid, as after a rebuild, their list is not sent back.

    A month is valid when it lies whole within the run, every one of its days
    is stored under the run's basis and time zone, and every day is final
    (known as far as its own end): then each of its days passes the test of
    ``rollup_totals``, and the month row, the sum of those days kept by
    triggers on ``daily_usage``, stands for them. A year is 12 rows per
    instrument instead of 365.
    """
    cur = await conn.execute(
        """SELECT r.n, sum(m.days), sum(m.on_h), sum(m.on_scheduled_h), sum(m.running_h),
                  sum(m.running_scheduled_h), sum(m.effective_h), sum(m.unknown_h),
                  sum(m.scheduled_h), sum(m.working_days), sum(m.days_on), '{}'::date[],
                  CASE WHEN count(*) < min(r.months) THEN array_agg(m.month) END
             FROM unnest(%s::int[], %s::text[], %s::date[], %s::date[], %s::text[], %s::text[],
                         %s::int[]) AS r(n, instrument_id, first_day, last_day, basis, tz, months)
             JOIN monthly_usage m ON m.instrument_id = r.instrument_id
                                 AND m.month BETWEEN r.first_day AND r.last_day
            WHERE (m.month + interval '1 month')::date - 1 <= r.last_day
              AND m.basis = r.basis AND m.tz = r.tz
              AND m.days = (m.month + interval '1 month')::date - m.month
              AND m.final_days = m.days
            GROUP BY r.n""",
        (*_run_params([run for run, _ in runs])[:6], [months for _, months in runs]),
    )
    none = RollupTotal(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, [])
    found = [MonthTotal([], none) for _ in runs]
    for n, *figures, months in await cur.fetchall():
        found[n] = MonthTotal(months, RollupTotal(*figures))
    return found


async def valid_rollup_days(
    conn: AsyncConnection[Any], runs: Sequence[RollupRun]
) -> list[set[date]]:
    """Each run's valid stored days, in the order of ``runs``.

    Needed only when a run has days without any stored row, which the counts
    of ``rollup_totals`` cannot place.
    """
    cur = await conn.execute(
        f"SELECT r.n, d.day {_RUN_ROWS} WHERE v.ok",
        _run_params(runs),
    )
    found: list[set[date]] = [set() for _ in runs]
    for n, day in await cur.fetchall():
        found[n].add(day)
    return found
