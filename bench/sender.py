"""A publisher that behaves like a fleet of agents: resend every event until the collector acks it.

The end-to-end guarantee is "the agent keeps resending until the
application-level Ack" (DESIGN.md): a broker PUBACK proves nothing, since a
restarted broker or a killed collector can lose what it acknowledged. Fault
tests need exactly that sender to count losses that matter; the latency
benchmark needs its timestamps (first publish, first Ack) for each event.

Threads: paho's network thread only queues what it hears; one sender thread
owns all bookkeeping, so nothing here needs a lock.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from instrumetry.domain import topics, wire
from instrumetry.domain.errors import WireError

Key = tuple[str, int]
"""(instrument, seq): what the collector acks and what the checks count."""

_TICK_S = 0.005
_News = tuple[str, list[int]] | Literal["connected", "disconnected"]
"""What the network thread tells the sender thread: an Ack's (instrument, seqs), or a change."""


class Sender:
    """Send ``streams`` (instrument -> [(seq, payload)]) at QoS 1 until every event is acked.

    At most ``window`` events are un-acked at a time; one un-acked for
    ``resend_s`` is sent again, and so is everything un-acked after a
    reconnect. ``rate_per_s`` paces first sends (None: as fast as the window
    allows). Use as a context manager, then ``wait``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        streams: Mapping[str, Sequence[tuple[int, bytes]]],
        *,
        window: int = 1000,
        resend_s: float = 3.0,
        rate_per_s: float | None = None,
    ) -> None:
        self.first_sent: dict[Key, float] = {}
        self.acked_at: dict[Key, float] = {}
        self.resent = 0
        self._host, self._port = host, port
        self._window, self._resend_s, self._rate = window, resend_s, rate_per_s
        self._payloads = {(i, seq): p for i, stream in streams.items() for seq, p in stream}
        self._topics = {i: topics.topic(topics.Kind.EVENTS, i) for i in streams}
        # Round-robin over instruments, as a fleet's traffic interleaves.
        keys = [[(i, seq) for seq, _ in stream] for i, stream in streams.items()]
        self._unsent: collections.deque[Key] = collections.deque(
            key for one_round in itertools.zip_longest(*keys) for key in one_round if key
        )
        self._in_flight: dict[Key, float] = {}  # key -> last send, in send order
        self._heard: queue.SimpleQueue[_News] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._connected = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sender-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *_: self._heard.put("disconnected")
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)

    @property
    def total(self) -> int:
        return len(self._payloads)

    def unacked(self) -> set[Key]:
        """Events no Ack has named yet (read after ``wait``)."""
        return set(self._payloads) - set(self.acked_at)

    def __enter__(self) -> Sender:
        self._client.connect_async(self._host, self._port, keepalive=10)
        self._client.loop_start()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    def wait(self, timeout: float) -> bool:
        """Block until every event is acked (True) or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    # --- network thread ----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(topics.subscription(topics.Kind.ACKS), qos=1)
        self._heard.put("connected")

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            ack = wire.decode(wire.Ack, bytes(message.payload))
        except WireError:
            return
        self._heard.put((ack.instrument, ack.seqs))

    # --- sender thread -----------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and len(self.acked_at) < len(self._payloads):
            self._take_news()
            if self._connected:
                now = time.monotonic()
                self._requeue_overdue(now)
                allowed = None if self._rate is None else int((now - started) * self._rate)
                self._send(now, allowed)
            time.sleep(_TICK_S)
        if len(self.acked_at) == len(self._payloads):
            self._done.set()

    def _take_news(self) -> None:
        while True:
            try:
                news = self._heard.get_nowait()
            except queue.Empty:
                return
            if news == "disconnected":
                self._connected = False
            elif news == "connected":
                self._connected = True
                self._requeue(list(self._in_flight))  # whatever was in flight may be lost
            else:
                now = time.monotonic()
                instrument, seqs = news
                for seq in seqs:
                    key = (instrument, seq)
                    if key in self._payloads:
                        self.acked_at.setdefault(key, now)
                        self._in_flight.pop(key, None)

    def _requeue_overdue(self, now: float) -> None:
        overdue = []
        for key, sent in self._in_flight.items():  # oldest first
            if now - sent < self._resend_s:
                break
            overdue.append(key)
        self._requeue(overdue)

    def _requeue(self, keys: list[Key]) -> None:
        for key in keys:
            del self._in_flight[key]
        self.resent += len(keys)
        self._unsent.extendleft(reversed(keys))

    def _send(self, now: float, allowed: int | None) -> None:
        while self._unsent and len(self._in_flight) < self._window:
            if allowed is not None and len(self.first_sent) >= allowed:
                key = self._unsent[0]
                if key not in self.first_sent:
                    return  # pacing holds back first sends, never resends
            key = self._unsent.popleft()
            if key in self.acked_at:
                continue
            info = self._client.publish(self._topics[key[0]], self._payloads[key], qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._unsent.appendleft(key)
                return  # disconnected; the reconnect resends
            self._in_flight[key] = now
            self.first_sent.setdefault(key, now)
