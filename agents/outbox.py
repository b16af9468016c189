"""The agent's on-disk outbox: events not yet committed by the collector, and the chain head.

An event is written here before it is sent and deleted only when the
collector's application-level ack says it is in the database (a broker PUBACK
is not enough, see DESIGN.md). The chain head (next seq, hash of the last
event) is updated in the same SQLite transaction as the event insert, with
WAL and ``synchronous=FULL``, so a power cut or ``kill -9`` can neither reuse
a sequence number nor break the hash chain. Several events can share one
transaction (``batch``: one commit, one fsync, for a step of the simulator's
fleet, which feeds an agent an hour of readings at once); nothing is sent
before that commit.

The outbox is bounded (``max_events``, ``max_bytes``) so weeks without a
collector cannot fill the disk. ``full`` turns true while there is still room
for one more event: the agent uses that reserve to record that it stops
knowing (a transition to ``unknown``) and then pauses classification until
acks make room (docs/AGENT.md, "When the outbox is full"). No stored event
is ever dropped to make room.

It is used from the agent's main thread only: the MQTT network thread hands
acks over instead of deleting events itself (see ``agents.publisher``), and
SQLite's same-thread check enforces that.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from instrumetry.domain import wire
from instrumetry.domain.chain import ChainHead
from instrumetry.domain.errors import ConfigError, ServiceError

FILE_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1
RESERVE_BYTES = wire.MAX_PAYLOAD_BYTES
"""Room kept for the last event before the outbox counts as full: the largest payload."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq INTEGER NOT NULL,
    prev TEXT NOT NULL
);
INSERT OR IGNORE INTO chain (id, next_seq, prev) VALUES (1, 1, '{wire.GENESIS}');
PRAGMA user_version = {SCHEMA_VERSION};
"""


class OutboxFull(ServiceError):
    """An event would exceed the outbox's bounds; the caller should have checked ``full``."""


class Outbox:
    """Pending events and the chain head of one instrument, in ``state_dir``.

    ``boot`` is a fresh random id per opening, i.e. per agent process start:
    events carry it so the collector can tell restarts apart.
    """

    def __init__(
        self, state_dir: Path, *, max_events: int = 100_000, max_bytes: int = 64 * 2**20
    ) -> None:
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(state_dir / FILE_NAME, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"{state_dir / FILE_NAME}: outbox schema v{version} is newer than this "
                    f"agent's v{SCHEMA_VERSION}; upgrade the agent"
                )
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"{state_dir}: cannot open the outbox: {error}") from None
        self.boot = uuid.uuid4().hex
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._batching = False
        next_seq, prev = self._db.execute("SELECT next_seq, prev FROM chain").fetchone()
        self._head = ChainHead(next_seq, prev)  # kept in memory: only ``add`` moves it
        self.last_seq = next_seq - 1
        """The newest event's seq (0: none yet), kept in memory for the publisher's checks."""
        # Kept in memory: the agent checks ``full`` on every poll.
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM events"
        ).fetchone()
        self._count: int = count
        self._bytes: int = size

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def head(self) -> ChainHead:
        """Where the chain stands: the next seq and the hash of the last event."""
        return self._head

    def add(self, event: wire.Event) -> ChainHead:
        """Store ``event`` and advance the chain past it, atomically; return the new head.

        ``event`` must continue the chain (``seq`` and ``prev`` match the head),
        otherwise ``ValueError``: a gap or fork would be a bug, never data.
        """
        new_head = ChainHead(event.seq + 1, wire.event_hash(event))
        payload = wire.encode(event)
        if self._count >= self.max_events or self._bytes + len(payload) > self.max_bytes:
            raise OutboxFull(
                f"outbox full: {self._count} events, {self._bytes} bytes "
                f"(max {self.max_events} events, {self.max_bytes} bytes)"
            )
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        try:
            if (event.seq, event.prev) != (self._head.next_seq, self._head.prev):
                raise ValueError(
                    f"event seq {event.seq} does not continue the chain at seq "
                    f"{self._head.next_seq}"
                )
            self._db.execute(
                "INSERT INTO events (seq, payload) VALUES (?, ?)", (event.seq, payload)
            )
            self._db.execute(
                "UPDATE chain SET next_seq = ?, prev = ?", (new_head.next_seq, new_head.prev)
            )
        except BaseException:
            if not self._batching:
                self._db.execute("ROLLBACK")
            raise
        if not self._batching:
            self._db.execute("COMMIT")
        self._count += 1
        self._bytes += len(payload)
        self.last_seq = event.seq
        self._head = new_head
        return new_head

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make the ``add``s inside one transaction: one commit (one fsync) for all of them.

        Nothing added inside is stored, nor may be sent, before the block ends;
        if the block raises, none of it is stored. A block that adds nothing
        touches the database not at all.
        """
        if self._batching:
            raise RuntimeError("outbox batches do not nest")
        count, size, last_seq, head = self._count, self._bytes, self.last_seq, self._head
        self._batching = True
        try:
            yield
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._count, self._bytes, self.last_seq, self._head = count, size, last_seq, head
            raise
        finally:
            self._batching = False

    def pending(self, limit: int, after: int = 0) -> list[tuple[int, bytes]]:
        """The oldest ``limit`` unacknowledged events with a seq above ``after``.

        Returned as ``(seq, payload)`` in seq order; ``after`` lets the publisher
        skip what it has already sent without reading it again.
        """
        rows = self._db.execute(
            "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [(seq, bytes(payload)) for seq, payload in rows]

    def count(self) -> int:
        """How many events wait for the collector's ack."""
        return self._count

    def size(self) -> int:
        """Bytes of the payloads waiting for the collector's ack."""
        return self._bytes

    @property
    def full(self) -> bool:
        """Whether only the reserve for one last event is left."""
        return self._count >= self.max_events - 1 or (self._bytes > self.max_bytes - RESERVE_BYTES)

    def ack(self, seqs: Iterable[int]) -> int:
        """Forget events the collector has committed; return how many were still pending."""
        freed: list[int] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for seq in seqs:
                row = self._db.execute(
                    "DELETE FROM events WHERE seq = ? RETURNING length(payload)", (seq,)
                ).fetchone()
                if row is not None:
                    freed.append(row[0])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._count -= len(freed)
        self._bytes -= sum(freed)
        return len(freed)
