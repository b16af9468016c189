"""Verifying a batch's events against enrolled keys and the stored hash chain.

The checks are ``instrumetry.domain.audit``'s, split in two. Signatures
depend only on the event and its instrument's enrolled keys, so
``EnrolledKeys.signatures`` checks them before the batch's transaction, with
no instrument locked: they are most of a batch's CPU time, and checking them
under the locks made concurrent collectors take turns. ``verdicts`` then adds
the cheap chain checks inside the transaction, before the instruments' row
locks, against the predecessors visible then; under the locks,
``settle_gaps`` settles the ``gap`` verdicts whose predecessor is stored by
now: one that arrived late, or that another collector was storing at the
same time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector.ingest import EventRow
from collector.sigcheck import Item
from instrumetry.domain import audit, wire
from instrumetry.domain.audit import Verification
from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STORED = "instrument_id, boot_id, seq, device_time, from_state, to_state, power_w, prev_hash"
_WIDTH = len(_STORED.split(", "))
_Link = tuple[str, int]
PREDECESSOR_WINDOW = (timedelta(days=31), timedelta(days=1))
"""Where ``verdicts`` looks for predecessors: from 31 days before the batch's earliest
event to a day after its latest (a device clock corrected back by a little)."""
# Per pair, a LATERAL scan the planner may not flatten (OFFSET 0): TimescaleDB
# excludes the chunks outside the bounds once, at startup, and each pair probes
# the (instrument_id, seq) index of the one or two left. As a join, the planner
# hashed every event in the window instead.
_NEAR = f"""
SELECT e.* FROM unnest(%(ids)s::text[], %(seqs)s::bigint[]) AS u(id, s)
CROSS JOIN LATERAL (
    SELECT {_STORED} FROM events
     WHERE instrument_id = u.id AND seq = u.s
       AND device_time > %(after)s AND device_time <= %(until)s
    OFFSET 0) AS e
"""
KEYS_TTL_S = 10.0
"""How long an instrument's enrolled keys are trusted without asking the registry again.

