"""Receiving from the broker in a child process, so that paho has an interpreter lock of its own.

Paho's network thread holds the GIL for about 40 µs of each message it
receives and acknowledges. In the collector's own process it kept the
storing thread waiting for the lock a quarter of the time; the collector
stored 8,000 events/s, and over 10,000 when fed without paho
(docs/BENCHMARKS.md). In a child, the collector only decodes the child's
frames, many messages to a frame.

The child (``python -m collector.receiver``) owns the MQTT connection: the
persistent session, the shared subscriptions, the reconnects. It forwards
each message with its packet id and the connection it came in on, and
acknowledges only what the collector tells it to, after the commit: a
PUBACK for each message of its current connection, and the agents' Acks. It
ends when its stdin closes, so a collector killed with ``kill -9`` leaves no
child that could acknowledge anything, and the broker redelivers whatever
was not acknowledged. It ignores SIGINT and SIGTERM, which a terminal or a
service manager sends to the whole process group: the collector stops it
after its last acknowledgements.

Frames (``collector.frames``, msgpack). To the child: the ``ReceiverConfig``,
then ``["ack", [[mid, qos, connection], ...], [[topic, payload], ...]]``,
and last ``["stop", seconds]`` (the Acks get that long to reach the broker).
From the child: ``["messages", [[mid, qos, connection, topic, payload,
received_at], ...]]``, ``["subscribed"]``, ``["refused", why]``, ``["error",
why]`` (then it exits), ``["log", level, text]``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector import frames
from collector.ingest import Received
from collector.settings import BrokerAddress, CollectorSettings
from instrumetry.domain import topics
from instrumetry.domain.errors import ServiceError

log = logging.getLogger(__name__)

_KEEPALIVE_S = 30
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 1, 30
_STOP_GRACE_S = 5.0
_SUBSCRIBED = (topics.Kind.EVENTS, topics.Kind.HEARTBEATS, topics.Kind.STATUS)


class ReceiverConfig(msgspec.Struct, frozen=True):
    """What the child needs of ``CollectorSettings``."""

    broker: BrokerAddress
    client_id: str
    share_group: str
    session_expiry_s: int
    receive_maximum: int

    @classmethod
    def of(cls, settings: CollectorSettings) -> ReceiverConfig:
        return cls(
            settings.broker,
            settings.client_id,
            settings.share_group,
            settings.session_expiry_s,
            settings.receive_maximum,
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and what acknowledging it needs.

    ``generation`` counts the child's lost broker connections: a message is
    acknowledged only on the connection it came in on. After a reconnect the
    broker resends unacknowledged messages under the same packet ids, so
    acknowledging an older copy's id could, once that id is reused,
    acknowledge a message that is not committed yet.
    """

    mid: int
    qos: int
    generation: int
    received: Received


