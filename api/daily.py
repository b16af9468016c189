"""Usage per local day, read from the daily rollups where they hold, measured elsewhere.

A whole local day is read from ``daily_usage`` (the collector keeps it in step
with the intervals) when its row was computed with the institution's current
calendar and allowances and is known as far as the instrument is now. Every
other day is measured from intervals with the same domain function the
collector uses (``instrumetry.domain.daily.days_of``), so both ways give the
same figures:
- the first and last days of a period that cuts them;
- days with an external service order window: external hours depend on
  orders, imported after the fact, so rollups do not hold them;
- days without a current row: before rollups were built, after a calendar
  change, after the instrument was last heard from, and the instrument's
  open day, the one that holds ``last_seen`` (the collector stores a day
  once ``last_seen`` has passed its end; a rollup rebuild also writes the
  open day, which stays current until ``last_seen`` moves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from api import queries
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import DayUsage, basis, days_of, total
from instrumetry.domain.metrics import HOUR, Allowances, Usage
from instrumetry.domain.timeset import Span

NEVER = datetime.min.replace(tzinfo=UTC)
"""``known_until`` of an instrument never heard from: its open intervals are unknown."""
ONE_DAY = timedelta(days=1)


async def measure_days(
    conn: AsyncConnection[Any],
    records: Sequence[queries.InstrumentRecord],
    spans: Mapping[str, Span],
    windows: Mapping[str, Sequence[Span]],
    allowances: Allowances,
) -> dict[str, list[DayUsage]]:
    """Each instrument's usage per local day of its span, in day order.

    Runs in the caller's snapshot, so the rollups and intervals it reads are
    one state.
    """
    if not records:
        return {}
    grids = _grids(records, spans)
    first = min(grid[0][0] for grid in grids.values())
    last = max(grid[-1][0] for grid in grids.values())
    stored = await queries.rollups(conn, list(spans), first, last)
    stamps = _stamps(records, allowances)
    read: dict[str, dict[date, DayUsage]] = {}
    ranges: dict[str, list[Span]] = {}
    for record in records:
        key, calendar = record.instrument.id, record.institution.calendar
        read[key], ranges[key] = _split(
            record,
            spans[key],
            grid=grids[calendar.tz, spans[key]],
            stored=stored.get(key, {}),
            windows=windows.get(key, ()),
            stamp=stamps[record.institution.id],
        )
    wanted = {
        key: [(a - allowances.post, b + allowances.prep) for a, b in found]
        for key, found in ranges.items()
        if found
    }
    intervals = await queries.intervals_within(conn, wanted) if wanted else {}
    out: dict[str, list[DayUsage]] = {}
    for record in records:
        key = record.instrument.id
        found = dict(read[key])
        for span in ranges[key]:
            for day in days_of(
                intervals.get(key, []),
                span,
                record.last_seen or NEVER,
                record.institution.calendar,
                allowances=allowances,
                external_windows=windows.get(key, ()),
            ):
                found[day.day] = day
        out[key] = [found[day] for day in sorted(found)]
    return out


async def measure_totals(
    conn: AsyncConnection[Any],
    records: Sequence[queries.InstrumentRecord],
    spans: Mapping[str, Span],
    windows: Mapping[str, Sequence[Span]],
    allowances: Allowances,
) -> dict[str, Usage]:
    """Each instrument's usage over its span as one total, for reports that need no series.

    The same days as ``measure_days`` come from rollups, but PostgreSQL sums
    them instead of handing every row to Python: whole calendar months from
    the monthly rollups (``queries.month_totals``, 12 rows an instrument-year),
    the other days from the daily ones (``queries.rollup_totals``); only the
    days neither can vouch for are measured from intervals and added. Sums are
    in another order than ``measure_days``, so totals may differ from its sum
    in the last bits of a float. Runs in the caller's snapshot.
    """
    if not records:
        return {}
    grids = _grids(records, spans)
    stamps = _stamps(records, allowances)
    runs: list[_Run] = []
    # Days to measure from intervals, by instrument: first those no run holds.
    measured: dict[str, list[tuple[date, Span]]] = {}
    # Instruments without orders share their runs: splitting a grid is a loop over its days.
    shared: dict[tuple[str, Span], _Split] = {}
    for record in records:
        key, calendar = record.instrument.id, record.institution.calendar
        span, stamp = spans[key], stamps[record.institution.id]
        ordered = _order_days(calendar, span, windows.get(key, ()))
        if ordered:
            split = _split_grid(grids[calendar.tz, span], span, ordered)
        elif (calendar.tz, span) in shared:
            split = shared[calendar.tz, span]
        else:
            split = shared[calendar.tz, span] = _split_grid(grids[calendar.tz, span], span, set())
        measured[key] = list(split.others)
        for days, months in split.runs:
            first, last = days[0][0], days[-1][0]
            query = queries.RollupRun(key, first, last, stamp, calendar.tz, record.last_seen)
            runs.append(_Run(query, days, months))
    read: dict[str, list[Usage]] = {record.instrument.id: [] for record in records}
    runs = await _read_months(conn, runs, read)
    sums = await queries.rollup_totals(conn, [r.query for r in runs]) if runs else []
    # Days without a stored row are neither valid nor invalid: only the valid days say which.
    unplaced = [
        n
        for n, found in enumerate(sums)
        if found.days and found.days + len(found.invalid) != len(runs[n].days)
    ]
    placed = (
        await queries.valid_rollup_days(conn, [runs[n].query for n in unplaced]) if unplaced else []
    )
    valid = dict(zip(unplaced, placed, strict=True))
    for n, found in enumerate(sums):
        run_days, key = runs[n].days, runs[n].query.instrument_id
        if n in valid:
            missing = [(day, whole) for day, whole in run_days if day not in valid[n]]
        elif found.days:
            bad = set(found.invalid)
            missing = [(day, whole) for day, whole in run_days if day in bad] if bad else []
        else:
            measured[key] += run_days
            continue
        measured[key] += missing
        seconds = _seconds(run_days) - sum((b - a).total_seconds() for _, (a, b) in missing)
        read[key].append(_stored_total(found, seconds))
    ranges = {
        key: _merged(spans[key], [w for _, w in sorted(days)]) for key, days in measured.items()
    }
    wanted = {
        key: [(a - allowances.post, b + allowances.prep) for a, b in found]
        for key, found in ranges.items()
        if found
    }
    intervals = await queries.intervals_within(conn, wanted) if wanted else {}
    out: dict[str, Usage] = {}
    for record in records:
        key = record.instrument.id
        parts = list(read[key])
        for span in ranges[key]:
            parts.extend(
                day.usage
                for day in days_of(
                    intervals.get(key, []),
                    span,
                    record.last_seen or NEVER,
                    record.institution.calendar,
                    allowances=allowances,
                    external_windows=windows.get(key, ()),
                )
            )
        out[key] = total(parts)
    return out


Day = tuple[date, Span]
"""A local day and its whole extent in UTC."""
Month = tuple[date, int, int, float]
"""A whole calendar month within a run: its first day, its days' slice of the run, its
length in seconds."""


@dataclass(frozen=True, slots=True)
class _Split:
    """A grid's runs of days that rollups may give, each with its whole months; other days."""

    runs: list[tuple[list[Day], list[Month]]]
    others: list[Day]


