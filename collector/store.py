"""Writing one batch of parsed messages in one transaction, idempotently.

Rows go in by binary COPY, the fastest way in, and the unique keys make a
redelivered message a no-op, so "at least once" on the wire becomes "exactly
once" in the tables: events straight into ``events`` (through a temp table
only when some are there already), heartbeats through a temp table and
``INSERT ... ON CONFLICT DO NOTHING``. Everything a batch changes (rows, dead
letters, ``last_seen``, intervals) commits together or not at all, so the
caller may ack the batch's messages exactly when this returns.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector import db, liveness, power, rollups, verify
from collector.ingest import DeadLetter, EventRow, HeartbeatRow, Parsed, Reason, Row, StatusRow
from collector.rebuild import rebuild_intervals
from instrumetry.domain.audit import AUTHENTIC, Verification

log = logging.getLogger(__name__)

_EVENT_TYPES = {
    "instrument_id": "text",
    "boot_id": "uuid",
    "seq": "int8",
    "device_time": "timestamptz",
    "received_at": "timestamptz",
    "from_state": "text",
    "to_state": "text",
    "power_w": "float8",
    "prev_hash": "bytea",
    "signature": "bytea",
    "verification": "text",
}
"""The columns of ``events`` a batch writes, with the types they are COPYed as."""
_EVENT_COLUMNS = ", ".join(_EVENT_TYPES)
_HEARTBEAT_TYPES = {
    "instrument_id": "text",
    "boot_id": "uuid",
    "device_time": "timestamptz",
    "received_at": "timestamptz",
    "state": "text",
    "last_seq": "int8",
    "samples": "int4",
    "power_min_w": "float4",
    "power_mean_w": "float4",
    "power_max_w": "float4",
}
_HEARTBEAT_COLUMNS = ", ".join(_HEARTBEAT_TYPES)
# A second copy of an event is a duplicate if these match, else a conflict. The
# device-time bounds let TimescaleDB skip chunks the batch cannot touch.
_DIFFERING = """
SELECT i.item FROM ingest_events i JOIN events e USING (instrument_id, boot_id, seq, device_time)
 WHERE i.item = ANY(%s) AND e.device_time BETWEEN %s AND %s
   AND (e.from_state, e.to_state, e.power_w, e.prev_hash, e.signature)
       IS DISTINCT FROM (i.from_state, i.to_state, i.power_w, i.prev_hash, i.signature)
"""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one committed batch did; ``committed`` is what may be acked to the agents."""

    committed: dict[str, list[int]] = field(default_factory=dict)
    """Per instrument, the seqs of its events the agent may forget: now in ``events`` (new or
    already there) or, if they conflict with a stored event, kept as dead letters."""
    events_inserted: int = 0
    events_duplicate: int = 0
    heartbeats_inserted: int = 0
    heartbeats_duplicate: int = 0
    statuses: int = 0
    intervals_written: int = 0
    days_written: int = 0
    """Daily rollup rows recomputed (collector.rollups)."""
    power_hours: int = 0
    """Hourly power rows the new heartbeats changed, current or kept (collector.power)."""
    dead_letters: tuple[DeadLetter, ...] = ()
    verdicts: dict[str, int] = field(default_factory=dict)
    """How many new events got each verification verdict."""
    offline_opened: int = 0
    clock_skews: tuple[tuple[str, timedelta], ...] = ()
    """(instrument, receive time - device time) of each heartbeat received."""

    def merge(self, other: StoreResult) -> StoreResult:
        """Both results as one, for a batch stored in several transactions."""
        committed = {key: list(seqs) for key, seqs in self.committed.items()}
        for instrument_id, seqs in other.committed.items():
            committed[instrument_id] = sorted({*committed.get(instrument_id, ()), *seqs})
        return StoreResult(
            committed=committed,
            events_inserted=self.events_inserted + other.events_inserted,
            events_duplicate=self.events_duplicate + other.events_duplicate,
            heartbeats_inserted=self.heartbeats_inserted + other.heartbeats_inserted,
            heartbeats_duplicate=self.heartbeats_duplicate + other.heartbeats_duplicate,
            statuses=self.statuses + other.statuses,
            intervals_written=self.intervals_written + other.intervals_written,
            days_written=self.days_written + other.days_written,
            power_hours=self.power_hours + other.power_hours,
            dead_letters=self.dead_letters + other.dead_letters,
            verdicts={
                verdict: self.verdicts.get(verdict, 0) + other.verdicts.get(verdict, 0)
                for verdict in {*self.verdicts, *other.verdicts}
            },
            offline_opened=self.offline_opened + other.offline_opened,
            clock_skews=self.clock_skews + other.clock_skews,
        )


