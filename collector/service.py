"""The collector service: MQTT in, batched database commits, acks only after commit.

Threads: paho's network thread receives messages and only queues them; the
thread that calls ``serve`` takes batches off the queue, parses them and
checks their signatures against the cached keys; a storing thread stores
each in one transaction and then acknowledges it twice — to the broker
(PUBACK, so a crash before the commit means redelivery, not loss) and to the
agents (an ``Ack`` per instrument, so they may drop the events from their
outboxes).

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

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from psycopg.rows import TupleRow

from collector import db, migrate, sigcheck, verify
from collector.ingest import EventRow, Parsed, Received, parse_message
from collector.metrics import CollectorMetrics, MetricsServer
from collector.settings import CollectorSettings
from collector.store import StoreResult, store
from collector.watch import LivenessWatch
from instrumetry.domain import topics, wire
from instrumetry.domain.errors import ServiceError

log = logging.getLogger(__name__)

_KEEPALIVE_S = 30
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 1, 30
_STARTUP_TIMEOUT_S = 15.0
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 30.0
_SHUTDOWN_FLUSH_S = 5.0
_ACK_SEQS_MAX = 500
"""Seqs per Ack payload: 500 nineteen-digit seqs stay well under wire.MAX_PAYLOAD_BYTES."""
_SUBSCRIBED = (topics.Kind.EVENTS, topics.Kind.HEARTBEATS, topics.Kind.STATUS)


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A received message and what acking it needs.

    ``generation`` counts lost broker connections: a message is acked only on
    the connection it came in on. After a reconnect the broker resends
    un-acked messages under the same packet ids, so acking an older copy's id
    could, once that id is reused, ack a message that is not committed yet.
    """

    mid: int
    qos: int
    generation: int
    received: Received


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A batch parsed, with what ``EnrolledKeys.precheck`` found of its signatures."""

    batch: list[_Delivery]
    parsed: list[Parsed]
    prechecked: verify.Prechecked


class Collector:
    """One collector: ``start()``, then ``serve()`` until another thread calls ``stop()``.

    ``run()`` does both. Several collectors with different ``client_id`` and
    the same ``share_group`` split the traffic between them.
    """

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self._inbox: queue.SimpleQueue[_Delivery | None] = queue.SimpleQueue()
        self._stop_requested = False
        self._generation = 0
        self._generation_lock = threading.Lock()
        self._subscribed = threading.Event()
        self._refusal: str | None = None
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._last_acks: list[mqtt.MQTTMessageInfo] = []
        self._client = self._make_client()
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
            self._connect_broker()
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
        are in hand, as the broker's in-flight window bounds anyway.
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
            self._flush_acks()
        finally:
            self.close()

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
        self._client.disconnect()
        self._client.loop_stop()
        self._checker.close()
        if self._conn is not None:
            self._conn.close()

    # --- broker -----------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        broker = self.settings.broker
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect_broker(self) -> None:
        broker = self.settings.broker
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        # Un-acked messages count against this window until their batch commits: without
        # it the broker's own limit (Mosquitto's max_inflight_messages) caps the batches.
        properties.ReceiveMaximum = self.settings.receive_maximum
        try:
            self._client.connect(
                broker.host,
                broker.port,
                keepalive=_KEEPALIVE_S,
                clean_start=False,
                properties=properties,
            )
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise ServiceError(f"cannot connect to the MQTT broker at {broker}: {reason}") from None
        self._client.loop_start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._subscribed.wait(0.05):
            if self._refusal is not None:
                raise ServiceError(f"the MQTT broker at {broker} refused us: {self._refusal}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the MQTT broker at {broker} did not accept our subscriptions")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        """Subscribe on every connect, even when the broker resumed our session.

        Mosquitto 2.0.11 restores a persistent session after a restart but not
        its shared subscriptions (observed): without subscribing again, the
        session would receive nothing, silently.
        """
        if reason_code.is_failure:
            self._refusal = str(reason_code)
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info(
            "connected to %s as %r (session %s)",
            self.settings.broker,
            self.settings.client_id,
            "resumed" if flags.session_present else "new",
        )
        options = SubscribeOptions(qos=1)
        group = self.settings.share_group
        client.subscribe(
            [(f"$share/{group}/{topics.subscription(kind)}", options) for kind in _SUBSCRIBED]
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(code) for code in reason_codes if code.value != 1]  # 1: granted QoS 1
        if refused:
            self._refusal = f"subscription refused: {', '.join(refused)}"
            log.error("broker refused our subscriptions: %s", ", ".join(refused))
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._generation_lock:  # from now on, acks of this connection's messages are void
            self._generation += 1
        if not self._stop_requested:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Runs on paho's thread: only queue, so nothing here can fail or block."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should refuse these; keep the payload anyway
            topic = "<topic is not UTF-8>"
        received = Received(topic, bytes(message.payload), datetime.now(UTC))
        self._inbox.put(_Delivery(message.mid, message.qos, self._generation, received))

    # --- batches ----------------------------------------------------------

    def _next_batch(self, *, wait: bool) -> list[_Delivery]:
        """Up to ``batch_max`` deliveries.

        Waiting, it blocks for the first one and then collects for at most
        ``batch_ms``, ending early at a stop request. Not waiting (the final
        drain), it takes what is queued now and skips stop requests.
        """
        batch: list[_Delivery] = []
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

    def _prepare(self, batch: list[_Delivery]) -> _Prepared:
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

    def _acknowledge(self, batch: list[_Delivery], result: StoreResult) -> None:
        """PUBACK what this connection delivered, then tell each agent what is committed."""
        with self._generation_lock:  # a disconnect cannot slip between check and ack
            for delivery in batch:
                if delivery.qos > 0 and delivery.generation == self._generation:
                    self._client.ack(delivery.mid, delivery.qos)
        self._last_acks = []
        for instrument_id, seqs in result.committed.items():
            topic = topics.topic(topics.Kind.ACKS, instrument_id)
            for start in range(0, len(seqs), _ACK_SEQS_MAX):
                ack = wire.Ack(
                    v=1, instrument=instrument_id, seqs=seqs[start : start + _ACK_SEQS_MAX]
                )
                self._last_acks.append(self._client.publish(topic, wire.encode(ack), qos=1))

    def _flush_acks(self) -> None:
        """Give the last batch's Acks a moment to reach the broker before we disconnect."""
        deadline = time.monotonic() + _SHUTDOWN_FLUSH_S
        for info in self._last_acks:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (ValueError, RuntimeError):
                continue  # not sent (no connection): the agent resends and is acked later

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
