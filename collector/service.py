"""The collector service: MQTT in, batched database commits, acks only after commit.

A child process receives the messages (``collector.receiver``: paho, with
an interpreter lock of its own) and a thread here queues them; the thread
that calls ``serve`` takes batches off the queue, parses them and checks
their signatures against the cached keys; a storing thread stores each in
one transaction and then has it acknowledged twice — to the broker (PUBACK,
so a crash before the commit means redelivery, not loss) and to the agents
(an ``Ack`` per instrument, so they may drop the events from their outboxes).

Back-pressure needs no code: un-acked messages count against the in-flight
window the collector asks the broker for (two batches), so during a database
outage the broker stops sending and keeps the backlog in the persistent session.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector import db, migrate, sigcheck, verify
from collector.ingest import EventRow, Parsed, parse_message
from collector.metrics import CollectorMetrics, MetricsServer
from collector.receiver import Delivery, Receiver, ReceiverConfig
from collector.settings import CollectorSettings
from collector.store import StoreResult, store
from collector.watch import LivenessWatch
from instrumetry.domain import topics, wire
from instrumetry.domain.errors import ServiceError

log = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 15.0
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 30.0
_SHUTDOWN_FLUSH_S = 5.0
_ACK_SEQS_MAX = 500
"""Seqs per Ack payload: 500 nineteen-digit seqs stay well under wire.MAX_PAYLOAD_BYTES."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch parsed, with what ``EnrolledKeys.precheck`` found of its signatures."""

    batch: list[Delivery]
    parsed: list[Parsed]
    prechecked: verify.Prechecked