def store(
    conn: psycopg.Connection[TupleRow],
    batch: Sequence[Parsed],
    keys: verify.EnrolledKeys | None = None,
    prechecked: verify.Prechecked | None = None,
    retention: timedelta | None = None,
) -> StoreResult:
    """Store ``batch``; if the database refuses some of its data, store message by message.

    A message the database refuses on its own (a value out of range, a
    constraint it violates) becomes a ``rejected`` dead letter, so one bad row
    never wedges the collector. Lost connections and schema problems raise,
    for the caller to retry: those are not the message's fault. ``keys``,
    ``prechecked`` and ``retention`` are as for ``store_batch``.
    """
    keys = keys or verify.EnrolledKeys()
    try:
        return store_batch(conn, batch, keys, prechecked, retention)
    except (psycopg.DataError, psycopg.IntegrityError) as error:
        if len(batch) == 1:
            rejected = DeadLetter(batch[0].source, Reason.REJECTED, _one_line(error))
            return store_batch(conn, [rejected], keys)
        log.warning("database refused a batch (%s); storing its messages one by one", error)
        result = StoreResult()
        for item in batch:
            result = result.merge(store(conn, [item], keys, prechecked, retention))
        return result


def store_batch(
    conn: psycopg.Connection[TupleRow],
    batch: Sequence[Parsed],
    keys: verify.EnrolledKeys | None = None,
    prechecked: verify.Prechecked | None = None,
    retention: timedelta | None = None,
) -> StoreResult:
    """Store every row and dead letter of ``batch`` in one transaction.

    Concurrent collectors of a shared subscription store the same instruments
    at once, so the instruments' row locks are taken late, and held only for
    what one instrument's rows must see in turn. Before them, with no lock:
    signatures are checked (outside the transaction, the costliest part),
    events, heartbeats and dead letters are inserted (their unique keys make
    concurrent copies of a message one row), each event is judged against the
    predecessors already visible. Under the locks, taken in id order: gaps
    that another collector's commit has filled since are settled, then
    statuses, liveness, ``last_seen``, intervals, rollups and hourly power,
    each of which reads every event of its instruments committed before.
    ``keys`` caches the enrolled keys between batches; without it they are
    read for this batch alone. ``prechecked`` is what ``keys.precheck`` found
    of this batch beforehand. ``retention`` is the raw heartbeats' retention
    window (``collector.power.fold``); ``None`` keeps them for good.
    """
    rows = [item for item in batch if not isinstance(item, DeadLetter)]
    dead_letters = [item for item in batch if isinstance(item, DeadLetter)]
    all_events = [row for row in rows if isinstance(row, EventRow)]
    signatures = (keys or verify.EnrolledKeys()).signatures(conn, all_events, prechecked)
    signed = {id(row): v for row, v in zip(all_events, signatures, strict=True)}
    with conn.transaction(), conn.cursor() as cur:
        known = _registered(cur, {row.instrument_id for row in rows})
        dead_letters += [_unknown(row) for row in rows if row.instrument_id not in known]
        accepted = [row for row in rows if row.instrument_id in known]
        events = [row for row in accepted if isinstance(row, EventRow)]
        heartbeats = [row for row in accepted if isinstance(row, HeartbeatRow)]
        statuses = [row for row in accepted if isinstance(row, StatusRow)]
        # Keyed by row identity: cheaper than the event key, and each row has its own.
        chained = verify.verdicts(cur, events, [signed[id(row)] for row in events])
        verdicts = {id(row): v for row, v in zip(events, chained, strict=True)}
        inserted, conflicts = _store_events(cur, events, verdicts)
        dead_letters += conflicts
        new_heartbeats = _store_heartbeats(cur, heartbeats)
        _store_dead_letters(cur, dead_letters)
        _lock_instruments(cur, {row.instrument_id for row in accepted})
        gaps = [row for row in inserted if verdicts[id(row)] is Verification.GAP]
        settled = verify.settle_gaps(cur, inserted, gaps)
        verdicts |= {id(row): settled[_link(row)] for row in inserted if _link(row) in settled}
        _store_statuses(cur, statuses)
        # Settling changes no event's authenticity: a chain verdict is authentic either way.
        forged = {id(row) for row in events if verdicts[id(row)] not in AUTHENTIC}
        recorded = liveness.record(cur, [row for row in accepted if id(row) not in forged])
        earliest = _earliest(inserted)
        for instrument_id, start in recorded.earliest.items():
            earliest[instrument_id] = min(start, earliest.get(instrument_id, start))
        intervals_written = rebuild_intervals(cur, earliest)
        changed = {i: rollups.changed_from(start) for i, start in earliest.items()}
        days_written = rollups.refresh(cur, changed, recorded.moved)
        power_hours = power.fold(cur, new_heartbeats, retention)
    committed: dict[str, set[int]] = {}
    for row in events:
        committed.setdefault(row.instrument_id, set()).add(row.event.seq)
    return StoreResult(
        committed={instrument_id: sorted(seqs) for instrument_id, seqs in committed.items()},
        events_inserted=len(inserted),
        events_duplicate=len(events) - len(inserted) - len(conflicts),
        heartbeats_inserted=len(new_heartbeats),
        heartbeats_duplicate=len(heartbeats) - len(new_heartbeats),
        statuses=len(statuses),
        intervals_written=intervals_written,
        days_written=days_written,
        power_hours=power_hours,
        dead_letters=tuple(dead_letters),
        verdicts=dict(Counter(verdicts[id(row)].value for row in inserted)),
        offline_opened=recorded.opened,
        clock_skews=recorded.skews,
    )


