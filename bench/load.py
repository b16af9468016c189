"""Load generators, one per process: signed events (or heartbeats) published at QoS 1 as fast
as PUBACKs allow.

Separate processes so the load does not share the collector's (or the
reference subscriber's) interpreter; every process signs its own events
before its clock starts, so signing never throttles the load.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.sender import Sender
from bench.workload import Instrument, events, heartbeats
from instrumetry.domain import topics

_WINDOW = 1000
"""Un-acked publishes per load process: the broker policy's max_inflight_messages."""


@dataclass(frozen=True, slots=True)
class Published:
    """One load process's work: how many events, from when to the last PUBACK (wall clock)."""

    count: int
    started: float
    finished: float


def publish_all(
    host: str, port: int, instruments: list[Instrument], each: int, kind: topics.Kind
) -> Published:
    """Publish ``each`` events (or heartbeats) per instrument, interleaved; return when all
    are acked."""
    if kind is topics.Kind.HEARTBEATS:
        streams = [[(i.heartbeat_topic, p) for p in heartbeats(i, each)] for i in instruments]
    else:
        streams = [[(i.topic, p) for _, p in events(i, each)] for i in instruments]
    messages = [stream[n] for n in range(each) for stream in streams]
    # A publish is handed to paho only when the window has room: paho scans every
    # message it holds at each PUBACK, so handing it a whole backlog of 125,000 at
    # once made each ack take longer than the broker's (the load stalled).
    room = threading.Semaphore(_WINDOW)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"load-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(_WINDOW)
    client.on_publish = lambda *_: room.release()
    client.connect(host, port)
    client.loop_start()

    def take_room() -> None:
        if not room.acquire(timeout=120):
            raise RuntimeError("the broker stopped acknowledging publishes")

    try:
        started = time.time()
        for topic, payload in messages:
            take_room()
            client.publish(topic, payload, qos=1)
        for _ in range(_WINDOW):  # the whole window free again: every publish acked
            take_room()
        finished = time.time()
    finally:
        client.disconnect()
        client.loop_stop()
    return Published(len(messages), started, finished)


def run_load(
    host: str,
    port: int,
    instruments: list[Instrument],
    each: int,
    processes: int,
    *,
    kind: topics.Kind = topics.Kind.EVENTS,
) -> list[Published]:
    """Split ``instruments`` over ``processes`` load processes and run them to completion."""
    shares = [instruments[n::processes] for n in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.starmap(publish_all, [(host, port, share, each, kind) for share in shares])


def paced_latencies(
    host: str, port: int, instruments: list[Instrument], events_each: int, rate_per_s: float
) -> list[float]:
    """Send at ``rate_per_s`` through a resending ``Sender``; seconds from first publish to Ack."""
    streams = {i.id: list(events(i, events_each)) for i in instruments}
    with Sender(host, port, streams, rate_per_s=rate_per_s, resend_s=30.0) as sender:
        if not sender.wait(timeout=events_each * len(instruments) / rate_per_s + 60):
            raise RuntimeError(f"{len(sender.unacked())} events were never acked")
    return [sender.acked_at[key] - sender.first_sent[key] for key in sender.first_sent]


def run_paced(
    host: str, port: int, instruments: list[Instrument], events_each: int, rate_per_s: float
) -> list[float]:
    """``paced_latencies`` in a process of its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(paced_latencies, (host, port, instruments, events_each, rate_per_s))