class Receiver:
    """The collector's side of the child: start it, take its messages, send it acks.

    ``deliver`` gets each message, on the thread that reads the child's
    frames. ``on_lost`` is called there, with the reason, if the child ends
    while the collector has not asked it to.
    """

    def __init__(
        self,
        config: ReceiverConfig,
        deliver: Callable[[Delivery], object],
        on_lost: Callable[[str], object],
    ) -> None:
        self._config = config
        self._deliver = deliver
        self._on_lost = on_lost
        self._child: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._failure: str | None = None
        self._stopping = False

    def start(self, timeout: float) -> None:
        """Start the child and wait until it is subscribed; ``ServiceError`` saying why not."""
        self._child = subprocess.Popen(
            [sys.executable, "-m", "collector.receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._send(self._config)
        self._reader = threading.Thread(target=self._read, name="collector-receive", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            broker = self._config.broker
            self._failure = f"the MQTT broker at {broker} did not accept our subscriptions"
        if self._failure is not None:
            failure = self._failure
            self.close(0)
            raise ServiceError(failure)

    def acknowledge(
        self, deliveries: Sequence[Delivery], acks: Sequence[tuple[str, bytes]]
    ) -> None:
        """PUBACK ``deliveries`` (those of the child's current connection) and publish ``acks``.

        If the child is gone, nothing is acknowledged: the broker redelivers.
        """
        mids = [(d.mid, d.qos, d.generation) for d in deliveries if d.qos > 0]
        with contextlib.suppress(OSError):  # the child ended: the reader reports it
            self._send(("ack", mids, acks))

    def close(self, flush_s: float) -> None:
        """Give the last Acks ``flush_s`` to reach the broker, then end the child. Idempotent."""
        child, self._child = self._child, None
        if child is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._send(("stop", flush_s), child)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            child.wait(timeout=flush_s + _STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if self._reader is not None:
            self._reader.join()

    def _send(self, message: object, child: subprocess.Popen[bytes] | None = None) -> None:
        child = child or self._child
        if child is None or child.stdin is None:
            raise OSError("the receiving process is not running")
        with self._write_lock:
            frames.write(child.stdin, msgspec.msgpack.encode(message))

    def _read(self) -> None:
        child = self._child
        assert child is not None and child.stdout is not None
        decoder = msgspec.msgpack.Decoder()
        while (frame := frames.read(child.stdout)) is not None:
            kind, *rest = decoder.decode(frame)
            if kind == "messages":
                deliver = self._deliver
                for mid, qos, generation, topic, payload, received_at in rest[0]:
                    deliver(Delivery(mid, qos, generation, Received(topic, payload, received_at)))
            elif kind == "log":
                log.log(rest[0], "%s", rest[1])
            elif kind == "subscribed":
                self._ready.set()
            elif kind in ("refused", "error"):
                self._failure = rest[0]
                self._ready.set()
        if self._stopping:
            return
        code = child.wait()
        if self._failure is not None:  # a start that failed: ``start`` raises it
            self._ready.set()
            return
        self._failure = f"the MQTT receiving process ended (exit code {code})"
        self._ready.set()
        self._on_lost(self._failure)


class _Child:
    """The child's side: one paho client, its messages forwarded in frames."""

    def __init__(self, config: ReceiverConfig, out: IO[bytes]) -> None:
        self._config = config
        self._out = out
        self._out_lock = threading.Lock()
        self._pending: list[tuple[int, int, int, str, bytes, datetime]] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._generation = 0
        self._generation_lock = threading.Lock()
        self._stopping = False
        self._subscribed = False
        self._last_acks: list[mqtt.MQTTMessageInfo] = []
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if config.broker.username is not None:
            client.username_pw_set(config.broker.username, config.broker.password)
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def run(self, commands: IO[bytes]) -> int:
        """Connect, forward messages and obey ``commands`` until told to stop or stdin closes."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._config.session_expiry_s
        # Unacknowledged messages count against this window until their batch commits:
        # without it the broker's own limit (Mosquitto's max_inflight_messages) caps batches.
        properties.ReceiveMaximum = self._config.receive_maximum
        try:
            self._client.connect(
                self._config.broker.host,
                self._config.broker.port,
                keepalive=_KEEPALIVE_S,
                clean_start=False,
                properties=properties,
            )
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            broker = self._config.broker
            self._send(("error", f"cannot connect to the MQTT broker at {broker}: {reason}"))
            return 1
        threading.Thread(target=self._forward, name="receiver-forward", daemon=True).start()
        self._client.loop_start()
        decoder = msgspec.msgpack.Decoder()
        while (frame := frames.read(commands)) is not None:
            command = decoder.decode(frame)
            if command[0] == "ack":
                self._acknowledge(command[1], command[2])
            elif command[0] == "stop":
                self._flush(command[1])
                break
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        return 0

    def _acknowledge(self, mids: list[list[int]], acks: list[list[Any]]) -> None:
        with self._generation_lock:  # a disconnect cannot slip between check and ack
            for mid, qos, generation in mids:
                if generation == self._generation:
                    self._client.ack(mid, qos)
        self._last_acks = [self._client.publish(topic, payload, qos=1) for topic, payload in acks]

    def _flush(self, seconds: float) -> None:
        """Give the last batch's Acks ``seconds`` to reach the broker."""
        deadline = time.monotonic() + seconds
        for info in self._last_acks:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (ValueError, RuntimeError):
                continue  # not sent (no connection): the agent resends and is acked later

    def _forward(self) -> None:
        """Send what arrived since the last frame, as one frame: many messages under load."""
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                self._send(("messages", batch))

    def _send(self, message: object) -> None:
        with self._out_lock, contextlib.suppress(OSError):  # the collector is gone: we end too
            frames.write(self._out, msgspec.msgpack.encode(message))

    def _log(self, level: int, text: str) -> None:
        self._send(("log", level, text))

    def _refused(self, why: str) -> None:
        """Tell the collector, if it is still starting: later, paho keeps trying."""
        if not self._subscribed:
            self._send(("refused", f"the MQTT broker at {self._config.broker} refused us: {why}"))

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
            self._log(logging.ERROR, f"broker refused the connection: {reason_code}")
            self._refused(str(reason_code))
            return
        session = "resumed" if flags.session_present else "new"
        self._log(
            logging.INFO,
            f"connected to {self._config.broker} as {self._config.client_id!r} (session {session})",
        )
        options = SubscribeOptions(qos=1)
        group = self._config.share_group
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
            self._log(logging.ERROR, f"broker refused our subscriptions: {', '.join(refused)}")
            self._refused(f"subscription refused: {', '.join(refused)}")
            return
        if not self._subscribed:
            self._subscribed = True
            self._send(("subscribed",))

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
        if not self._stopping:
            self._log(
                logging.WARNING, f"disconnected from the broker ({reason_code}); reconnecting"
            )

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Runs on paho's thread: only queue, so nothing here can fail or block."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should refuse these; keep the payload anyway
            topic = "<topic is not UTF-8>"
        item = (
            message.mid,
            message.qos,
            self._generation,
            topic,
            bytes(message.payload),
            datetime.now(UTC),
        )
        with self._pending_lock:
            self._pending.append(item)
        self._wake.set()


def main() -> None:
    """The child: read the config, then receive until stopped or stdin closes."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_IGN)
    commands, out = sys.stdin.buffer, sys.stdout.buffer
    first = frames.read(commands)
    if first is None:
        return
    config = msgspec.msgpack.decode(first, type=ReceiverConfig)
    sys.exit(_Child(config, out).run(commands))


if __name__ == "__main__":
    main()