def _registered(cur: psycopg.Cursor[TupleRow], ids: set[str]) -> set[str]:
    """The registered ones among ``ids``."""
    if not ids:
        return set()
    cur.execute("SELECT id FROM instruments WHERE id = ANY(%s)", (sorted(ids),))
    return {instrument_id for (instrument_id,) in cur.fetchall()}


def _lock_instruments(cur: psycopg.Cursor[TupleRow], ids: set[str]) -> None:
    """Row-lock the instruments ``ids`` until commit.

    The locks (taken in id order, so two collectors cannot deadlock) make
    concurrent collectors of a shared subscription derive one instrument's
    state in turn, so each rebuild sees the other's committed events. No
    statement before them waits for another collector's lock: an insert
    waits only when the other inserts the same key, and then holds no lock.
    """
    if ids:
        cur.execute(
            "SELECT id FROM instruments WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            (sorted(ids),),
        )


def _link(row: EventRow) -> tuple[str, int]:
    return (row.instrument_id, row.event.seq)


def _unknown(row: Row) -> DeadLetter:
    detail = f"instrument {row.instrument_id!r} is not registered"
    return DeadLetter(row.source, Reason.UNKNOWN_INSTRUMENT, detail)


_EventKey = tuple[str, uuid.UUID, int, datetime]


def _key(row: EventRow) -> _EventKey:
    return (row.instrument_id, row.boot_id, row.event.seq, row.device_time)


