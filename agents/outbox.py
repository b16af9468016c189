"""The agent's on-disk outbox: events not yet committed by the collector, and the chain head.

An event is written here before it is sent and deleted only when the
collector's application-level ack says it is in the database (a broker PUBACK
is not enough, see DESIGN.md). The chain head (next seq, hash of the last
event) is updated in the same SQLite transaction as the event insert, with
WAL and ``synchronous=FULL``, so a power cut or ``kill -9`` can neither reuse
a sequence number nor break the hash chain.

It is used from the agent's main thread only: the MQTT network thread hands
acks over instead of deleting events itself (see ``agents.publisher``), and
SQLite's same-thread check enforces that.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from instrumetry.domain import wire
from instrumetry.domain.chain import ChainHead
from instrumetry.domain.errors import ConfigError

FILE_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 1

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


class Outbox:
    """Pending events and the chain head of one instrument, in ``state_dir``.

    ``boot`` is a fresh random id per opening, i.e. per agent process start:
    events carry it so the collector can tell restarts apart.
    """

    def __init__(self, state_dir: Path) -> None:
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
        next_seq, prev = self._db.execute("SELECT next_seq, prev FROM chain").fetchone()
        return ChainHead(next_seq, prev)

    def add(self, event: wire.Event) -> ChainHead:
        """Store ``event`` and advance the chain past it, atomically; return the new head.

        ``event`` must continue the chain (``seq`` and ``prev`` match the head),
        otherwise ``ValueError``: a gap or fork would be a bug, never data.
        """
        new_head = ChainHead(event.seq + 1, wire.event_hash(event))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            head = self.head()
            if (event.seq, event.prev) != (head.next_seq, head.prev):
                raise ValueError(
                    f"event seq {event.seq} does not continue the chain at seq {head.next_seq}"
                )
            self._db.execute(
                "INSERT INTO events (seq, payload) VALUES (?, ?)", (event.seq, wire.encode(event))
            )
            self._db.execute(
                "UPDATE chain SET next_seq = ?, prev = ?", (new_head.next_seq, new_head.prev)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return new_head

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
        count: int = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        return count

    def ack(self, seqs: Iterable[int]) -> int:
        """Forget events the collector has committed; return how many were still pending."""
        rows = [(seq,) for seq in seqs]
        self._db.execute("BEGIN IMMEDIATE")
        deleted = self._db.executemany("DELETE FROM events WHERE seq = ?", rows).rowcount
        self._db.execute("COMMIT")
        return deleted
