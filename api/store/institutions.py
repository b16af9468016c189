"""Institutions, their working calendars and regions."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.registry_models import Institution, InstitutionCreate, InstitutionFields, Page
from api.store.common import Conflict, NotFound, contains

_COLUMNS = """id, name, tz AS time_zone, workdays, day_start, day_end, holidays,
              extra_workdays, region, created_at"""


async def page(
    conn: AsyncConnection[Any], *, scope: str | None, q: str | None, limit: int, offset: int
) -> Page[Institution]:
    where = """(%(scope)s::text IS NULL OR id = %(scope)s)
               AND (%(q)s::text IS NULL OR id ILIKE %(q)s OR name ILIKE %(q)s)"""
    params = {"scope": scope, "q": contains(q), "limit": limit, "offset": offset}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT count(*) AS n FROM institutions WHERE {where}", params)
        total = await cur.fetchone()
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM institutions WHERE {where}
                ORDER BY id LIMIT %(limit)s OFFSET %(offset)s""",
            params,
        )
        rows = await cur.fetchall()
    assert total is not None
    return Page(
        items=[Institution.model_validate(r) for r in rows],
        total=total["n"],
        limit=limit,
        offset=offset,
    )


async def get(conn: AsyncConnection[Any], institution_id: str) -> Institution:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM institutions WHERE id = %s", (institution_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("institution", institution_id)
    return Institution.model_validate(row)


def _values(fields: InstitutionFields) -> dict[str, Any]:
    return {
        "name": fields.name,
        "tz": fields.time_zone,
        "workdays": sorted(set(fields.workdays)),
        "day_start": fields.day_start,
        "day_end": fields.day_end,
        "holidays": sorted(set(fields.holidays)),
        "extra_workdays": sorted(set(fields.extra_workdays)),
        "region": fields.region,
    }


async def create(conn: AsyncConnection[Any], body: InstitutionCreate) -> Institution:
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO institutions
                       (id, name, tz, workdays, day_start, day_end, holidays, extra_workdays,
                        region)
                   VALUES (%(id)s, %(name)s, %(tz)s, %(workdays)s::smallint[], %(day_start)s,
                           %(day_end)s, %(holidays)s::date[], %(extra_workdays)s::date[],
                           %(region)s)""",
                {"id": body.id, **_values(body)},
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"institution {body.id!r} exists already; PUT replaces it") from None
    return await get(conn, body.id)


async def replace(
    conn: AsyncConnection[Any], institution_id: str, body: InstitutionFields
) -> Institution:
    async with conn.transaction():
        cur = await conn.execute(
            """UPDATE institutions SET name = %(name)s, tz = %(tz)s,
                   workdays = %(workdays)s::smallint[], day_start = %(day_start)s,
                   day_end = %(day_end)s, holidays = %(holidays)s::date[],
                   extra_workdays = %(extra_workdays)s::date[], region = %(region)s
               WHERE id = %(id)s""",
            {"id": institution_id, **_values(body)},
        )
    if cur.rowcount == 0:
        raise NotFound("institution", institution_id)
    return await get(conn, institution_id)


async def delete(conn: AsyncConnection[Any], institution_id: str) -> None:
    try:
        async with conn.transaction():
            cur = await conn.execute("DELETE FROM institutions WHERE id = %s", (institution_id,))
    except psycopg.errors.ForeignKeyViolation:
        raise Conflict(
            f"institution {institution_id!r} still has instruments or API tokens; "
            "delete or move those first"
        ) from None
    if cur.rowcount == 0:
        raise NotFound("institution", institution_id)