def _store_events(
    cur: psycopg.Cursor[TupleRow],
    events: Sequence[EventRow],
    verdicts: dict[int, Verification],
) -> tuple[list[EventRow], list[DeadLetter]]:
    """Insert what is new; return the rows inserted and the conflicting copies.

    A second copy of an event (same key) is a duplicate if its content is the
    same and a conflict otherwise: an agent must never reuse a key, so a
    conflict is evidence, kept as a dead letter (every copy of it), never
    silently dropped.

    Almost every batch is new: it is COPYed straight into ``events``
    (``_copied_whole``). Only if some key is stored already (a redelivery
    after a crash, an agent resending what it was never acked for) does the
    batch go through a temp table, which sorts the new from the present.
    """
    copies: dict[_EventKey, list[EventRow]] = {}
    for row in events:
        copies.setdefault(_key(row), []).append(row)
    conflicts = [
        _conflict(row) for same in copies.values() for row in same if row.event != same[0].event
    ]
    if not copies:
        return [], conflicts
    keys = list(copies)  # each key once, its first copy the candidate: item n is keys[n]
    if _copied_whole(cur, lambda: _copy_events(cur, keys, copies, verdicts, staged=False)):
        return [copies[key][0] for key in keys], conflicts
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ingest_events (item integer NOT NULL, LIKE events) "
        "ON COMMIT DELETE ROWS"
    )
    _copy_events(cur, keys, copies, verdicts, staged=True)
    cur.execute(
        f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM ingest_events "
        "ORDER BY item ON CONFLICT DO NOTHING RETURNING instrument_id, boot_id, seq, device_time"
    )
    new_keys = {tuple(key) for key in cur.fetchall()}
    inserted = [copies[key][0] for key in keys if key in new_keys]
    present = [item for item, key in enumerate(keys) if key not in new_keys]
    for item in _differing(cur, present, [keys[item][3] for item in present]) if present else []:
        same = copies[keys[item]]
        conflicts += [_conflict(row) for row in same if row.event == same[0].event]
    return inserted, conflicts


def _copy_events(
    cur: psycopg.Cursor[TupleRow],
    keys: list[_EventKey],
    copies: dict[_EventKey, list[EventRow]],
    verdicts: dict[int, Verification],
    *,
    staged: bool,
) -> None:
    """COPY the first copy of each key into ``events``, or ``staged`` with its item number."""
    staging = ("ingest_events", {"item": "int4"} | _EVENT_TYPES)
    with db.copy_in(cur, *(staging if staged else ("events", _EVENT_TYPES))) as copy:
        for n, key in enumerate(keys):
            row = copies[key][0]
            event = row.event
            values = (
                *key,
                row.source.received_at,
                event.from_state.value,
                event.to_state.value,
                event.power_w,
                bytes.fromhex(event.prev),
                row.signature,
                verdicts[id(row)].value,
            )
            copy.write_row((n, *values) if staged else values)


def _differing(cur: psycopg.Cursor[TupleRow], items: list[int], times: list[datetime]) -> list[int]:
    """Which of ``items`` (rows of ``ingest_events`` already in ``events``) differ from it.

    ``times`` are their device times, to bound the search to the chunks they can be in.
    """
    cur.execute(_DIFFERING, (items, min(times), max(times)))
    return [item for (item,) in cur.fetchall()]


def _conflict(row: EventRow) -> DeadLetter:
    detail = (
        f"event seq {row.event.seq} of boot {row.event.boot} at {row.event.t} ms is already "
        "stored with different content"
    )
    return DeadLetter(row.source, Reason.CONFLICT, detail)


def _store_heartbeats(
    cur: psycopg.Cursor[TupleRow], heartbeats: Sequence[HeartbeatRow]
) -> list[HeartbeatRow]:
    """Insert the new heartbeats; return them (a key's first copy, if a batch repeats it).

    Straight into ``heartbeats`` if none is there yet, as ``_store_events`` does.
    """
    unique: dict[tuple[str, str, datetime], HeartbeatRow] = {}
    for row in heartbeats:
        unique.setdefault(_heartbeat_key(row), row)
    firsts = list(unique.values())
    if not firsts:
        return []
    if _copied_whole(cur, lambda: _copy_heartbeats(cur, "heartbeats", firsts)):
        return firsts
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ingest_heartbeats (LIKE heartbeats) ON COMMIT DELETE ROWS"
    )
    _copy_heartbeats(cur, "ingest_heartbeats", firsts)
    cur.execute(
        f"INSERT INTO heartbeats ({_HEARTBEAT_COLUMNS}) SELECT {_HEARTBEAT_COLUMNS} "
        "FROM ingest_heartbeats ON CONFLICT DO NOTHING "
        "RETURNING instrument_id, boot_id, device_time"
    )
    new = {(instrument_id, boot.hex, when) for instrument_id, boot, when in cur.fetchall()}
    return [row for row in firsts if _heartbeat_key(row) in new]


