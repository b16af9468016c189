"""Storing and reading service orders (table ``service_orders``, migration 0005).

Imports are idempotent on the order id: a re-imported order updates the
stored one, an unchanged one is left alone, so loading the same platform
export twice changes nothing. Rows the database cannot take (an unknown
instrument, an order of another institution) are reported like parse errors,
by row and field, and never stop the valid rows from being stored.

Every reading function takes an optional ``institution_id``: given, it sees
only that institution's instruments, which is how an institution's access
token is confined to its own orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from instrumetry.domain.orders import ParsedOrders, RowError, ServiceOrder
from instrumetry.domain.timeset import Span

_COLUMNS = (
    "o.order_id, o.instrument_id, o.customer_org, o.external, o.purpose, "
    "o.starts_at, o.ends_at, o.billed_hours, o.amount_yuan"
)


@dataclass(frozen=True, slots=True)
class ImportResult:
    received: int
    inserted: int
    updated: int
    unchanged: int
    errors: list[RowError]

    @property
    def rejected_rows(self) -> int:
        return len({error.row for error in self.errors})


async def import_orders(
    conn: AsyncConnection[Any], parsed: ParsedOrders, institution_id: str | None = None
) -> ImportResult:
    """Store the parsed orders in one transaction; report what could not be stored."""
    errors = list(parsed.errors)
    accepted: list[ServiceOrder] = []
    async with conn.transaction():
        owners = await _owners(conn, [order.instrument_id for _, order in parsed.orders])
        stored = await _stored_owners(conn, [order.order_id for _, order in parsed.orders])
        for row, order in parsed.orders:
            owner = owners.get(order.instrument_id)
            if owner is None:
                message = f"no instrument has id {order.instrument_id!r}"
                errors.append(RowError(row, "instrument_id", message))
            elif institution_id is not None and institution_id != owner:
                message = (
                    f"instrument {order.instrument_id!r} is not institution {institution_id!r}'s"
                )
                errors.append(RowError(row, "instrument_id", message))
            elif institution_id is not None and stored.get(order.order_id, owner) != owner:
                message = f"order {order.order_id!r} is another institution's"
                errors.append(RowError(row, "order_id", message))
            else:
                accepted.append(order)
        inserted, updated = await _upsert(conn, accepted) if accepted else (0, 0)
    errors.sort(key=lambda e: (e.row, e.field))
    unchanged = len(accepted) - inserted - updated
    return ImportResult(parsed.received, inserted, updated, unchanged, errors)


async def _owners(conn: AsyncConnection[Any], instrument_ids: list[str]) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT id, institution_id FROM instruments WHERE id = ANY(%s)", (instrument_ids,)
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def _stored_owners(conn: AsyncConnection[Any], order_ids: list[str]) -> dict[str, str]:
    cur = await conn.execute(
        """SELECT o.order_id, i.institution_id FROM service_orders o
           JOIN instruments i ON i.id = o.instrument_id WHERE o.order_id = ANY(%s)""",
        (order_ids,),
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def _upsert(conn: AsyncConnection[Any], orders: list[ServiceOrder]) -> tuple[int, int]:
    """Insert new orders and update changed ones; return (inserted, updated)."""
    columns = list(zip(*((
        o.order_id, o.instrument_id, o.customer_org, o.external, o.purpose,
        o.starts_at, o.ends_at, o.billed_hours, o.amount_yuan,
    ) for o in orders), strict=True))  # fmt: skip
    cur = await conn.execute(
        """INSERT INTO service_orders AS o (order_id, instrument_id, customer_org, external,
                  purpose, starts_at, ends_at, billed_hours, amount_yuan)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::boolean[], %s::text[],
                                %s::timestamptz[], %s::timestamptz[], %s::numeric[],
                                %s::numeric[])
           ON CONFLICT (order_id) DO UPDATE SET
               instrument_id = EXCLUDED.instrument_id, customer_org = EXCLUDED.customer_org,
               external = EXCLUDED.external, purpose = EXCLUDED.purpose,
               starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
               billed_hours = EXCLUDED.billed_hours, amount_yuan = EXCLUDED.amount_yuan,
               imported_at = now()
           WHERE (o.instrument_id, o.customer_org, o.external, o.purpose, o.starts_at,
                  o.ends_at, o.billed_hours, o.amount_yuan)
                 IS DISTINCT FROM (EXCLUDED.instrument_id, EXCLUDED.customer_org,
                  EXCLUDED.external, EXCLUDED.purpose, EXCLUDED.starts_at, EXCLUDED.ends_at,
                  EXCLUDED.billed_hours, EXCLUDED.amount_yuan)
           RETURNING xmax = 0""",
        [list(column) for column in columns],
    )
    fresh = [row[0] for row in await cur.fetchall()]
    return sum(fresh), len(fresh) - sum(fresh)


@dataclass(frozen=True, slots=True)
class StoredOrder:
    order: ServiceOrder
    institution_id: str
    imported_at: datetime


def _stored(row: Sequence[Any]) -> StoredOrder:
    return StoredOrder(ServiceOrder(*row[:9]), row[9], row[10])


async def get_order(
    conn: AsyncConnection[Any], order_id: str, institution_id: str | None = None
) -> StoredOrder | None:
    """One order, or None if it does not exist (or is not ``institution_id``'s)."""
    async with conn.transaction():
        cur = await conn.execute(
            f"""SELECT {_COLUMNS}, i.institution_id, o.imported_at FROM service_orders o
            JOIN instruments i ON i.id = o.instrument_id
            WHERE o.order_id = %s AND (%s::text IS NULL OR i.institution_id = %s)""",
            (order_id, institution_id, institution_id),
        )
        row = await cur.fetchone()
    return None if row is None else _stored(row)


async def find_orders(
    conn: AsyncConnection[Any],
    *,
    institution_id: str | None = None,
    instrument_id: str | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
) -> list[StoredOrder]:
    """Orders (of one institution or instrument, if given) whose window meets [after, before)."""
    cur = await conn.execute(
        f"""SELECT {_COLUMNS}, i.institution_id, o.imported_at FROM service_orders o
            JOIN instruments i ON i.id = o.instrument_id
            WHERE (%(institution)s::text IS NULL OR i.institution_id = %(institution)s)
              AND (%(instrument)s::text IS NULL OR o.instrument_id = %(instrument)s)
              AND (%(end)s::timestamptz IS NULL OR o.starts_at < %(end)s)
              AND (%(start)s::timestamptz IS NULL OR o.ends_at > %(start)s)
            ORDER BY o.starts_at, o.order_id""",
        {
            "institution": institution_id,
            "instrument": instrument_id,
            "start": after,
            "end": before,
        },
    )
    return [_stored(row) for row in await cur.fetchall()]


async def orders_near(
    conn: AsyncConnection[Any], instrument_ids: Sequence[str], span: Span
) -> list[ServiceOrder]:
    """Every order on these instruments overlapping ``span``, whoever owns it.

    Double billing is judged against all orders of an instrument, not only
    those a caller may see.
    """
    cur = await conn.execute(
        f"""SELECT {_COLUMNS} FROM service_orders o
            WHERE o.instrument_id = ANY(%s) AND o.starts_at < %s AND o.ends_at > %s""",
        (list(instrument_ids), span[1], span[0]),
    )
    return [ServiceOrder(*row) for row in await cur.fetchall()]