@dataclass(frozen=True, slots=True)
class _Run:
    query: queries.RollupRun
    days: list[Day]
    months: list[Month]


async def _read_months(
    conn: AsyncConnection[Any], runs: Sequence[_Run], read: dict[str, list[Usage]]
) -> list[_Run]:
    """Add to ``read`` the valid stored months of ``runs``; return the runs of the other days."""
    holding = [run for run in runs if run.months]
    totals = (
        await queries.month_totals(conn, [(run.query, len(run.months)) for run in holding])
        if holding
        else []
    )
    left = [run for run in runs if not run.months]
    for run, found in zip(holding, totals, strict=True):
        if found.months is None:
            kept = run.months
        else:
            valid = set(found.months)
            kept = [month for month in run.months if month[0] in valid]
        if kept:
            seconds = sum(month[3] for month in kept)
            read[run.query.instrument_id].append(_stored_total(found.total, seconds))
        start = 0
        for _, i, j, _ in [*kept, (date.min, len(run.days), len(run.days), 0.0)]:
            if start < i:
                days = run.days[start:i]
                query = replace(run.query, first=days[0][0], last=days[-1][0])
                left.append(_Run(query, days, []))
            start = j
    return left


def _split_grid(grid: Sequence[Day], span: Span, ordered: set[date]) -> _Split:
    """The runs of consecutive days of ``grid`` that rollups may give (whole, without orders),
    each with its whole calendar months, and the other days."""
    runs: list[list[Day]] = [[]]
    others: list[Day] = []
    for day, whole in grid:
        if span[0] <= whole[0] and whole[1] <= span[1] and day not in ordered:
            runs[-1].append((day, whole))
        else:
            others.append((day, whole))
            if runs[-1]:
                runs.append([])
    return _Split([(run, _months(run)) for run in runs if run], others)


