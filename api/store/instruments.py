"""Instruments: the registry's CRUD and the idempotent bulk upsert of imports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.problems import InvalidParameter
from api.registry_models import ImportResult, Instrument, InstrumentCreate, InstrumentFields, Page
from api.store.common import Conflict, NotFound, contains
from instrumetry.domain.registry import Category

_COLUMNS = (
    "institution_id", "name", "model", "category", "original_value_yuan", "purchase_date",
    "location", "annual_quota_h", "standby_w", "run_w", "hysteresis_w", "min_dwell_s",
)  # fmt: skip
_FIELDS = ", ".join(_COLUMNS)
_SELECT = f"SELECT id, {_FIELDS}, last_seen, created_at FROM instruments"
_PLACEHOLDERS = ", ".join(f"%({c})s" for c in ("id", *_COLUMNS))
_SETS = ", ".join(f"{c} = %({c})s" for c in _COLUMNS)
_STORED = ", ".join(f"instruments.{c}" for c in _COLUMNS)
_GIVEN = ", ".join(f"EXCLUDED.{c}" for c in _COLUMNS)
_FROM_GIVEN = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS)


def _model(row: dict[str, Any]) -> Instrument:
    own = row["annual_quota_h"]
    quota = own if own is not None else Category(row["category"]).annual_quota_h
    return Instrument.model_validate(
        {**row, "annual_quota_h": quota, "quota_from_category": own is None}
    )


async def page(
    conn: AsyncConnection[Any],
    *,
    scope: str | None,
    institution: str | None,
    category: Category | None,
    q: str | None,
    limit: int,
    offset: int,
) -> Page[Instrument]:
    where = """(%(scope)s::text IS NULL OR institution_id = %(scope)s)
               AND (%(institution)s::text IS NULL OR institution_id = %(institution)s)
               AND (%(category)s::text IS NULL OR category = %(category)s)
               AND (%(q)s::text IS NULL OR id ILIKE %(q)s OR name ILIKE %(q)s
                    OR model ILIKE %(q)s OR location ILIKE %(q)s)"""
    params = {
        "scope": scope,
        "institution": institution,
        "category": None if category is None else category.value,
        "q": contains(q),
        "limit": limit,
        "offset": offset,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT count(*) AS n FROM instruments WHERE {where}", params)
        total = await cur.fetchone()
        await cur.execute(
            f"{_SELECT} WHERE {where} ORDER BY id LIMIT %(limit)s OFFSET %(offset)s", params
        )
        rows = await cur.fetchall()
    assert total is not None
    return Page(items=[_model(r) for r in rows], total=total["n"], limit=limit, offset=offset)


async def get(conn: AsyncConnection[Any], instrument_id: str) -> Instrument:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{_SELECT} WHERE id = %s", (instrument_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("instrument", instrument_id)
    return _model(row)


def _values(instrument_id: str, fields: InstrumentFields) -> dict[str, Any]:
    values = fields.model_dump(include=set(_COLUMNS))
    return {**values, "id": instrument_id, "category": fields.category.value}


async def create(conn: AsyncConnection[Any], body: InstrumentCreate) -> Instrument:
    try:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO instruments (id, {_FIELDS}) VALUES ({_PLACEHOLDERS})",
                _values(body.id, body),
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"instrument {body.id!r} exists already; PUT replaces it") from None
    except psycopg.errors.ForeignKeyViolation:
        raise _no_institution(body.institution_id) from None
    return await get(conn, body.id)


async def replace(
    conn: AsyncConnection[Any], instrument_id: str, body: InstrumentFields
) -> Instrument:
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"UPDATE instruments SET {_SETS} WHERE id = %(id)s", _values(instrument_id, body)
            )
    except psycopg.errors.ForeignKeyViolation:
        raise _no_institution(body.institution_id) from None
    if cur.rowcount == 0:
        raise NotFound("instrument", instrument_id)
    return await get(conn, instrument_id)


async def delete(conn: AsyncConnection[Any], instrument_id: str) -> None:
    try:
        async with conn.transaction():
            cur = await conn.execute("DELETE FROM instruments WHERE id = %s", (instrument_id,))
    except psycopg.errors.ForeignKeyViolation:
        raise Conflict(
            f"instrument {instrument_id!r} has or had enrolled agents, or measured data; "
            "measured history is evidence and is never deleted through the API"
        ) from None
    if cur.rowcount == 0:
        raise NotFound("instrument", instrument_id)


async def upsert_all(
    conn: AsyncConnection[Any], instruments: Sequence[InstrumentCreate]
) -> ImportResult:
    """Insert or update every instrument in one transaction; count what changed.

    A row equal to the stored one is not rewritten (the ``WHERE`` of the
    upsert), so importing a file twice reports everything as unchanged.
    """
    created = updated = 0
    async with conn.transaction(), conn.cursor() as cur:
        for body in instruments:
            await cur.execute(
                f"""INSERT INTO instruments (id, {_FIELDS}) VALUES ({_PLACEHOLDERS})
                    ON CONFLICT (id) DO UPDATE SET {_FROM_GIVEN}
                    WHERE ({_STORED}) IS DISTINCT FROM ({_GIVEN})
                    RETURNING xmax = 0""",
                _values(body.id, body),
            )
            row = await cur.fetchone()
            if row is not None:
                created, updated = (created + 1, updated) if row[0] else (created, updated + 1)
    rows = len(instruments)
    return ImportResult(
        rows=rows, created=created, updated=updated, unchanged=rows - created - updated
    )


def _no_institution(institution_id: str) -> InvalidParameter:
    return InvalidParameter("institution_id", f"no institution has id {institution_id!r}", "body")


async def institution_ids(conn: AsyncConnection[Any]) -> set[str]:
    """Every institution id, to check an import's rows against."""
    cur = await conn.execute("SELECT id FROM institutions")
    return {row[0] for row in await cur.fetchall()}
