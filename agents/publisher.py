"""Sending the outbox to the broker over MQTT v5, and taking the collector's acks back.

Threads: paho's ``loop_start()`` network thread does the socket work and
reconnects with backoff on its own; its callbacks only publish the retained
status and hand notes (connected, disconnected, acked seqs) to a queue. The
agent's main thread drains that queue in ``pump`` and does everything that
touches the outbox, so SQLite and the in-flight bookkeeping are used from one
thread only, and the main loop wakes up as soon as an ack arrives. (Running
``loop_forever`` in the main thread instead would put the Modbus poll inside
MQTT callbacks, where a slow meter would stall keepalives.)

Delivery: QoS 1 on a persistent session (``clean_start=False`` and a session
expiry), so acks published while the agent is away wait for it at the broker.
An event leaves the outbox only on the collector's ack. At most
``max_inflight`` events are unacknowledged at a time, sent no faster than
``replay_per_s``; after a reconnect, or when an ack is ``ack_timeout_s`` late,
pending events are sent again (the collector's storage is idempotent; see
``Resend`` for when an unacknowledged event counts as late).

The Last Will is the retained ``offline`` status; it is re-armed before every
connection attempt so its ``t`` is the time of the connection it guards.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agents.config import BrokerConfig
from agents.outbox import Outbox
from instrumetry.domain import wire
from instrumetry.domain.errors import ConfigError, ServiceError, WireError
from instrumetry.domain.topics import Kind, topic

log = logging.getLogger(__name__)


def wall_ms() -> int:
    """Epoch milliseconds, the unit of every timestamp on the wire."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Note:
    """What the network thread tells the main thread."""

    kind: Literal["connected", "disconnected", "acked"]
    seqs: list[int] = field(default_factory=list)