def _months(run: Sequence[Day]) -> list[Month]:
    """The whole calendar months among the consecutive days ``run``."""
    months: list[Month] = []
    start = 0
    for n, (day, _) in enumerate(run):
        if day.day == 1:
            start = n
        if (day + ONE_DAY).day == 1 and run[start][0].day == 1:
            months.append((run[start][0], start, n + 1, _seconds(run[start : n + 1])))
    return months


def _seconds(days: Sequence[Day]) -> float:
    """The length of consecutive local days, from the first's midnight to the last's end."""
    return (days[-1][1][1] - days[0][1][0]).total_seconds()


def _stored_total(found: queries.RollupTotal, seconds: float) -> Usage:
    """The usage of stored days summed by PostgreSQL, lasting ``seconds``, as one part."""
    return Usage(
        period_h=seconds / HOUR,
        scheduled_h=found.scheduled_h,
        on_h=found.on_h,
        on_scheduled_h=found.on_scheduled_h,
        running_h=found.running_h,
        running_scheduled_h=found.running_scheduled_h,
        effective_h=found.effective_h,
        external_h=0.0,
        unknown_h=found.unknown_h,
        working_days=found.working_days,
        days_on=found.days_on,
    )


def _merged(span: Span, wholes: Sequence[Span]) -> list[Span]:
    """The local days ``wholes`` (in order) clipped to ``span``, adjacent ones joined."""
    measured: list[Span] = []
    for whole in wholes:
        piece = (max(span[0], whole[0]), min(span[1], whole[1]))
        if measured and measured[-1][1] == piece[0]:
            measured[-1] = (measured[-1][0], piece[1])
        else:
            measured.append(piece)
    return measured


def _stamps(records: Sequence[queries.InstrumentRecord], allowances: Allowances) -> dict[str, str]:
    """Each institution's ``basis``: it hashes the holiday list, so once per institution."""
    stamps: dict[str, str] = {}
    for record in records:
        if record.institution.id not in stamps:
            stamps[record.institution.id] = basis(record.institution.calendar, allowances)
    return stamps


def _grids(
    records: Sequence[queries.InstrumentRecord], spans: Mapping[str, Span]
) -> dict[tuple[str, Span], list[tuple[date, Span]]]:
    """Each (time zone, span)'s grid of local days: instruments of one institution share it."""
    grids: dict[tuple[str, Span], list[tuple[date, Span]]] = {}
    for record in records:
        calendar, span = record.institution.calendar, spans[record.instrument.id]
        if (calendar.tz, span) not in grids:
            grids[calendar.tz, span] = _grid(calendar, span)
    return grids


def _grid(calendar: WorkingCalendar, span: Span) -> list[tuple[date, Span]]:
    """The local days ``span`` touches, each with its whole extent in UTC (midnight to midnight)."""
    days = calendar.local_days(span)
    if not days:
        return []
    midnights = [calendar.day_span(day)[0] for day in days]
    midnights.append(calendar.day_span(days[-1])[1])
    return [(day, (midnights[n], midnights[n + 1])) for n, day in enumerate(days)]


def _split(
    record: queries.InstrumentRecord,
    span: Span,
    *,
    grid: Sequence[tuple[date, Span]],
    stored: Mapping[date, queries.Rollup],
    windows: Sequence[Span],
    stamp: str,
) -> tuple[dict[date, DayUsage], list[Span]]:
    """The days of ``span`` read from rollups, and the spans (merged) to measure instead.

    ``stamp``: the basis a row must carry.
    """
    calendar = record.institution.calendar
    ordered = _order_days(calendar, span, windows)
    read: dict[date, DayUsage] = {}
    measured: list[Span] = []
    for day, whole in grid:
        row = stored.get(day)
        if (
            row is not None
            and span[0] <= whole[0]
            and whole[1] <= span[1]
            and day not in ordered
            and row.basis == stamp
            and (row.known_until >= whole[1] or row.known_until == record.last_seen)
        ):
            read[day] = DayUsage(day, whole, row.stored.usage(whole))
            continue
        piece = (max(span[0], whole[0]), min(span[1], whole[1]))
        if measured and measured[-1][1] == piece[0]:
            measured[-1] = (measured[-1][0], piece[1])
        else:
            measured.append(piece)
    return read, measured


def _order_days(calendar: WorkingCalendar, span: Span, windows: Sequence[Span]) -> set[date]:
    """The local days of ``span`` that an external order window touches."""
    days: set[date] = set()
    for start, end in windows:
        days.update(calendar.local_days((max(start, span[0]), min(end, span[1]))))
    return days
