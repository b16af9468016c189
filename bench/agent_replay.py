"""Replay: how fast a backlog of events drains from the agent's outbox once the collector is back.

Target (issue 3): an outbox of 100,000 events drains at 5,000 events/s or more.
The backlog is the outbox of an agent that was cut off: signed, chained
events, filled here in one SQLite transaction (filling it event by event,
with an fsync each, is what the agent does live and would only slow the
set-up). Then ``instrumetry-agent`` starts against a private Mosquitto and a
real collector writing to TimescaleDB, and the clock runs from its start
until the outbox is empty, i.e. until the collector has acknowledged every
event as committed. The agent's rate limit is raised for the run
(``replay_per_s``; the default of 50/s protects a shared broker, not a bound
of the code) and its in-flight window to 2,000 (1,000 and 5,000 drained slower).

The reference, in the same run, is the same number of events published by a
bare paho QoS 1 loop (no outbox, no acks awaited) into the same collector,
timed until the database holds them all: the broker-plus-collector ceiling.

    python -m bench.agent_replay --events 100000
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agents.keys import load_key
from agents.outbox import FILE_NAME, Outbox
from bench.agent_common import (
    machine,
    private_stack,
    register_instrument,
    start_collector,
    write_agent,
)
from instrumetry.domain import chain, wire
from instrumetry.domain.classify import Transition
from instrumetry.domain.states import State
from instrumetry.domain.topics import Kind, topic
from sim.meters import VirtualMeter
from sim.modbus_server import MeterServerThread

CYCLE = (State.OFF, State.STANDBY, State.RUNNING)
T0_MS = 1_767_225_600_000


def backlog(instrument: str, boot: str, key: Ed25519PrivateKey, count: int) -> list[wire.Event]:
    """``count`` signed, chained transitions one minute apart."""
    events = []
    head = chain.ChainHead()
    for n in range(count):
        transition = Transition(T0_MS + 60_000 * n, CYCLE[n % 3], CYCLE[(n + 1) % 3], 40.0)
        event, head = chain.append(
            head, instrument=instrument, boot=boot, transition=transition, signer=key.sign
        )
        events.append(event)
    return events


def fill_outbox(state_dir: Path, events: list[wire.Event]) -> None:
    """Write ``events`` and the chain head past them into a fresh outbox, in one transaction."""
    Outbox(state_dir).close()  # creates the schema
    with sqlite3.connect(state_dir / FILE_NAME) as db:
        db.executemany(
            "INSERT INTO events (seq, payload) VALUES (?, ?)",
            [(event.seq, wire.encode(event)) for event in events],
        )
        db.execute(
            "UPDATE chain SET next_seq = ?, prev = ?",
            (events[-1].seq + 1, wire.event_hash(events[-1])),
        )


def pending(state_dir: Path) -> int:
    with sqlite3.connect(f"file:{state_dir / FILE_NAME}?mode=ro", uri=True, timeout=10) as db:
        (count,) = db.execute("SELECT count(*) FROM events").fetchone()
    return int(count)


def stored(database_url: str, instrument: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE instrument_id = %s", (instrument,)
        ).fetchone()
    return int(row[0]) if row else 0


def agent_replay(work: Path, database_url: str, mqtt_url: str, port: int, count: int) -> float:
    """Seconds from the agent's start until its outbox of ``count`` events is empty."""
    instrument = "bench-replay"
    register_instrument(database_url, instrument)
    config = write_agent(
        work,
        instrument,
        {
            "broker": {"url": mqtt_url, "max_inflight": 2000, "replay_per_s": 1e6},
            "meter": {"host": "127.0.0.1", "port": port, "poll_interval_s": 1.0},
            "log": {"file": "agent.log"},
        },
    )
    key = load_key(work / "agent.key")
    events = backlog(instrument, "0" * 31 + "1", key, count)
    fill_outbox(work / "state", events)
    started = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "agents", "--config", str(config)])
    try:
        while pending(work / "state") > 0:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    # The agent's own first reading adds one event after the backlog.
    assert stored(database_url, instrument) >= count, "not every event is in the database"
    return elapsed


def bare_publish(database_url: str, mqtt_url: str, count: int) -> float:
    """Seconds for a bare QoS 1 publisher to get ``count`` events stored by the collector."""
    instrument = "bench-bare"
    register_instrument(database_url, instrument)
    payloads = [
        wire.encode(event)
        for event in backlog(instrument, "0" * 31 + "2", Ed25519PrivateKey.generate(), count)
    ]
    url = urlsplit(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(url.hostname or "", url.port or 1883)
    client.loop_start()
    target = topic(Kind.EVENTS, instrument)
    started = time.monotonic()
    try:
        unconfirmed: deque[mqtt.MQTTMessageInfo] = deque()
        for payload in payloads:
            if len(unconfirmed) >= 30_000:  # message ids are 16 bits: never reuse a pending one
                unconfirmed.popleft().wait_for_publish(timeout=120)
            unconfirmed.append(client.publish(target, payload, qos=1))
        for info in unconfirmed:
            info.wait_for_publish(timeout=120)
        while stored(database_url, instrument) < count:
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    meter = VirtualMeter(lambda _now: 40.0, seed=1)
    with private_stack() as (work, info), MeterServerThread({1: meter}) as port:
        collector = start_collector(info, work / "collector.log")
        try:
            agent_s = agent_replay(work, info.database_url, info.mqtt_url, port, args.events)
            print(f"agent replay: {args.events / agent_s:,.0f} events/s", flush=True)
            bare_s = bare_publish(info.database_url, info.mqtt_url, args.events)
        finally:
            collector.terminate()
            collector.wait(timeout=60)
    print(f"machine: {machine()}")
    print(f"events: {args.events:,}")
    print("| sender | seconds | events/s |")
    print("|---|---|---|")
    print(f"| agent outbox replay, acked | {agent_s:.1f} | {args.events / agent_s:,.0f} |")
    print(f"| bare paho QoS 1 (reference) | {bare_s:.1f} | {args.events / bare_s:,.0f} |")
    rate = args.events / agent_s
    print(
        f"agent/reference: x{bare_s / agent_s:.2f}; target >= 5,000 events/s: "
        f"{'met' if rate >= 5000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
