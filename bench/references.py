"""The reference consumers the collector is measured against, each in a process of its own.

- a bare paho-mqtt subscriber that does nothing with the messages: the
  Python client's own ceiling, which the collector can at best approach;
- a naive ingester that INSERTs and commits each message: what the
  collector's batching and COPY must beat;
- an echo that answers each event with its Ack at once, no database: the
  floor of the publish-to-Ack latency.

All of them use a persistent session on a shared subscription, exactly like
the collector, so a backlog queued while they were away is theirs to drain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from instrumetry.domain import topics, wire

_SESSION_EXPIRY_S = 3600


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _connect(client: mqtt.Client, host: str, port: int, *, expiry_s: int) -> None:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = expiry_s
    client.connect(host, port, clean_start=expiry_s == 0, properties=properties)


def register_session(
    host: str, port: int, client_id: str, group: str, kind: topics.Kind = topics.Kind.EVENTS
) -> None:
    """Create ``client_id``'s persistent session, shared-subscribed to ``kind``, then leave.

    From then on the broker queues that group's share of the traffic for it.
    """
    client = _client(client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    _connect(client, host, port, expiry_s=_SESSION_EXPIRY_S)
    client.subscribe(f"$share/{group}/{topics.subscription(kind)}", qos=1)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError(f"no SUBACK for {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(host: str, port: int, client_id: str) -> None:
    """End ``client_id``'s session, so the broker stops queueing for it."""
    client = _client(client_id)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    _connect(client, host, port, expiry_s=0)
    client.loop_start()
    try:
        connected.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _drain(
    host: str, port: int, client_id: str, count: int, handle: Callable[[mqtt.MQTTMessage], None]
) -> tuple[float, float]:
    """Resume ``client_id``'s session, ``handle`` ``count`` messages; wall times of first and last.

    paho sends the PUBACK after ``handle`` returns, so a handler that commits
    acks after its commit, as the collector does.
    """
    times: list[float] = []
    seen = 0
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        nonlocal seen
        handle(message)
        seen += 1
        if seen in (1, count):
            times.append(time.time())
        if seen == count:
            done.set()

    client = _client(client_id)
    client.on_message = on_message
    _connect(client, host, port, expiry_s=_SESSION_EXPIRY_S)
    client.loop_start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"{client_id} did not receive {count} messages")
    finally:
        client.disconnect()
        client.loop_stop()
    return times[0], times[-1]


def bare_subscriber(host: str, port: int, client_id: str, count: int) -> tuple[float, float]:
    """Receive and acknowledge ``count`` messages, doing nothing with them."""
    return _drain(host, port, client_id, count, lambda _message: None)


def naive_ingester(
    host: str, port: int, client_id: str, count: int, database_url: str
) -> tuple[float, float]:
    """Decode each event, INSERT it and commit, one message at a time."""
    with psycopg.connect(database_url, autocommit=True) as conn:

        def insert(message: mqtt.MQTTMessage) -> None:
            event = wire.decode(wire.Event, bytes(message.payload))
            conn.execute(
                "INSERT INTO events (instrument_id, boot_id, seq, device_time, received_at, "
                "from_state, to_state, power_w, prev_hash, signature) "
                "VALUES (%s, %s, %s, to_timestamp(%s / 1000.0), now(), %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (
                    event.instrument,
                    event.boot,
                    event.seq,
                    event.t,
                    event.from_state.value,
                    event.to_state.value,
                    event.power_w,
                    bytes.fromhex(event.prev),
                    wire.signature_bytes(event),
                ),
            )

        return _drain(host, port, client_id, count, insert)


def echo(host: str, port: int, client_id: str, count: int) -> tuple[float, float]:
    """Answer each of ``count`` events with its Ack at once: a collector without a database."""
    client = _client(f"{client_id}-out")
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(10):  # paho drops QoS 1 publishes made before the first CONNACK
        raise RuntimeError(f"{client_id}-out could not connect")
    sent: list[mqtt.MQTTMessageInfo] = []

    def answer(message: mqtt.MQTTMessage) -> None:
        event = wire.decode(wire.Event, bytes(message.payload))
        ack = wire.Ack(v=1, instrument=event.instrument, seqs=[event.seq])
        topic = topics.topic(topics.Kind.ACKS, event.instrument)
        sent.append(client.publish(topic, wire.encode(ack), qos=1))

    try:
        times = _drain(host, port, client_id, count, answer)
        for info in sent:  # the last Acks may still be queued in the client
            info.wait_for_publish(30)
        return times
    finally:
        client.disconnect()
        client.loop_stop()