def _heartbeat_key(row: HeartbeatRow) -> tuple[str, str, datetime]:
    """The heartbeat's unique key; its boot as the wire has it, the form of ``UUID.hex``."""
    return (row.instrument_id, row.heartbeat.boot, row.device_time)


def _copy_heartbeats(
    cur: psycopg.Cursor[TupleRow], table: str, heartbeats: Sequence[HeartbeatRow]
) -> None:
    with db.copy_in(cur, table, _HEARTBEAT_TYPES) as copy:
        for row in heartbeats:
            beat = row.heartbeat
            copy.write_row(
                (
                    beat.instrument,
                    row.boot_id,
                    row.device_time,
                    row.source.received_at,
                    beat.state.value,
                    beat.last_seq,
                    beat.samples,
                    beat.power_min_w,
                    beat.power_mean_w,
                    beat.power_max_w,
                )
            )


def _copied_whole(cur: psycopg.Cursor[TupleRow], copy: Callable[[], None]) -> bool:
    """Whether ``copy`` (COPY into a table with a unique key) went in whole, under a savepoint.

    If some row's key is stored already, nothing of it stays, and the caller
    sorts the new rows from the present ones through a temp table: a COPY
    cannot skip a row, and almost every batch is new.
    """
    try:
        with cur.connection.transaction():
            copy()
    except psycopg.errors.UniqueViolation:
        return False
    return True


def _store_statuses(cur: psycopg.Cursor[TupleRow], statuses: Sequence[StatusRow]) -> None:
    """Record each instrument's latest announced status; the last one received wins.

    Arrival order, not the device time, decides: an agent's Last Will carries
    the time it was registered at connect, older than the "online" it follows.
    """
    latest = {row.instrument_id: row for row in statuses}
    if not latest:
        return
    rows = list(latest.values())
    cur.execute(
        """INSERT INTO agent_status (instrument_id, status, boot_id, changed_at, received_at)
           SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::timestamptz[],
                                %s::timestamptz[])
           ON CONFLICT (instrument_id) DO UPDATE
              SET status = EXCLUDED.status, boot_id = EXCLUDED.boot_id,
                  changed_at = EXCLUDED.changed_at, received_at = EXCLUDED.received_at""",
        (
            [row.instrument_id for row in rows],
            [row.status.status for row in rows],
            [row.boot_id for row in rows],
            [row.device_time for row in rows],
            [row.source.received_at for row in rows],
        ),
    )


def _store_dead_letters(cur: psycopg.Cursor[TupleRow], dead_letters: Sequence[DeadLetter]) -> None:
    if not dead_letters:
        return
    with cur.copy(
        "COPY dead_letters (received_at, topic, payload, reason, detail) FROM STDIN"
    ) as copy:
        for letter in dead_letters:
            source = letter.source
            copy.write_row(
                (
                    source.received_at,
                    _text(source.topic),
                    source.payload,
                    letter.reason.value,
                    _text(letter.detail),
                )
            )


def _earliest(rows: Iterable[EventRow]) -> dict[str, datetime]:
    """Per instrument, the earliest device time among ``rows``."""
    earliest: dict[str, datetime] = {}
    for row in rows:
        earliest[row.instrument_id] = min(
            row.device_time, earliest.get(row.instrument_id, row.device_time)
        )
    return earliest


def _text(value: str) -> str:
    """``value`` as PostgreSQL ``text`` can hold it: NUL is the one character it cannot."""
    return value.replace("\x00", "\\x00")


def _one_line(error: psycopg.Error) -> str:
    message = " ".join(str(error).split())
    return f"{error.sqlstate}: {message}" if error.sqlstate else message
