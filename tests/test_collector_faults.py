"""Fault injection: the collector under crashes and outages, every event counted.

Each test streams signed events of enrolled instruments through a sender that
behaves like agents (resend until the collector's Ack), breaks something
mid-stream — the collector (``kill -9``), the database, the broker — or mixes
in malformed payloads, and ends by counting rows by (instrument, seq):
every event exactly once, none lost, none duplicated. The default runs are
short; ``--long`` runs more events through more faults.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench import workload
from bench.process import CollectorProcess
from bench.sender import Key, Sender
from collector.service import Collector
from collector.settings import CollectorSettings, parse_mqtt_url
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import topics, wire

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

_SESSION_EXPIRY_S = 120
"""Long enough to outlive a restart, short enough not to leave sessions queueing for days."""


@dataclass(frozen=True)
class Run:
    """One test's private world: a fresh database, enrolled instruments, their streams."""

    database_url: str
    mqtt_url: str
    tag: str
    streams: dict[str, list[tuple[int, bytes]]]
    heartbeats: list[tuple[str, bytes]]
    """(topic, payload) of a heartbeat a minute per instrument alongside its events."""

    def sender(self, *, resend_s: float, rate_per_s: float | None = None) -> Sender:
        broker = parse_mqtt_url(self.mqtt_url)
        return Sender(
            broker.host, broker.port, self.streams, resend_s=resend_s, rate_per_s=rate_per_s
        )

    def settings(self) -> CollectorSettings:
        return CollectorSettings(
            database_url=self.database_url,
            mqtt_url=self.mqtt_url,
            client_id=f"collector-{self.tag}",
            share_group=f"faults-{self.tag}",
            batch_ms=50,
            session_expiry_s=_SESSION_EXPIRY_S,
            heartbeat_retention_days=0,  # the workload's days are in January 2026: keep them
        )

    def process(self, log_file: Path) -> CollectorProcess:
        settings = self.settings()
        return CollectorProcess(
            log_file,
            database_url=self.database_url,
            mqtt_url=self.mqtt_url,
            client_id=settings.client_id,
            share_group=settings.share_group,
            batch_ms=str(settings.batch_ms),
            session_expiry_s=str(_SESSION_EXPIRY_S),
            heartbeat_retention_days=str(settings.heartbeat_retention_days),
            metrics_port="0",  # no /metrics listener that another test run could hold
        )

    def expected(self) -> set[Key]:
        return {(i, seq) for i, stream in self.streams.items() for seq, _ in stream}

    def check_exactly_once(self) -> None:
        """Every streamed event is stored once; nothing else, and no conflict, is stored."""
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT instrument_id, seq, count(*) FROM events GROUP BY 1, 2"
            ).fetchall()
            conflicts = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE reason = 'conflict'"
            ).fetchone()
            unverified = conn.execute(
                "SELECT count(*) FROM events WHERE verification <> 'ok'"
            ).fetchone()
        stored = {(i, seq): count for i, seq, count in rows}
        expected = self.expected()
        assert not expected - set(stored), f"lost: {sorted(expected - set(stored))[:10]}"
        assert not set(stored) - expected, f"unexpected: {sorted(set(stored) - expected)[:10]}"
        duplicated = {key: count for key, count in stored.items() if count != 1}
        assert not duplicated, f"duplicated: {duplicated}"
        assert conflicts == (0,)
        assert unverified == (0,), "every event's signature and chain link must verify"

    def check_heartbeats_once(self, timeout: float = 30) -> None:
        """Every heartbeat is stored once and folded into its hour once."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT (instrument_id, device_time)), "
                    "(SELECT coalesce(sum(heartbeats), 0) FROM power_hours) FROM heartbeats"
                ).fetchone()
                if row == (len(self.heartbeats),) * 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert row == (len(self.heartbeats),) * 3, "(stored, distinct, folded) heartbeats"


@pytest.fixture
def make_run(make_database: MakeDatabase, mqtt_url: str) -> Iterator[Callable[[int, int], Run]]:
    """``make_run(instruments, events_each)``: a fresh database with the fleet enrolled."""
    with ExitStack() as databases:

        def make(instruments: int, events_each: int) -> Run:
            url = databases.enter_context(make_database("test_faults"))
            tag = uuid.uuid4().hex[:10]
            fleet = workload.fleet(f"f{tag}", instruments)
            with psycopg.connect(url) as conn:
                workload.register(conn, fleet)
            streams = {i.id: list(workload.events(i, events_each)) for i in fleet}
            beats = [
                (i.heartbeat_topic, payload)
                for i in fleet
                for payload in workload.heartbeats(i, events_each)
            ]
            return Run(url, mqtt_url, tag, streams, beats)

        yield make


@contextmanager
def collector_thread(settings: CollectorSettings) -> Iterator[threading.Thread]:
    """A collector serving in a thread of this process; stopped and joined on exit."""
    collector = Collector(settings)
    collector.start()
    worker = threading.Thread(target=collector.serve, name="collector-under-test")
    worker.start()
    try:
        yield worker
    finally:
        collector.stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the collector did not stop"


def wait_for_acks(sender: Sender, count: int, timeout: float) -> None:
    """Block until ``count`` events are acked: the fault then lands mid-stream."""
    deadline = time.monotonic() + timeout
    while len(sender.acked_at) < count:
        assert time.monotonic() < deadline, f"only {len(sender.acked_at)} of {count} acked"
        time.sleep(0.02)


# --- (a) kill -9 of the collector -------------------------------------------


def kill_collector_repeatedly(run: Run, tmp_path: Path, kills: int, every_s: float) -> None:
    """Paced so the stream lasts ``kills * every_s`` seconds; each kill lands at a share of it.

    A share of the heartbeats goes out before each kill, so some are in the
    batch the kill cuts short: redelivered, each must still be stored and
    folded into its hour once.
    """
    log_file = tmp_path / "collector.log"
    total = len(run.expected())
    beats = [run.heartbeats[n :: kills + 1] for n in range(kills + 1)]
    with (
        run.process(log_file) as collector,
        run.sender(resend_s=2.0, rate_per_s=total / (kills * every_s)) as sender,
        heartbeat_publisher(run.mqtt_url) as publish,
    ):
        collector.start()
        for n in range(1, kills + 1):
            wait_for_acks(sender, total * n // (kills + 1), timeout=60)
            assert collector.alive(), log_file.read_text()
            publish(beats[n - 1])
            time.sleep(0.1)  # into the batches the kill cuts short
            collector.kill()
            collector.start()
        publish(beats[kills])
        finished = sender.wait(timeout=120)
        run.check_heartbeats_once()
        assert collector.stop() == 0, log_file.read_text()
    assert finished, f"{len(sender.unacked())} events never acked"
    run.check_exactly_once()


@contextmanager
def heartbeat_publisher(mqtt_url: str) -> Iterator[Callable[[list[tuple[str, bytes]]], None]]:
    """A client that publishes heartbeats at QoS 1, as agents do, without waiting for them."""
    broker = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent: list[mqtt.MQTTMessageInfo] = []

    def publish(messages: list[tuple[str, bytes]]) -> None:
        sent.extend(client.publish(topic, payload, qos=1) for topic, payload in messages)

    try:
        yield publish
        for info in sent:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_kill_9_of_the_collector_mid_stream_loses_and_duplicates_nothing(
    make_run: Callable[[int, int], Run], tmp_path: Path
) -> None:
    kill_collector_repeatedly(make_run(3, 400), tmp_path, kills=3, every_s=1.5)


@pytest.mark.long
def test_kill_9_of_the_collector_every_few_seconds_long(
    make_run: Callable[[int, int], Run], tmp_path: Path
) -> None:
    kill_collector_repeatedly(make_run(20, 1500), tmp_path, kills=15, every_s=4.0)


# --- (b) database outage ----------------------------------------------------


def paced_for_outages(run: Run, outages: int) -> Sender:
    """A sender whose stream lasts two seconds per share, so each outage lands inside it.

    Unpaced, the collector could ack the whole stream in a few batches before
    the outage began, and the fault would test nothing.
    """
    return run.sender(resend_s=3.0, rate_per_s=len(run.expected()) / (2.0 * (outages + 1)))


def database_outages(run: Run, stack: DevStack, outages: list[str], down_s: float) -> None:
    """Take the database down (``stop`` or ``kill``) after each share of the stream."""
    with collector_thread(run.settings()), paced_for_outages(run, len(outages)) as sender:
        for n, how in enumerate(outages, start=1):
            wait_for_acks(sender, sender.total * n // (len(outages) + 1), timeout=60)
            try:
                stack.kill_postgres() if how == "kill" else stack.stop_postgres()
                time.sleep(down_s)
            finally:
                stack.start_postgres()
        finished = sender.wait(timeout=120)
    assert finished, f"{len(sender.unacked())} events never acked"
    run.check_exactly_once()


def test_a_database_stopped_and_restarted_mid_stream_loses_nothing(
    make_run: Callable[[int, int], Run], stack: DevStack
) -> None:
    database_outages(make_run(3, 400), stack, ["stop"], down_s=1.5)


@pytest.mark.long
def test_database_crashes_and_restarts_mid_stream_long(
    make_run: Callable[[int, int], Run], stack: DevStack
) -> None:
    database_outages(make_run(20, 1000), stack, ["stop", "kill", "stop", "kill"], down_s=5.0)


# --- (c) broker restart -----------------------------------------------------


def broker_restarts(run: Run, stack: DevStack, outages: list[str], down_s: float) -> None:
    """Take the broker down (``stop`` saves its state, ``kill`` loses it) mid-stream."""
    with collector_thread(run.settings()), paced_for_outages(run, len(outages)) as sender:
        for n, how in enumerate(outages, start=1):
            wait_for_acks(sender, sender.total * n // (len(outages) + 1), timeout=60)
            try:
                stack.kill_mosquitto() if how == "kill" else stack.stop_mosquitto()
                time.sleep(down_s)
            finally:
                stack.start_mosquitto()
        finished = sender.wait(timeout=120)
    assert finished, f"{len(sender.unacked())} events never acked"
    assert sender.resent > 0, "the broker outage never hit the stream"
    run.check_exactly_once()


def test_a_broker_killed_and_restarted_mid_stream_loses_nothing(
    make_run: Callable[[int, int], Run], stack: DevStack
) -> None:
    broker_restarts(make_run(3, 400), stack, ["kill"], down_s=1.0)


@pytest.mark.long
def test_broker_crashes_and_restarts_mid_stream_long(
    make_run: Callable[[int, int], Run], stack: DevStack
) -> None:
    broker_restarts(make_run(20, 1000), stack, ["kill", "stop", "kill", "stop"], down_s=3.0)


# --- (d) malformed payloads -------------------------------------------------

_WRONG_VALUES: dict[str, list[object]] = {
    "v": ["1", [1], None, 1.5, 2],
    "instrument": [42, None, [], "bad id"],
    "boot": [7, None, "XYZ", "00" * 17],
    "seq": ["1", 0, -5, 2**64, None, 1.5],
    "t": ["now", -1, None, 2**60],
    "from": ["on", 3, None],
    "to": ["", [], None],
    "power_w": ["high", -1.0, [], 1e9],
    "prev": ["abc", 1, None],
    "sig": [5, None, "!not base64!"],
}


_REASONS = {
    "malformed",
    "schema_version",
    "invalid",
    "topic_mismatch",
    "oversized",
    "unknown_instrument",
}


def bad_messages(rng: random.Random, run: Run, count: int) -> list[tuple[str, bytes]]:
    """``count`` (topic, payload) pairs the collector must keep as dead letters.

    Random bytes, truncated JSON, fields of the wrong type or range, unknown
    and missing fields, oversized payloads (but under the broker's 64 KiB
    packet limit, past which the broker, not the collector, refuses them),
    payloads on the wrong topic, and topics naming no valid instrument.
    """
    instruments = sorted(run.streams)
    good = [payload for stream in run.streams.values() for _, payload in stream[:20]]
    kinds = [topics.Kind.EVENTS, topics.Kind.HEARTBEATS, topics.Kind.STATUS]

    def some_topic() -> str:
        return topics.topic(rng.choice(kinds), rng.choice(instruments))

    def some_event() -> dict[str, object]:
        document: dict[str, object] = msgspec.json.decode(rng.choice(good))
        return document

    def random_bytes() -> tuple[str, bytes]:
        return some_topic(), rng.randbytes(rng.randint(0, 2000))

    def truncated() -> tuple[str, bytes]:
        payload = rng.choice(good)
        return some_topic(), payload[: rng.randint(0, len(payload) - 1)]

    def wrong_value() -> tuple[str, bytes]:
        document = some_event()
        topic = topics.topic(topics.Kind.EVENTS, str(document["instrument"]))
        field = rng.choice(sorted(_WRONG_VALUES))
        document[field] = rng.choice(_WRONG_VALUES[field])
        return topic, msgspec.json.encode(document)

    def unknown_or_missing_field() -> tuple[str, bytes]:
        document = some_event()
        if rng.random() < 0.5:
            document[f"x{rng.randint(0, 99)}"] = 1
        else:
            del document[rng.choice(["v", "instrument", "boot", "seq", "t", "from", "to"])]
        return topics.topic(topics.Kind.EVENTS, rng.choice(instruments)), msgspec.json.encode(
            document
        )

    def oversized() -> tuple[str, bytes]:
        document = some_event()
        document["pad"] = "x" * rng.randint(wire.MAX_PAYLOAD_BYTES, 60_000)
        return some_topic(), msgspec.json.encode(document)

    def wrong_topic() -> tuple[str, bytes]:
        document = some_event()
        others = [i for i in instruments if i != document["instrument"]]
        choice = rng.randrange(4)
        if choice == 0:  # another instrument's topic
            return topics.topic(topics.Kind.EVENTS, rng.choice(others)), msgspec.json.encode(
                document
            )
        if choice == 1:  # an event on the heartbeats or status topic
            kind = rng.choice([topics.Kind.HEARTBEATS, topics.Kind.STATUS])
            return topics.topic(kind, str(document["instrument"])), msgspec.json.encode(document)
        if choice == 2:  # a topic that names no valid instrument
            return f"{topics.ROOT}/events/-{rng.randint(0, 9)} bad!", msgspec.json.encode(document)
        ghost = f"ghost-{run.tag}-{rng.randint(0, 9)}"  # a valid event of an unknown instrument
        document["instrument"] = ghost
        return topics.topic(topics.Kind.EVENTS, ghost), msgspec.json.encode(document)

    makers = [
        random_bytes,
        truncated,
        wrong_value,
        unknown_or_missing_field,
        oversized,
        wrong_topic,
    ]
    return [rng.choice(makers)() for _ in range(count)]


def fuzz(run: Run, bad_count: int, seed: int) -> None:
    bad = bad_messages(random.Random(seed), run, bad_count)
    broker = parse_mqtt_url(run.mqtt_url)
    fuzzer = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    fuzzer.connect(broker.host, broker.port)
    fuzzer.loop_start()
    try:
        with collector_thread(run.settings()) as worker, run.sender(resend_s=3.0) as sender:
            for topic, payload in bad:  # interleaved with the sender's good stream
                fuzzer.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
            finished = sender.wait(timeout=120)
            kept = eventually_dead_letters(
                run.database_url, len(bad), timeout=30, ours={topic for topic, _ in bad}
            )
            assert worker.is_alive(), "the collector died"
    finally:
        fuzzer.disconnect()
        fuzzer.loop_stop()
    assert finished, f"{len(sender.unacked())} events never acked (seed {seed})"
    assert collections.Counter(letter[:2] for letter in kept) == collections.Counter(bad), seed
    assert {reason for *_, reason in kept} >= _REASONS, "the fuzz missed a kind of bad input"
    run.check_exactly_once()


def eventually_dead_letters(
    url: str, count: int, timeout: float, ours: set[str]
) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason) of each dead letter, once ``count`` are stored or at the timeout.

    Retained status messages that other tests' agents left on the shared broker
    name instruments this run never registered, so they are dead-lettered too,
    rightly; status topics not in ``ours`` are left out here.
    """
    status = f"{topics.ROOT}/{topics.Kind.STATUS}/"
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = [
                (topic, bytes(payload), reason)
                for topic, payload, reason in conn.execute(
                    "SELECT topic, payload, reason FROM dead_letters"
                ).fetchall()
                if not (topic.startswith(status) and topic not in ours)
            ]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


def test_malformed_payloads_all_become_dead_letters_and_the_collector_stays_up(
    make_run: Callable[[int, int], Run],
) -> None:
    fuzz(make_run(3, 200), bad_count=300, seed=1)


@pytest.mark.long
def test_malformed_payloads_fuzz_long(make_run: Callable[[int, int], Run]) -> None:
    fuzz(make_run(10, 1000), bad_count=5000, seed=2)
