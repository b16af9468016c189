"""Enrolled agents: their instruments, public keys, and when they were last heard from."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.problems import InvalidParameter
from api.registry_models import Agent, AgentCreate, AgentFields, Page
from api.store.common import Conflict, NotFound

_SELECT = """SELECT a.id, a.instrument_id, i.institution_id, a.public_key, a.enrolled_at,
                    i.last_seen, s.status
             FROM agents a JOIN instruments i ON i.id = a.instrument_id
             LEFT JOIN agent_status s ON s.instrument_id = a.instrument_id"""


def _model(row: dict[str, Any]) -> Agent:
    return Agent.model_validate({**row, "public_key": base64.b64encode(row["public_key"]).decode()})


async def page(
    conn: AsyncConnection[Any],
    *,
    scope: str | None,
    institution: str | None,
    instrument: str | None,
    limit: int,
    offset: int,
) -> Page[Agent]:
    where = """(%(scope)s::text IS NULL OR i.institution_id = %(scope)s)
               AND (%(institution)s::text IS NULL OR i.institution_id = %(institution)s)
               AND (%(instrument)s::text IS NULL OR a.instrument_id = %(instrument)s)"""
    params = {
        "scope": scope,
        "institution": institution,
        "instrument": instrument,
        "limit": limit,
        "offset": offset,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""SELECT count(*) AS n FROM agents a JOIN instruments i ON i.id = a.instrument_id
                WHERE {where}""",
            params,
        )
        total = await cur.fetchone()
        await cur.execute(
            f"{_SELECT} WHERE {where} ORDER BY a.id LIMIT %(limit)s OFFSET %(offset)s", params
        )
        rows = await cur.fetchall()
    assert total is not None
    return Page(items=[_model(r) for r in rows], total=total["n"], limit=limit, offset=offset)


async def get(conn: AsyncConnection[Any], agent_id: str) -> Agent:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{_SELECT} WHERE a.id = %s", (agent_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound("agent", agent_id)
    return _model(row)


async def create(conn: AsyncConnection[Any], body: AgentCreate) -> Agent:
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
                (body.id, body.instrument_id, body.key_bytes()),
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"agent {body.id!r} exists already; PUT re-enrols it") from None
    except psycopg.errors.ForeignKeyViolation:
        raise _no_instrument(body.instrument_id) from None
    return await get(conn, body.id)


async def replace(conn: AsyncConnection[Any], agent_id: str, body: AgentFields) -> Agent:
    """Re-enrol: a new key (or instrument) replaces the old; ``enrolled_at`` is kept.

    The database retires the old key (``agent_keys``, migration 0012) so what it
    signed stays verifiable.
    """
    try:
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE agents SET instrument_id = %s, public_key = %s WHERE id = %s",
                (body.instrument_id, body.key_bytes(), agent_id),
            )
    except psycopg.errors.ForeignKeyViolation:
        raise _no_instrument(body.instrument_id) from None
    if cur.rowcount == 0:
        raise NotFound("agent", agent_id)
    return await get(conn, agent_id)


async def delete(conn: AsyncConnection[Any], agent_id: str) -> None:
    async with conn.transaction():
        cur = await conn.execute("DELETE FROM agents WHERE id = %s", (agent_id,))
    if cur.rowcount == 0:
        raise NotFound("agent", agent_id)


def _no_instrument(instrument_id: str) -> InvalidParameter:
    return InvalidParameter("instrument_id", f"no instrument has id {instrument_id!r}", "body")
