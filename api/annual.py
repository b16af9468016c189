"""The annual report of an institution: usage, quota, sharing and reconciliation per instrument.

Computed from the same local days as every other report (``api.daily``:
daily rollups where they hold, intervals elsewhere), over the institution's
calendar year in its own time zone; rendered as CSV (``api.annual_csv``) and
PDF (``api.annual_pdf``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

from api import orders as stored_orders
from api import periods, queries
from api import reconciliation as reconciling
from api.daily import measure_totals
from api.problems import InvalidParameter
from instrumetry.domain.capacity import FULLY_BOOKED_H, prorate
from instrumetry.domain.metrics import Allowances, Usage
from instrumetry.domain.reconcile import DEFAULT_TOLERANCES, Flag
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.timeset import Span

ALLOWANCES = Allowances()


@dataclass(frozen=True, slots=True)
class InstrumentYear:
    instrument: Instrument
    usage: Usage
    quota_h: float
    fully_booked_h: float
    orders: int
    flags: Counter[Flag]

    @property
    def effective_vs_quota(self) -> float | None:
        return self.usage.effective_h / self.quota_h if self.quota_h else None


@dataclass(frozen=True, slots=True)
class AnnualReport:
    institution: Institution
    year: int
    period: Span
    rows: list[InstrumentYear]

    @property
    def flag_totals(self) -> Counter[Flag]:
        total: Counter[Flag] = Counter()
        for row in self.rows:
            total.update(row.flags)
        return total


async def usage_by_instrument(
    conn: AsyncConnection[Any],
    start: date | datetime,
    end: date | datetime,
    institution_id: str | None = None,
    external: bool = True,
) -> list[tuple[queries.InstrumentRecord, Span, Usage]]:
    """Each instrument's usage over [start, end) (dates: local days of its institution).

    With ``external``, the windows of external service orders give external
    service hours (and so the sharing rate).
    """
    async with queries.snapshot(conn):
        if institution_id is not None and not await queries.institution_exists(
            conn, institution_id
        ):
            raise InvalidParameter("institution", f"no institution has id {institution_id!r}")
        records = await queries.instruments(conn, institution_id)
        spans = periods.resolve_each(start, end, records)
        if not spans:
            return []
        reach = (
            min(s for s, _ in spans.values()) - ALLOWANCES.post,
            max(e for _, e in spans.values()) + ALLOWANCES.prep,
        )
        windows: defaultdict[str, list[Span]] = defaultdict(list)
        if external:
            for order in await stored_orders.orders_near(conn, list(spans), reach):
                if order.external:
                    windows[order.instrument_id].append(order.window)
        usages = await measure_totals(conn, records, spans, windows, ALLOWANCES)
    return [
        (record, spans[record.instrument.id], usages[record.instrument.id]) for record in records
    ]


async def annual_report(conn: AsyncConnection[Any], institution_id: str, year: int) -> AnnualReport:
    """The institution's ``year`` (its local calendar year), instrument by instrument."""
    async with conn.transaction():
        institution = await queries.institution(conn, institution_id)
    if institution is None:
        raise InvalidParameter("institution", f"no institution has id {institution_id!r}", "path")
    first, last = date(year, 1, 1), date(year, 12, 31)
    measured = await usage_by_instrument(conn, first, last, institution_id)
    reconciled = await reconciling.reconcile_many(
        conn, DEFAULT_TOLERANCES, start=first, end=last, institution_id=institution_id
    )
    flags: defaultdict[str, Counter[Flag]] = defaultdict(Counter)
    orders: Counter[str] = Counter()
    for found, result in reconciled:
        orders[found.order.instrument_id] += 1
        flags[found.order.instrument_id].update(result.flags)
    rows = [
        InstrumentYear(
            instrument=record.instrument,
            usage=usage,
            quota_h=prorate(record.instrument.category.annual_quota_h, usage.period_h),
            fully_booked_h=prorate(FULLY_BOOKED_H, usage.period_h),
            orders=orders[record.instrument.id],
            flags=flags[record.instrument.id],
        )
        for record, _, usage in measured
    ]
    period = periods.resolve(first, last, institution.calendar)
    return AnnualReport(institution, year, period, rows)
