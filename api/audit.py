"""Reading an instrument's stored events and enrolled keys for chain verification.

Events are turned back into their wire form (``chain_audit.to_wire``), the
bytes their agent signed, so the verification and the export are exactly what
an auditor recomputes offline. ``institution_id`` (optional) confines the
reads to that institution's instruments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

from api import periods, queries
from instrumetry.domain import wire
from instrumetry.domain.audit import AgentKey, epoch_ms
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.chain_audit import ChainReport, StoredEvent, to_wire, verify_chain
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span

_EVENT_COLUMNS = (
    "instrument_id, boot_id, seq, device_time, from_state, to_state, power_w, prev_hash, signature"
)


@dataclass(frozen=True, slots=True)
class ChainEvidence:
    """What verifying an instrument's chain over a period rests on."""

    instrument_id: str
    period: Span
    keys: list[AgentKey]
    """Every key ever enrolled for the instrument, current and retired."""
    anchor: wire.Event | None
    events: list[wire.Event]


async def load_chain(
    conn: AsyncConnection[Any],
    instrument_id: str,
    start: date | datetime,
    end: date | datetime,
    institution_id: str | None = None,
) -> ChainEvidence | None:
    """The instrument's events in [start, end) and its keys; None if there is no such instrument.

    Dates are local days of the instrument's institution.
    """
    async with queries.snapshot(conn):
        cur = await conn.execute(
            """SELECT s.tz FROM instruments i JOIN institutions s ON s.id = i.institution_id
               WHERE i.id = %s AND (%s::text IS NULL OR i.institution_id = %s)""",
            (instrument_id, institution_id, institution_id),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        period = periods.resolve(start, end, WorkingCalendar(tz=row[0]))
        cur = await conn.execute(
            f"""SELECT {_EVENT_COLUMNS} FROM events
                WHERE instrument_id = %s AND device_time >= %s AND device_time < %s
                ORDER BY seq, device_time""",
            (instrument_id, *period),
        )
        events = [_wire(r) for r in await cur.fetchall()]
        anchor = await _anchor(conn, instrument_id, events[0], period[0]) if events else None
        keys = await _keys(conn, "instrument_id = %s", instrument_id)
    return ChainEvidence(instrument_id, period, keys, anchor, events)


async def _anchor(
    conn: AsyncConnection[Any], instrument_id: str, first: wire.Event, start: datetime
) -> wire.Event | None:
    """The event with the seq before the period's first, stored before the period."""
    if first.seq == 1:
        return None
    cur = await conn.execute(
        f"""SELECT {_EVENT_COLUMNS} FROM events
            WHERE instrument_id = %s AND seq = %s AND device_time < %s
            ORDER BY device_time DESC LIMIT 1""",
        (instrument_id, first.seq - 1, start),
    )
    row = await cur.fetchone()
    return None if row is None else _wire(row)


def _wire(row: tuple[Any, ...]) -> wire.Event:
    instrument_id, boot_id, seq, device_time, from_state, to_state, power_w, prev, sig = row
    return to_wire(
        StoredEvent(
            instrument_id=instrument_id,
            boot_id=boot_id if isinstance(boot_id, uuid.UUID) else uuid.UUID(str(boot_id)),
            seq=seq,
            device_time=device_time,
            from_state=State(from_state),
            to_state=State(to_state),
            power_w=power_w,
            prev_hash=bytes(prev),
            signature=bytes(sig),
        )
    )


async def verify(conn: AsyncConnection[Any], evidence: ChainEvidence) -> ChainReport:
    """Verify ``evidence``; events that fail the instrument's keys are tried on the fleet's.

    The fleet's keys are read only when some event fails, so a clean chain
    costs one key lookup.
    """
    report = verify_chain(
        evidence.instrument_id, evidence.events, evidence.keys, anchor=evidence.anchor
    )
    if not report.bad_signatures:
        return report
    async with conn.transaction():
        fleet = await _keys(conn, "instrument_id <> %s", evidence.instrument_id)
    return verify_chain(
        evidence.instrument_id,
        evidence.events,
        evidence.keys,
        anchor=evidence.anchor,
        foreign_keys=fleet,
    )


async def _keys(conn: AsyncConnection[Any], where: str, instrument_id: str) -> list[AgentKey]:
    """The keys ever enrolled (``agent_keys``) matching ``where``, oldest first."""
    cur = await conn.execute(
        f"""SELECT agent_id, public_key, retired_at FROM agent_keys WHERE {where}
            ORDER BY enrolled_at, id""",
        (instrument_id,),
    )
    return [
        AgentKey(agent, bytes(raw), None if retired is None else epoch_ms(retired))
        for agent, raw, retired in await cur.fetchall()
    ]
