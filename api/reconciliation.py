"""Reconciling stored service orders with the stored intervals of their instruments.

The SQL side of ``instrumetry.domain.reconcile``: read the orders, every
order that could overlap them, the instruments' intervals around their windows
and when each agent was last heard from, then let the domain judge. Functions
take an optional ``institution_id`` that confines them to that institution's
orders (an institution's access token); double billing is still judged
against every order on the instrument.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from api import orders as stored_orders
from api import queries
from api.problems import InvalidParameter
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.metrics import Allowances
from instrumetry.domain.reconcile import Reconciliation, Tolerances, reconcile

ALLOWANCES = Allowances()
_DAY = timedelta(days=1)


async def reconcile_order(
    conn: AsyncConnection[Any],
    order_id: str,
    tolerances: Tolerances,
    institution_id: str | None = None,
) -> tuple[stored_orders.StoredOrder, Reconciliation] | None:
    """One order's reconciliation, or None if there is no such order (for this institution)."""
    async with queries.snapshot(conn):
        found = await stored_orders.get_order(conn, order_id, institution_id)
        if found is None:
            return None
        (result,) = await _reconcile(conn, [found], tolerances)
    return found, result


async def reconcile_many(
    conn: AsyncConnection[Any],
    tolerances: Tolerances,
    *,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    institution_id: str | None = None,
    instrument_id: str | None = None,
) -> list[tuple[stored_orders.StoredOrder, Reconciliation]]:
    """Every order (of an institution or instrument) whose window meets [start, end).

    Dates are local days of each order's institution, as in usage reports. An
    unknown institution is an ``InvalidParameter``, not an empty list.
    """
    async with queries.snapshot(conn):
        if institution_id is not None and not await queries.institution_exists(
            conn, institution_id
        ):
            raise InvalidParameter("institution", f"no institution has id {institution_id!r}")
        calendars = {
            record.instrument.id: record.institution.calendar
            for record in await queries.instruments(conn, institution_id, instrument_id)
        }
        candidates = await stored_orders.find_orders(
            conn,
            institution_id=institution_id,
            instrument_id=instrument_id,
            after=_widest(start, first=True),
            before=_widest(end, first=False),
        )
        chosen = [
            found
            for found in candidates
            if _meets(found, start, end, calendars[found.order.instrument_id])
        ]
        results = await _reconcile(conn, chosen, tolerances) if chosen else []
    return list(zip(chosen, results, strict=True))


def _widest(value: date | datetime | None, *, first: bool) -> datetime | None:
    """``value`` in UTC; a date widened by a day, so that it holds that day in every zone."""
    if value is None or isinstance(value, datetime):
        return value
    day = _UTC.day_span(value)
    return day[0] - _DAY if first else day[1] + _DAY


_UTC = WorkingCalendar(tz="UTC")


def _meets(
    found: stored_orders.StoredOrder,
    start: date | datetime | None,
    end: date | datetime | None,
    calendar: WorkingCalendar,
) -> bool:
    s, e = found.order.window
    if start is not None and e <= _bound(start, calendar, first=True):
        return False
    return end is None or s < _bound(end, calendar, first=False)


def _bound(value: date | datetime, calendar: WorkingCalendar, *, first: bool) -> datetime:
    if isinstance(value, datetime):
        return value
    day = calendar.day_span(value)
    return day[0] if first else day[1]


async def _reconcile(
    conn: AsyncConnection[Any],
    chosen: Sequence[stored_orders.StoredOrder],
    tolerances: Tolerances,
) -> list[Reconciliation]:
    orders = [found.order for found in chosen]
    instrument_ids = sorted({order.instrument_id for order in orders})
    reach = (
        min(order.window[0] for order in orders) - ALLOWANCES.post,
        max(order.window[1] for order in orders) + ALLOWANCES.prep,
    )
    others = await stored_orders.orders_near(conn, instrument_ids, reach)
    intervals = await queries.intervals(conn, instrument_ids, reach)
    cur = await conn.execute(
        "SELECT id, last_seen FROM instruments WHERE id = ANY(%s) AND last_seen IS NOT NULL",
        (instrument_ids,),
    )
    known_until = {row[0]: row[1] for row in await cur.fetchall()}
    return reconcile(
        orders,
        intervals,
        known_until,
        others=others,
        tolerances=tolerances,
        allowances=ALLOWANCES,
    )
