"""The watch: a thread for what only the passing of time reveals or requires.

A Last Will arrives as a message, but an agent behind a dead network link may
never get one published, and a broker restart can lose it; only the passing
of time reveals those. The watch sweeps for them every few seconds on a
connection of its own (a batch in progress never waits for it), and keeps the
"agents online" gauge current. Once an hour it also drops the heartbeat chunks
past the retention window. With several collectors each does both; both are
idempotent (the sweep under the instruments' row locks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector import db, liveness, power
from instrumetry.domain.errors import ServiceError

log = logging.getLogger(__name__)

_CHECK_MAX_S = 15.0
PRUNE_EVERY_S = 3600.0
"""How often the watch drops the heartbeat chunks past the retention window."""


class LivenessWatch:
    """Sweep for silent agents every ``timeout / 4`` (at most 15 s) until ``stop()``.

    With a ``retention`` window, also drop the heartbeats past it at the first
    sweep and every ``PRUNE_EVERY_S`` after; ``on_prune`` gets how many chunks went.
    """

    def __init__(
        self,
        database_url: str,
        timeout: timedelta,
        on_sweep: Callable[[list[str], int], None],
        retention: timedelta | None = None,
        on_prune: Callable[[int], None] = lambda dropped: None,
    ) -> None:
        self._database_url = database_url
        self._timeout = timeout
        self._on_sweep = on_sweep
        self._retention = retention
        self._on_prune = on_prune
        self._next_prune = 0.0
        self._check_s = min(timeout.total_seconds() / 4, _CHECK_MAX_S)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread; idempotent, and safe before ``start``."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: psycopg.Connection[TupleRow] | None = None
        while not self._stopping.wait(self._check_s):
            try:
                if conn is None or conn.closed:
                    conn = db.connect_ingest(self._database_url)
                now = datetime.now(UTC)
                opened = liveness.sweep(conn, now, self._timeout)
                self._on_sweep(opened, liveness.online(conn, now, self._timeout))
                self._prune(conn, now)
            except (ServiceError, psycopg.Error) as error:
                log.warning("liveness sweep failed (%s); trying again later", error)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _prune(self, conn: psycopg.Connection[TupleRow], now: datetime) -> None:
        """Drop the heartbeats past the window, if an hour has passed since the last try."""
        if self._retention is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_S  # a failure is tried again then
        try:
            dropped = power.drop_heartbeats(conn, now - self._retention)
        except psycopg.Error as error:  # say, a database role that does not own the table
            log.warning("dropping heartbeats past the retention window failed (%s)", error)
            return
        if dropped:
            log.info(
                "dropped %d heartbeat chunk(s) older than %s (retention %d days)",
                len(dropped),
                (now - self._retention).isoformat(timespec="seconds"),
                self._retention.days,
            )
        self._on_prune(len(dropped))