class Collector:
    """One collector: ``start()``, then ``serve()`` until another thread calls ``stop()``.

    ``run()`` does both. Several collectors with different ``client_id`` and
    the same ``share_group`` split the traffic between them.
    """

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self._inbox: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._stop_requested = False
        self._lost: str | None = None
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._receiver = Receiver(ReceiverConfig.of(settings), self._inbox.put, self._on_lost)
        self.metrics = CollectorMetrics()
        self._metrics_server: MetricsServer | None = None
        self._watch = LivenessWatch(
            settings.database_url,
            timedelta(seconds=settings.heartbeat_timeout_s),
            self._on_sweep,
            settings.heartbeat_retention,
            self.metrics.heartbeat_chunks_dropped.inc,
        )
        self._skewed: set[str] = set()
        self._keys = verify.EnrolledKeys()  # precheck: serve's thread; the rest: the storing one
        self._checker = sigcheck.Checker(
            settings.signature_processes, self.metrics.signature_child_failures.inc
        )
        self._batched = 0  # messages taken off the inbox and not yet through _process
        self._batched_lock = threading.Lock()
        self.metrics.messages_in_hand.set_function(self._messages_in_hand)

    def run(self) -> None:
        """Start, then serve until ``stop()``."""
        self.start()
        self.serve()

    def start(self) -> None:
        """Connect to the database (migrating it) and subscribe at the broker.

        Raises ``ServiceError`` naming the service that is unreachable or
        refused us; nothing is left open then.
        """
        conn = self._database()
        try:
            migrate.migrate(conn, report=log.info)
            log.info("enrolled keys of %d instruments cached", self._keys.preload(conn))
            self._receiver.start(_STARTUP_TIMEOUT_S)
            if self.settings.metrics_port:
                self._metrics_server = MetricsServer(
                    self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port
                )
            self._watch.start()
        except BaseException:
            self.close()
            raise

    def serve(self) -> None:
        """Store and ack batches until ``stop()``; then store what is in hand and disconnect.

        Two stages: this thread collects a batch, parses it and has its
        signatures checked (``sigcheck``: in a child process, most of the CPU
        time) while a storing thread commits and acks the batch before, so
        the checks overlap the storing thread's work and its waits for
        PostgreSQL. Batches are stored one at a time, in order; at most two
        are in hand, as the broker's in-flight window bounds anyway. Raises
        ``ServiceError`` if the receiving process ended on its own.
        """
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="collector-store") as storing:
                stored: Future[None] | None = None
                while not self._stop_requested:
                    prepared = self._prepare(self._next_batch(wait=True))
                    if stored is not None:
                        stored.result()  # an error there ends serve() here
                    stored = storing.submit(self._process, prepared)
                if stored is not None:
                    stored.result()
            while batch := self._next_batch(wait=False):
                self._process(self._prepare(batch))
        finally:
            self.close()
        if self._lost is not None:
            raise ServiceError(f"{self._lost}; what was not acknowledged will be redelivered")

    def stop(self) -> None:
        """Ask ``serve`` to finish; safe to call from a signal handler or another thread."""
        self._stop_requested = True
        self._inbox.put(None)  # SimpleQueue.put is reentrant: safe inside a signal handler

    def close(self) -> None:
        """Disconnect from the broker and the database, stop the threads; idempotent."""
        self._watch.stop()
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        self._receiver.close(_SHUTDOWN_FLUSH_S)
        self._checker.close()
        if self._conn is not None:
            self._conn.close()

    def _on_lost(self, reason: str) -> None:
        """The receiving process ended on its own: store what is in hand, then fail."""
        log.error("%s", reason)
        self._lost = reason
        self.stop()

    # --- batches ----------------------------------------------------------

    def _next_batch(self, *, wait: bool) -> list[Delivery]:
        """Up to ``batch_max`` deliveries.

        Waiting, it blocks for the first one and then collects for at most
        ``batch_ms``, ending early at a stop request. Not waiting (the final
        drain), it takes what is queued now and skips stop requests.
        """
        batch: list[Delivery] = []
        deadline = 0.0
        while len(batch) < self.settings.batch_max:
            remaining = deadline - time.monotonic()
            try:
                if not wait:
                    item = self._inbox.get_nowait()
                elif not batch:
                    item = self._inbox.get()
                elif remaining > 0:
                    item = self._inbox.get(timeout=remaining)
                else:
                    break
            except queue.Empty:
                break
            if item is None:
                if wait:
                    break
                continue
            if not batch:
                deadline = time.monotonic() + self.settings.batch_ms / 1000
            batch.append(item)
        self._count_batched(len(batch))
        return batch

    def _count_batched(self, change: int) -> None:
        with self._batched_lock:
            self._batched += change

    def _messages_in_hand(self) -> float:
        """Received and not yet acked: queued, or in a batch (read at each scrape)."""
        with self._batched_lock:
            return self._inbox.qsize() + self._batched

    def _prepare(self, batch: list[Delivery]) -> _Prepared:
        """Parse ``batch`` and check its signatures against the cached keys (no database)."""
        parsed = [
            parse_message(d.received.topic, d.received.payload, d.received.received_at)
            for d in batch
        ]
        events = [row for row in parsed if isinstance(row, EventRow)]
        return _Prepared(batch, parsed, self._keys.precheck(events, self._checker))

    def _process(self, prepared: _Prepared) -> None:
        """Store a prepared batch, then ack it: on the storing thread while serving."""
        try:
            self._store_and_ack(prepared)
        finally:
            self._count_batched(-len(prepared.batch))

    def _store_and_ack(self, prepared: _Prepared) -> None:
        batch, parsed = prepared.batch, prepared.parsed
        if not batch:
            return
        started = time.monotonic()
        result = self._store_with_retry(parsed, prepared.prechecked)
        if result is None:
            return  # stopping during an outage: left un-acked, the broker redelivers
        self._acknowledge(batch, result)
        self._account(parsed, result, time.monotonic() - started)
        for letter in result.dead_letters:
            log.warning(
                "dead letter (%s) on %s: %s", letter.reason, letter.source.topic, letter.detail
            )
        log.debug(
            "batch of %d: %d events new, %d duplicate; %d heartbeats new; %d statuses; "
            "%d intervals rewritten; %d daily rollups; %d power hours; %d dead letters; %.1f ms",
            len(batch),
            result.events_inserted,
            result.events_duplicate,
            result.heartbeats_inserted,
            result.statuses,
            result.intervals_written,
            result.days_written,
            result.power_hours,
            len(result.dead_letters),
            (time.monotonic() - started) * 1000,
        )

    def _store_with_retry(
        self, parsed: list[Parsed], prechecked: verify.Prechecked
    ) -> StoreResult | None:
        """Store, retrying with backoff while the database fails; None if stopped meanwhile."""
        delay = _RETRY_MIN_S
        while True:
            try:
                return store(
                    self._database(),
                    parsed,
                    self._keys,
                    prechecked,
                    self.settings.heartbeat_retention,
                )
            except (ServiceError, psycopg.OperationalError) as error:
                self.metrics.database_retries.inc()
                self._drop_connection()
                log.warning("database unavailable (%s); retrying in %.1f s", error, delay)
            except psycopg.Error as error:
                self.metrics.database_retries.inc()
                self._drop_connection()
                log.error("database refused the batch (%s); retrying in %.1f s", error, delay)
            if not self._sleep(delay):
                return None
            delay = min(delay * 2, _RETRY_MAX_S)

    def _database(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect_ingest(self.settings.database_url)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; a plain flag keeps ``stop()`` signal-safe. False if stopped."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))
        return not self._stop_requested

    def _acknowledge(self, batch: list[Delivery], result: StoreResult) -> None:
        """PUBACK what the current connection delivered, then tell each agent what is committed."""
        acks = []
        for instrument_id, seqs in result.committed.items():
            topic = topics.topic(topics.Kind.ACKS, instrument_id)
            for start in range(0, len(seqs), _ACK_SEQS_MAX):
                ack = wire.Ack(
                    v=1, instrument=instrument_id, seqs=seqs[start : start + _ACK_SEQS_MAX]
                )
                acks.append((topic, wire.encode(ack)))
        self._receiver.acknowledge(batch, acks)

    # --- metrics and liveness ---------------------------------------------

    def _account(self, parsed: list[Parsed], result: StoreResult, store_s: float) -> None:
        """Update the metrics; log an agent's clock when it goes past the limit, and back."""
        limit = timedelta(seconds=self.settings.clock_skew_limit_s)
        self.metrics.observe_batch(parsed, result, datetime.now(UTC), store_s, limit)
        for instrument_id, skew in result.clock_skews:
            if abs(skew) > limit and instrument_id not in self._skewed:
                self._skewed.add(instrument_id)
                log.warning(
                    "clock of %s's agent is off by %.1f s (limit %.0f s)",
                    instrument_id,
                    skew.total_seconds(),
                    limit.total_seconds(),
                )
            elif abs(skew) <= limit and instrument_id in self._skewed:
                self._skewed.discard(instrument_id)
                log.info("clock of %s's agent is back within the limit", instrument_id)

    def _on_sweep(self, opened: list[str], online: int) -> None:
        """Runs on the watch's thread: prometheus_client's metrics are thread-safe."""
        if opened:
            self.metrics.offline_periods.labels(reason="heartbeat_timeout").inc(len(opened))
            log.warning("no word from %d agent(s) within the timeout: %s", len(opened), opened)
        self.metrics.agents_online.set(online)