def new_client(broker: BrokerConfig, client_id: str) -> mqtt.Client:
    """An MQTT v5 client with the broker's credentials and TLS settings applied."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.address().tls:
        try:
            client.tls_set(
                ca_certs=broker.ca_file,
                certfile=broker.client_cert_file,
                keyfile=broker.client_key_file,
            )
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"broker TLS files: {error}") from None
    return client


def connect_in_background(client: mqtt.Client, broker: BrokerConfig) -> None:
    """Start ``client``'s network thread on a persistent MQTT v5 session with ``broker``.

    The session (clean start off, expiry from the config) keeps the acks the
    collector sends while the agent is away; paho reconnects on its own.
    """
    address = broker.address()
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = broker.session_expiry_s
    client.connect_async(
        address.host,
        address.port,
        keepalive=broker.keepalive_s,
        clean_start=False,
        properties=properties,
    )
    client.loop_start()


@dataclass(slots=True)
class Resend:
    """When an unacknowledged event is late, so that it is sent again (pure: given the time).

    An event is late once it has waited ``timeout_s`` and either an event sent
    after it has been acknowledged (acks overtook it: it was lost on the way)
    or no ack at all has come for ``patience_s`` (the collector is away, or
    every message in flight was lost). Each resend for want of any ack doubles
    the patience, up to ``max_patience_s``, so a collector outage of a day costs
    an agent a dozen resends and not one a minute piling up at the broker; the
    next ack resets it. A backlog acknowledged in order, however late, is
    never sent twice.
    """

    timeout_s: float
    max_patience_s: float = 3600.0
    patience_s: float = 0.0
    heard_at: float = 0.0
    acked_up_to: float = float("-inf")
    """When the newest event acknowledged so far was sent."""

    def restart(self, now: float) -> None:
        """A new connection: nothing sent before it counts."""
        self.heard_at, self.patience_s, self.acked_up_to = now, self.timeout_s, float("-inf")

    def acked(self, now: float, sent_at: float | None) -> None:
        """An ack came, for an event sent at ``sent_at`` (``None``: not in flight any more)."""
        self.heard_at, self.patience_s = now, self.timeout_s
        if sent_at is not None:
            self.acked_up_to = max(self.acked_up_to, sent_at)

    def due(self, sent: dict[int, float], now: float) -> list[int]:
        """The late seqs of ``sent`` (seq -> when it was sent, in the order sent)."""
        first = next(iter(sent.values()), None)
        if first is None or now - first < self.timeout_s:
            return []  # the first sent has not waited long enough: none is late (most pumps)
        stalled = now - self.heard_at >= self.patience_s
        late = [
            seq
            for seq, _ in itertools.takewhile(
                lambda item: (
                    now - item[1] >= self.timeout_s and (stalled or item[1] < self.acked_up_to)
                ),
                sent.items(),
            )
        ]
        if late and stalled:
            self.heard_at = now
            self.patience_s = min(self.patience_s * 2, self.max_patience_s)
        return late


class Publisher:
    """The agent's MQTT side: status, events from the outbox, heartbeats, acks.

    ``clock_ms`` stamps the statuses: the clock the agent's events carry too
    (a simulated fleet's, in ``instrumetry sim fleet``).
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        instrument: str,
        outbox: Outbox,
        ack_timeout_s: float | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.instrument = instrument
        self._clock_ms = clock_ms
        self._broker = broker
        self._outbox = outbox
        self._resend = Resend(broker.ack_timeout_s if ack_timeout_s is None else ack_timeout_s)
        self._resend.restart(time.monotonic())
        self._topics = {kind: topic(kind, instrument) for kind in Kind}
        self._notes: queue.SimpleQueue[_Note] = queue.SimpleQueue()
        self._sent: dict[int, float] = {}  # seq -> when it was last sent (monotonic)
        self._cursor = 0  # every pending event up to this seq is in ``_sent``
        self._tokens = float(broker.max_inflight)
        self._tokens_at = time.monotonic()
        self._online = False
        self._unreachable_told = False  # network thread only: one warning per outage
        self._refusal_told = False  # network thread only: one error per connection
        self._client = new_client(broker, f"instrumetry-agent-{instrument}")
        self._client.max_inflight_messages_set(broker.max_inflight)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    def start(self) -> None:
        """Connect in the background; the network thread keeps reconnecting until ``close``."""
        connect_in_background(self._client, self._broker)

    @property
    def connected(self) -> bool:
        """Whether the broker session is up, as of the last ``pump``."""
        return self._online

    def pump(self, wait_s: float = 0.0) -> bool:
        """Take in the network thread's news, then send what the window and rate allow.

        Waits up to ``wait_s`` for news (an ack, a reconnect) to arrive. Returns
        ``True`` when events are held back only by the rate limit, so the caller
        knows to call again within ``1 / replay_per_s`` seconds.
        """
        if wait_s > 0:
            with contextlib.suppress(queue.Empty):
                self._take(self._notes.get(timeout=wait_s))
        elif self._notes.empty() and self._idle():
            return False  # no news, nothing new, nothing in flight: nothing to do
        while not self._notes.empty():  # this thread alone takes notes: get() cannot block
            self._take(self._notes.get())
        return self._send_pending() if self._online else False

    def send_heartbeat(self, heartbeat: wire.Heartbeat) -> None:
        """Publish a heartbeat if connected; a missed one is a gap, not a loss of data."""
        if self._online:
            self._client.publish(self._topics[Kind.HEARTBEATS], wire.encode(heartbeat), qos=1)

    def close(self, timeout_s: float = 5.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly and stop the network thread."""
        if self._client.is_connected():
            info = self._client.publish(
                self._topics[Kind.STATUS], self._status("offline"), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout_s)
            except (ValueError, RuntimeError) as error:
                log.warning("could not publish the offline status: %s", error)
            self._client.disconnect()
        self._client.loop_stop()
        self._online = False

    # --- main thread -------------------------------------------------------

    def _take(self, note: _Note) -> None:
        if note.kind == "connected":
            self._online = True
            self._sent.clear()  # whatever was in flight may be lost: send it again
            self._cursor = 0
            self._resend.restart(time.monotonic())
        elif note.kind == "disconnected":
            self._online = False
        else:
            self._outbox.ack(note.seqs)
            now = time.monotonic()
            for seq in note.seqs:
                self._resend.acked(now, self._sent.pop(seq, None))

    def _idle(self) -> bool:
        """Offline, or every stored event is acknowledged or in flight and none can be late.

        Then ``_send_pending`` would change nothing (the token bucket only
        fills up with time, and nothing in flight can be due), so ``pump``
        may skip it: the fleet pumps a thousand agents a round, most idle.
        """
        return not self._online or (not self._sent and self._cursor >= self._outbox.last_seq)

    def _send_pending(self) -> bool:
        now = time.monotonic()
        window = self._broker.max_inflight
        rate = self._broker.replay_per_s
        self._tokens = min(float(window), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        late = self._resend.due(self._sent, now)
        for seq in late:
            del self._sent[seq]
        if late:
            self._cursor = min(self._cursor, min(late) - 1)
        elif self._cursor >= self._outbox.last_seq:
            return False  # everything pending is in flight: no need to ask the outbox
        for seq, payload in self._outbox.pending(window, after=self._cursor):
            if seq in self._sent:
                continue
            if len(self._sent) >= window:
                return False
            if self._tokens < 1:
                return True
            info = self._client.publish(self._topics[Kind.EVENTS], payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False  # disconnected meanwhile; the next "connected" resends
            self._sent[seq] = now
            self._cursor = max(self._cursor, seq)
            self._tokens -= 1
        return False

    # --- network thread ----------------------------------------------------

    def _status(self, status: Literal["online", "offline"]) -> bytes:
        return wire.encode(
            wire.Status(
                v=wire.SCHEMA_VERSION,
                instrument=self.instrument,
                boot=self._outbox.boot,
                status=status,
                t=self._clock_ms(),
            )
        )

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        client.will_set(self._topics[Kind.STATUS], self._status("offline"), qos=1, retain=True)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to the broker (session present: %s)", flags.session_present)
        self._unreachable_told = False
        self._refusal_told = False
        client.subscribe(self._topics[Kind.ACKS], qos=1)
        client.publish(self._topics[Kind.STATUS], self._status("online"), qos=1, retain=True)
        self._notes.put(_Note("connected"))

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """Say once per outage why the broker cannot be reached; paho keeps retrying.

        The agent keeps running without its broker (events wait in the outbox),
        so a wrong address or a firewall would otherwise go unnoticed. paho calls
        this inside its ``except OSError``, so the exception names the cause.
        """
        if self._unreachable_told:
            return
        self._unreachable_told = True
        address = self._broker.address()
        log.warning(
            "cannot reach the broker at %s:%d: %s; retrying (events wait in the outbox)",
            address.host,
            address.port,
            sys.exception() or "connection failed",
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        level = logging.WARNING if reason_code.is_failure else logging.INFO
        log.log(level, "disconnected from the broker: %s", reason_code)
        self._notes.put(_Note("disconnected"))

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        """Say once per connection that the broker refuses our messages (its ACL, usually).

        The events stay in the outbox either way: no ack comes for them, so
        they are sent again; without this line the agent would only seem slow.
        """
        if reason_code.is_failure and not self._refusal_told:
            self._refusal_told = True
            log.error(
                "the broker refused a message (%s): this login may not publish for "
                "instrument %s (broker ACL: instrumetry broker add-agent); events wait "
                "in the outbox",
                reason_code,
                self.instrument,
            )

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            ack = wire.decode(wire.Ack, bytes(message.payload))
        except WireError as error:
            log.warning("ignoring a bad ack on %s: %s", message.topic, error)
            return
        if ack.instrument != self.instrument:
            log.warning("ignoring an ack for instrument %r on our topic", ack.instrument)
            return
        self._notes.put(_Note("acked", ack.seqs))


def probe_broker(broker: BrokerConfig, instrument: str, timeout_s: float = 5.0) -> None:
    """Connect once and disconnect; ``ServiceError`` saying why if that fails.

    Uses a client id of its own, so probing never takes over the running
    agent's session.
    """
    client = new_client(broker, f"instrumetry-check-{instrument}-{uuid.uuid4().hex[:8]}")
    result: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, reason_code, _p: result.append(reason_code)
    address = broker.address()
    where = f"broker {address.host}:{address.port}"
    try:
        client.connect(address.host, address.port, keepalive=broker.keepalive_s)
    except (OSError, ssl.SSLError) as error:
        raise ServiceError(f"{where}: cannot connect: {error}") from None
    deadline = time.monotonic() + timeout_s
    try:
        while not result and time.monotonic() < deadline:
            code = client.loop(timeout=0.1)
            if code is not MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ServiceError(
                    f"{where}: closed the connection before answering ({mqtt.error_string(code)}); "
                    "with TLS, check the client certificate and the CA"
                )
    finally:
        client.disconnect()
    if not result:
        raise ServiceError(f"{where}: no answer to CONNECT within {timeout_s:.0f} s")
    if result[0].is_failure:
        raise ServiceError(f"{where}: refused the connection: {result[0]}")