A key that fails is always re-read at once (a re-enrolled agent is picked up
on its first event); the TTL bounds how long a key retired in the registry
still verifies events dated after its retirement."""
KEYS_KEPT_S = 3600.0
"""How long expired keys stay cached for ``EnrolledKeys.precheck``: an instrument heard
every few minutes finds its keys there, to be confirmed (one query) when stored."""
Prechecked = Mapping[int, frozenset[audit.AgentKey]]
"""By the ``id`` of an event, the cached keys that verified its signature (``precheck``)."""


@dataclass(frozen=True, slots=True)
class _Enrolled:
    keys: frozenset[audit.AgentKey]
    expires: float


class EnrolledKeys:
    """Signature checks against the instruments' enrolled keys, cached for ``ttl_s`` seconds.

    One per collector (one storing thread, which alone calls ``signatures``):
    reading the keys for every batch would cost a query per batch for keys
    that almost never change.
    """

    def __init__(
        self,
        ttl_s: float = KEYS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        kept_s: float = KEYS_KEPT_S,
    ) -> None:
        self._ttl_s = ttl_s
        self._kept_s = kept_s
        self._clock = clock
        self._cache: dict[str, _Enrolled] = {}
        self._next_prune = clock() + ttl_s

    def preload(self, conn: psycopg.Connection[TupleRow]) -> int:
        """Cache every instrument's enrolled keys; return for how many instruments.

        Called at start, before any batch: otherwise the first batch of each
        instrument finds no cached key to precheck with, and is checked on
        the storing thread at half the collector's speed, which after a
        restart with a backlog means every instrument's first batch.
        """
        rows = conn.execute("SELECT DISTINCT instrument_id FROM agent_keys").fetchall()
        ids = {instrument_id for (instrument_id,) in rows}
        self._load(conn, ids, self._clock())
        return len(ids)

    def precheck(
        self, events: Sequence[EventRow], check: Callable[[list[Item]], list[bool] | None]
    ) -> dict[int, frozenset[audit.AgentKey]]:
        """Check ``events`` against the cached keys, expired or not, without the database.

        Returns the ``Prechecked`` for ``signatures``: the events some cached
        key verified, each with the keys that did. ``check`` is
        ``sigcheck.check`` or a ``sigcheck.Checker``, which checks in child
        processes; if it fails (``None``), nothing counts as prechecked. The
        collector runs this on the next batch while the storing thread stores
        the one before; it only reads the cache, so it is safe beside
        ``signatures`` on another thread.
        """
        cache = self._cache
        items: list[Item] = []
        owners: list[tuple[int, frozenset[audit.AgentKey]]] = []
        for row in events:
            entry = cache.get(row.instrument_id)
            signed = None if entry is None else audit.signed_message(row.event)
            if entry is None or signed is None:
                continue
            for key in entry.keys:
                if key.in_force(row.event):
                    items.append((key.raw, *signed))
                    owners.append((id(row), entry.keys))
        results = check(items)
        if results is None:
            return {}
        return {row_id: keys for (row_id, keys), ok in zip(owners, results, strict=True) if ok}

    def signatures(
        self,
        conn: psycopg.Connection[TupleRow],
        events: Sequence[EventRow],
        prechecked: Prechecked | None = None,
    ) -> list[Verification]:
        """``audit.signed_by_any`` of each of ``events``, in order, against the registry's keys.

        Keys cached before this call that verify nothing (none, or none that
        fits) are read again before an event is declared ``unknown_key`` or
        ``bad_signature``, so those verdicts always reflect the registry now.
        An event in ``prechecked`` is ``ok`` without a second check if the
        keys that verified it are still the instrument's keys.
        """
        now = self._clock()
        self._prune(now)
        ids = {row.instrument_id for row in events}
        fresh = {i for i in ids if i not in self._cache or self._cache[i].expires <= now}
        self._load(conn, fresh, now)
        prechecked = prechecked or {}
        signed = [self._check(row, prechecked.get(id(row))) for row in events]
        missed = {
            row.instrument_id
            for row, verdict in zip(events, signed, strict=True)
            if verdict is not Verification.OK and row.instrument_id not in fresh
        }
        changed = self._load(conn, missed, now)
        return [
            self._check(row) if row.instrument_id in changed else verdict
            for row, verdict in zip(events, signed, strict=True)
        ]

    def _check(
        self, row: EventRow, verified_by: frozenset[audit.AgentKey] | None = None
    ) -> Verification:
        keys = self._cache[row.instrument_id].keys
        if verified_by is keys:  # _load keeps the same set while the registry's keys stay
            return Verification.OK
        return audit.signed_by_any(row.event, keys)

    def _load(self, conn: psycopg.Connection[TupleRow], ids: set[str], now: float) -> set[str]:
        """Read the enrolled keys of ``ids`` into the cache; return those whose keys changed.

        In a transaction of its own, so the read is over before the batch's
        transaction begins whether or not ``conn`` is in autocommit.
        """
        if not ids:
            return set()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                """SELECT instrument_id, agent_id, public_key, retired_at FROM agent_keys
                   WHERE instrument_id = ANY(%s)""",
                (sorted(ids),),
            )
            found: dict[str, set[audit.AgentKey]] = {i: set() for i in ids}
            for instrument_id, agent_id, public_key, retired_at in cur.fetchall():
                retired = None if retired_at is None else audit.epoch_ms(retired_at)
                try:
                    key = audit.AgentKey(agent_id, bytes(public_key), retired)
                except WireError:
                    continue  # 32 bytes (the table's CHECK) that are no key verify nothing
                found[instrument_id].add(key)
        changed = set()
        for instrument_id, keys in found.items():
            old = self._cache.get(instrument_id)
            if old is not None and old.keys == keys:
                kept = old.keys
            else:
                kept = frozenset(keys)
                changed.add(instrument_id)
            self._cache[instrument_id] = _Enrolled(kept, now + self._ttl_s)
        return changed

    def _prune(self, now: float) -> None:
        """Now and then forget the instruments not heard from for ``kept_s``."""
        if now < self._next_prune:
            return
        kept = now - self._kept_s
        self._cache = {i: entry for i, entry in self._cache.items() if entry.expires > kept}
        self._next_prune = now + self._ttl_s


def verdicts(
    cur: psycopg.Cursor[TupleRow], events: Sequence[EventRow], signed: Sequence[Verification]
) -> list[Verification]:
    """The verdict of each of ``events``, in order, given ``signed``, its signature's.

    Only the chain is checked here. A predecessor is the stored event, else
    the batch's first copy of it (the one that will be stored): a later copy
    may conflict with it, and must not judge the events after it.
    """
    in_batch: dict[_Link, wire.Event] = {}
    for row in events:
        in_batch.setdefault((row.instrument_id, row.event.seq), row.event)
    wanted: dict[_Link, datetime] = {}
    for row, verdict in zip(events, signed, strict=True):
        if verdict is Verification.OK and row.event.seq > 1:
            wanted[(row.instrument_id, row.event.seq - 1)] = row.device_time
    predecessors = in_batch | _stored(cur, wanted)
    return [
        audit.linked(verdict, row.event, predecessors.get((row.instrument_id, row.event.seq - 1)))
        for row, verdict in zip(events, signed, strict=True)
    ]


def settle_gaps(
    cur: psycopg.Cursor[TupleRow], inserted: Sequence[EventRow], gaps: Sequence[EventRow]
) -> dict[_Link, Verification]:
    """Re-judge the stored ``gap`` events whose predecessor is now stored; return the new verdicts.

    Those are the events following ``inserted``, and ``gaps``, those of
    ``inserted`` judged ``gap``: their predecessor may have been stored by
    another collector at the same time, not committed yet when they were
    judged, or stored outside the window ``verdicts`` looked in; here it is
    looked for at any time. Runs under the instruments' locks, so every
    predecessor committed before is visible. The gaps are found through the
    partial index ``events_gap``: they are few.
    """
    links = {(row.instrument_id, row.event.seq + 1) for row in inserted}
    links |= {(row.instrument_id, row.event.seq) for row in gaps}
    if not links:
        return {}
    ids, seqs = zip(*links, strict=True)
    cur.execute(
        f"SELECT {_columns('e')}, {_columns('p')} "
        "FROM unnest(%s::text[], %s::bigint[]) AS u(id, s) "
        "JOIN events e ON e.instrument_id = u.id AND e.seq = u.s AND e.verification = 'gap' "
        "JOIN events p ON p.instrument_id = e.instrument_id AND p.seq = e.seq - 1",
        (list(ids), list(seqs)),
    )
    settled: dict[_Link, Verification] = {}
    updates = []
    for row in cur.fetchall():
        event, predecessor = _event(row[:_WIDTH]), _event(row[_WIDTH:])
        link = audit.chain_link(event, predecessor)
        if link is not Verification.GAP:
            settled[(event.instrument, event.seq)] = link
            updates.append((link.value, event.instrument, event.seq, row[1]))
    if updates:
        cur.executemany(
            "UPDATE events SET verification = %s "
            "WHERE instrument_id = %s AND seq = %s AND boot_id = %s AND verification = 'gap'",
            updates,
        )
    return settled


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _STORED.split(", "))


def _stored(
    cur: psycopg.Cursor[TupleRow], wanted: Mapping[_Link, datetime]
) -> dict[_Link, wire.Event]:
    """The stored events of the ``wanted`` (instrument, seq) pairs, each the predecessor of
    an event of the device time given, if stored within ``PREDECESSOR_WINDOW`` of the batch.

    ``events`` is split into 30-day chunks by device time, and a look-up by
    seq alone probes every chunk: about 4 µs per event per month of history.
    Predecessors are almost always in the window (one or two chunks); one
    that is not (an instrument idle for longer, a device clock set back)
    leaves its successor a ``gap`` for ``settle_gaps``, which finds it
    wherever it is.
    """
    if not wanted:
        return {}
    before, after = PREDECESSOR_WINDOW
    ids, seqs = zip(*wanted, strict=True)
    times = wanted.values()
    params = {
        "ids": list(ids),
        "seqs": list(seqs),
        "after": min(times) - before,
        "until": max(times) + after,
    }
    cur.execute(_NEAR, params)
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
