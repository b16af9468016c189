"""Fleet mode only: many virtual agents' ``Publisher``s over a few shared MQTT connections.

Why: paho-mqtt waits on its sockets with ``select()``, which cannot watch a
file descriptor numbered 1024 or above. A fleet of 2,000 agents, each with
its SQLite outbox (three descriptors) and its own client (a socket and a
socket pair), needs about 12,000: past the first hundred or so agents, every
client fails its handshake and reconnects forever. Thousands of network
threads in one process would also starve each other of the GIL.

How: each agent keeps its real ``Publisher`` (the send window, the rate, the
resends, acks into the outbox: all of the agent's publishing logic), but the
client inside it is replaced by a ``_View`` onto a ``SharedLink``: one real
connection that carries the publishes and subscriptions of up to a few
hundred agents and hands each agent its connect, disconnect and ack
callbacks. Links connect before any outbox is opened, so their sockets get
low descriptor numbers.

An agent's Last Will (its retained ``offline`` status when it vanishes)
cannot be armed on a shared connection, so the link keeps each publisher's
will and publishes it when that virtual agent crashes (``crash``), as the
broker would on losing a real agent's connection. A real agent always has its
own connection.

The link sets no in-flight window of its own: with one, paho scans the
in-flight messages on every PUBACK to find the next queued one to send
(``Client._update_inflight``), a window of 100 made that a fifth of the
link's CPU and one of thousands dominated it. Without one, paho sends every
publish at once and a PUBACK costs a dictionary lookup. What is in flight
stays bounded all the same: each publisher bounds its own window, the fleet
its backlog (``MAX_BACKLOG``), and the broker acknowledges QoS 1 on receipt.
"""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agents.config import BrokerConfig
from agents.publisher import Publisher, connect_in_background, new_client
from instrumetry.domain.topics import Kind, parse, topic

LINK_INFLIGHT = 0
"""paho's in-flight window for the link: 0, none (see the module docstring)."""


class SharedLink:
    """One MQTT v5 connection shared by many publishers (see the module docstring)."""

    def __init__(self, broker: BrokerConfig) -> None:
        self._broker = broker
        self.client = new_client(broker, f"instrumetry-fleet-{uuid.uuid4().hex[:12]}")
        self.client.max_inflight_messages_set(LINK_INFLIGHT)
        self.client.max_queued_messages_set(0)  # unlimited: publishers bound their own windows
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._publishers: dict[str, Publisher] = {}
        self._views: dict[str, _View] = {}
        self._connack: tuple[mqtt.ConnectFlags, ReasonCode, Properties | None] | None = None
        self.connects = 0
        """Successful connections so far: a broker restart is over once this has grown."""
        self.refused: str | None = None
        """The broker's reason for refusing the last CONNECT, if it refused it (a bad login)."""
        self.publish_refused: str | None = None
        """Why the broker refused a message, if it did (a login that is not the simulator's)."""

    def start(self) -> None:
        connect_in_background(self.client, self._broker)

    @property
    def connected(self) -> bool:
        return self._connack is not None

    def adopt(self, publisher: Publisher) -> None:
        """Make ``publisher`` send through this link instead of its own client."""
        view = _View(self, publisher)
        publisher._client = view  # the composition root swaps the transport, nothing else
        self._views[publisher.instrument] = view

    def attach(self, publisher: Publisher) -> None:
        """Route ``publisher``'s callbacks; if the link is up, it is connected at once."""
        view = self._views[publisher.instrument]
        publisher._on_pre_connect(view, None)  # arms the Last Will, which the view keeps
        with self._lock:
            self._publishers[publisher.instrument] = publisher
            connack = self._connack
        if connack is not None:
            publisher._on_connect(view, None, *connack)

    def detach(self, instrument: str) -> None:
        with self._lock:
            self._publishers.pop(instrument, None)
        self.client.unsubscribe(topic(Kind.ACKS, instrument))

    def crash(self, instrument: str) -> None:
        """The virtual agent died: publish its Last Will, as a broker would, and detach it."""
        will = self._views[instrument].will
        if will is not None:
            self.client.publish(*will, qos=1, retain=True)
        self.detach(instrument)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # --- network thread ----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        self.refused = None
        with self._lock:
            self._connack = (flags, reason_code, properties)
            self.connects += 1
            publishers = list(self._publishers.values())
        for publisher in publishers:
            publisher._on_connect(self._views[publisher.instrument], None, flags, reason_code, None)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connack = None
            publishers = list(self._publishers.values())
        for publisher in publishers:
            publisher._on_disconnect(client, None, flags, reason_code, properties)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.publish_refused = str(reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        _, instrument = parse(message.topic)
        with self._lock:
            publisher = self._publishers.get(instrument)
        if publisher is not None:
            publisher._on_message(client, None, message)


class _View(mqtt.Client):
    """What a ``Publisher`` sees as its client: the link's connection, under its own name.

    Only the calls ``Publisher`` makes are redirected; connecting attaches to
    the link, disconnecting detaches, the network loop is the link's, and the
    Last Will is kept for the link to publish on a crash (see the module docstring).
    """

    def __init__(self, link: SharedLink, publisher: Publisher) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._link = link
        self._publisher = publisher
        self.will: tuple[str, bytes] | None = None

    def connect_async(self, *args: object, **kwargs: object) -> None:
        self._link.attach(self._publisher)

    def loop_start(self) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def loop_stop(self) -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def is_connected(self) -> bool:
        return self._link.client.is_connected()

    def disconnect(self, *args: object, **kwargs: object) -> MQTTErrorCode:
        self._link.detach(self._publisher.instrument)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish(self, *args: object, **kwargs: object) -> mqtt.MQTTMessageInfo:
        return self._link.client.publish(*args, **kwargs)  # type: ignore[arg-type]

    def subscribe(self, *args: object, **kwargs: object) -> tuple[MQTTErrorCode, int | None]:
        return self._link.client.subscribe(*args, **kwargs)  # type: ignore[arg-type]

    def will_set(  # type: ignore[override]
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, **kwargs: object
    ) -> None:
        """Kept, not sent: the link publishes it if the agent crashes (``SharedLink.crash``)."""
        self.will = (topic, payload)
