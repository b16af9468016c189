"""Verifying a batch's events against enrolled keys and the stored hash chain.

The checks are ``instrumetry.domain.audit``'s; this module fetches what they
need (the instruments' enrolled keys, each event's stored predecessor) and,
when a missing predecessor finally arrives, settles the verdict of the event
that was waiting for it. It runs inside the batch's transaction, under the
instruments' row locks, so two collectors never judge one chain at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.rows import TupleRow

from collector.ingest import EventRow
from instrumetry.domain import audit, wire
from instrumetry.domain.audit import Verification
from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STORED = "instrument_id, boot_id, seq, device_time, from_state, to_state, power_w, prev_hash"
_Link = tuple[str, int]


def verdicts(cur: psycopg.Cursor[TupleRow], events: Sequence[EventRow]) -> list[Verification]:
    """The verdict of each of ``events``, in order; the batch's own events count as stored."""
    if not events:
        return []
    keys = _enrolled_keys(cur, {row.instrument_id for row in events})
    in_batch = {(row.instrument_id, row.event.seq): row.event for row in events}
    wanted = {(row.instrument_id, row.event.seq - 1) for row in events if row.event.seq > 1}
    stored = _stored(cur, wanted - in_batch.keys())
    return [
        audit.verdict(
            row.event,
            keys.get(row.instrument_id, ()),
            in_batch.get((row.instrument_id, row.event.seq - 1))
            or stored.get((row.instrument_id, row.event.seq - 1)),
        )
        for row in events
    ]


def settle_gaps(cur: psycopg.Cursor[TupleRow], inserted: Sequence[EventRow]) -> None:
    """Re-judge the stored ``gap`` events whose predecessor is among ``inserted``."""
    followers = {(row.instrument_id, row.event.seq + 1): row.event for row in inserted}
    if not followers:
        return
    ids, seqs = zip(*followers, strict=True)
    cur.execute(
        f"SELECT {_STORED} FROM events JOIN unnest(%s::text[], %s::bigint[]) "
        "AS u(id, s) ON instrument_id = u.id AND seq = u.s WHERE verification = 'gap'",
        (list(ids), list(seqs)),
    )
    updates = []
    for row in cur.fetchall():
        event = _event(row)
        predecessor = followers[(event.instrument, event.seq)]
        link = audit.chain_link(event, predecessor)
        if link is not Verification.GAP:
            updates.append((link.value, event.instrument, event.seq, row[1]))
    if updates:
        cur.executemany(
            "UPDATE events SET verification = %s "
            "WHERE instrument_id = %s AND seq = %s AND boot_id = %s AND verification = 'gap'",
            updates,
        )


def _enrolled_keys(
    cur: psycopg.Cursor[TupleRow], ids: set[str]
) -> dict[str, list[Ed25519PublicKey]]:
    cur.execute(
        "SELECT instrument_id, public_key FROM agents WHERE instrument_id = ANY(%s)", (sorted(ids),)
    )
    keys: dict[str, list[Ed25519PublicKey]] = {}
    for instrument_id, raw in cur.fetchall():
        try:
            keys.setdefault(instrument_id, []).append(audit.load_public_key(bytes(raw)))
        except WireError:
            continue  # the table's CHECK keeps keys at 32 bytes; any such bytes are a key
    return keys


def _stored(cur: psycopg.Cursor[TupleRow], links: set[_Link]) -> dict[_Link, wire.Event]:
    """The stored events of these (instrument, seq) pairs."""
    if not links:
        return {}
    ids, seqs = zip(*links, strict=True)
    cur.execute(
        f"SELECT {_STORED} FROM events JOIN unnest(%s::text[], %s::bigint[]) AS u(id, s) "
        "ON instrument_id = u.id AND seq = u.s",
        (list(ids), list(seqs)),
    )
    found: dict[_Link, wire.Event] = {}
    for row in cur.fetchall():
        event = _event(row)
        found[(event.instrument, event.seq)] = event
    return found


def _event(row: TupleRow) -> wire.Event:
    """A stored event as the agent sent it, minus the signature, to hash it again."""
    instrument_id, boot, seq, device_time, from_state, to_state, power_w, prev_hash = row
    return wire.Event(
        v=wire.SCHEMA_VERSION,
        instrument=instrument_id,
        boot=boot.hex,
        seq=seq,
        t=(device_time - _EPOCH) // timedelta(milliseconds=1),
        from_state=State(from_state),
        to_state=State(to_state),
        power_w=power_w,
        prev=prev_hash.hex(),
    )
