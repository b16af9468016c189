"""The collector in operation: its /metrics, and database outages, against real services."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import paho.mqtt.client as mqtt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from collector import db, migrate
from collector.ingest import parse_message
from collector.service import Collector
from collector.settings import CollectorSettings, parse_mqtt_url
from collector.store import store_batch
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import topics, wire
from instrumetry.domain.states import State

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

T = TypeVar("T")
BOOT = "00112233445566778899aabbccddeeff"
T0_MS = int(datetime(2025, 3, 3, 8, 0, tzinfo=UTC).timestamp() * 1000)


@contextmanager
def running(settings: CollectorSettings) -> Iterator[Collector]:
    collector = Collector(settings)
    collector.start()
    worker = threading.Thread(target=collector.serve, name="collector-under-test")
    worker.start()
    try:
        yield collector
    finally:
        collector.stop()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the collector did not stop"


def own_collector(url: str, mqtt_url: str, tag: str, **settings: Any) -> CollectorSettings:
    """A collector with a session and share group of its own, on short batches."""
    return CollectorSettings(
        database_url=url,
        mqtt_url=mqtt_url,
        client_id=f"collector-{tag}",
        share_group=f"group-{tag}",
        batch_ms=50,
        **{"metrics_port": 0} | settings,
    )


def enroll(conn: psycopg.Connection[TupleRow], instrument: str) -> Ed25519PrivateKey:
    conn.execute("INSERT INTO institutions (id, name) VALUES ('lab', 'Lab') ON CONFLICT DO NOTHING")
    conn.execute(
        "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', 'MS')", (instrument,)
    )
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    conn.execute(
        "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
        (f"agent-{instrument}", instrument, raw),
    )
    return key


def signed_event(instrument: str, seq: int, key: Ed25519PrivateKey) -> bytes:
    states = (State.STANDBY, State.RUNNING)
    event = wire.Event(
        v=1,
        instrument=instrument,
        boot=BOOT,
        seq=seq,
        t=T0_MS + seq * 60_000,
        from_state=states[(seq + 1) % 2],
        to_state=states[seq % 2],
    )
    return wire.encode(wire.sign(event, key.sign))


def publisher(mqtt_url: str) -> mqtt.Client:
    broker = parse_mqtt_url(mqtt_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def periods(url: str, instrument: str) -> list[tuple[int, int | None]]:
    """The instrument's offline periods as (start, end) in epoch milliseconds."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT start_time, end_time FROM offline_periods WHERE instrument_id = %s "
            "ORDER BY start_time",
            (instrument,),
        ).fetchall()
    return [(ms(start), None if end is None else ms(end)) for start, end in rows]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def eventually(check: Callable[[], T], expected: T, timeout: float = 10) -> T:
    """Poll ``check`` until it returns ``expected``; return its last value."""
    deadline = time.monotonic() + timeout
    while (value := check()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def stored(url: str, instrument: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT seq FROM events WHERE instrument_id = %s ORDER BY seq", (instrument,)
        ).fetchall()
    return [seq for (seq,) in rows]


def test_the_collectors_sessions_run_without_jit_and_keep_the_urls_own_options(
    database_url: str,
) -> None:
    url = make_conninfo(database_url, options="-c statement_timeout=4321")
    with db.connect(url, settings=db.INGEST_SETTINGS) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
    with db.connect(database_url) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("on",)


def test_metrics_count_what_the_collector_did(
    make_database: MakeDatabase, mqtt_url: str, unused_ports: Callable[[int], list[int]]
) -> None:
    (port,) = unused_ports(1)
    tag = uuid.uuid4().hex[:10]
    instrument = f"ms-{tag}"
    with make_database("test_metrics") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            key = enroll(conn, instrument)
        settings = own_collector(
            url, mqtt_url, tag, metrics_host="127.0.0.1", metrics_port=port, heartbeat_timeout_s=0.4
        )
        client = publisher(mqtt_url)
        events_topic = topics.topic(topics.Kind.EVENTS, instrument)
        try:
            with running(settings):
                for seq in (1, 2, 1):  # the second seq 1 is a redelivery
                    client.publish(events_topic, signed_event(instrument, seq, key), qos=1)
                forged = signed_event(instrument, 3, Ed25519PrivateKey.generate())
                client.publish(events_topic, forged, qos=1)
                client.publish(events_topic, b"not json", qos=1).wait_for_publish(5)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    samples = scrape(port)
                    if (
                        samples.get(("instrumetry_collector_messages_total", (("kind", "events"),)))
                        == 5
                    ):
                        break
                    time.sleep(0.1)
                time.sleep(0.6)  # a liveness sweep: the agent is silent past its timeout
                samples = scrape(port)
        finally:
            client.disconnect()
            client.loop_stop()

    assert samples[("instrumetry_collector_messages_total", (("kind", "events"),))] == 5
    assert samples[("instrumetry_collector_events_stored_total", ())] == 3
    assert samples[("instrumetry_collector_redeliveries_total", ())] == 1
    assert samples[("instrumetry_collector_dead_letters_total", (("reason", "malformed"),))] == 1
    failures = ("instrumetry_collector_verification_failures_total", (("reason", "bad_signature"),))
    assert samples[failures] == 1
    assert samples[("instrumetry_collector_batch_seconds_count", ())] >= 1
    # Every message committed had its lag measured, including retained statuses that
    # other tests' agents left on the shared broker (Mosquitto sends them to shares too).
    committed = sum(
        value
        for (name, _), value in samples.items()
        if name == "instrumetry_collector_messages_total"
    )
    assert samples[("instrumetry_collector_commit_lag_seconds_count", ())] == committed
    timeouts = (
        "instrumetry_collector_offline_periods_opened_total",
        (("reason", "heartbeat_timeout"),),
    )
    assert samples[timeouts] == 1
    assert samples[("instrumetry_collector_agents_online", ())] == 0
    assert samples[("instrumetry_collector_signature_child_failures_total", ())] == 0
    assert samples[("instrumetry_collector_messages_in_hand", ())] == 0
    with pytest.raises(OSError):  # stopped with the collector
        scrape(port)


def test_the_collector_keeps_heartbeats_for_its_retention_window(
    make_database: MakeDatabase, mqtt_url: str
) -> None:
    """At its first sweep the collector drops the heartbeats past the window (a whole day
    chunk); the hours they were folded into stay."""
    tag = uuid.uuid4().hex[:10]
    instrument = f"hb-{tag}"
    now_ms = ms(datetime.now(UTC))
    sent = {"old": now_ms - 40 * 86_400_000, "recent": now_ms - 60_000}
    topic = topics.topic(topics.Kind.HEARTBEATS, instrument)
    beats = {
        name: wire.encode(
            wire.Heartbeat(v=1, instrument=instrument, boot=BOOT, t=t, state=State.OFF, last_seq=0)
        )
        for name, t in sent.items()
    }
    with make_database("test_retention") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            enroll(conn, instrument)
            received = datetime.fromtimestamp(sent["old"] / 1000, UTC)  # folded then
            store_batch(conn, [parse_message(topic, beats["old"], received)])
        settings = own_collector(
            url, mqtt_url, tag, heartbeat_timeout_s=0.4, heartbeat_retention_days=30
        )
        client = publisher(mqtt_url)
        try:
            with running(settings) as collector:
                client.publish(topic, beats["recent"], qos=1).wait_for_publish(5)
                value = collector.metrics.registry.get_sample_value
                stored = "instrumetry_collector_heartbeats_stored_total"
                dropped = "instrumetry_collector_heartbeat_chunks_dropped_total"
                done: tuple[float | None, ...] = (1.0, 1.0)
                assert eventually(lambda: (value(stored), value(dropped)), done) == done
        finally:
            client.disconnect()
            client.loop_stop()
        with psycopg.connect(url) as conn:
            raw = conn.execute("SELECT device_time FROM heartbeats").fetchall()
            hours = conn.execute("SELECT hour FROM power_hours ORDER BY hour").fetchall()
    assert [ms(when) for (when,) in raw] == [sent["recent"]]
    assert [ms(hour) for (hour,) in hours] == [t - t % 3_600_000 for t in sent.values()]


@pytest.mark.long
def test_a_stopped_database_backs_up_into_the_broker_and_loses_nothing(
    make_stack: Callable[[], DevStack],
) -> None:
    """PostgreSQL shut down mid-stream: more than the in-flight window waits in the broker.

    The short form of this test (the database refusing connections) runs by
    default in test_collector_mqtt.py.
    """
    stack = make_stack()
    info = stack.up()
    with psycopg.connect(info.database_url, autocommit=True) as conn:
        migrate.migrate(conn, report=lambda _: None)
        key = enroll(conn, "ms-outage")
    settings = CollectorSettings(
        database_url=info.database_url,
        mqtt_url=info.mqtt_url,
        client_id="collector-outage",
        batch_ms=50,
        metrics_port=0,
    )
    total = 3000  # three times the broker's in-flight window for one client
    client = publisher(info.mqtt_url)
    topic = topics.topic(topics.Kind.EVENTS, "ms-outage")
    try:
        with running(settings) as collector:
            for seq in range(1, 501):
                client.publish(topic, signed_event("ms-outage", seq, key), qos=1)
            stack.stop_postgres()
            try:
                for seq in range(501, total + 1):
                    client.publish(topic, signed_event("ms-outage", seq, key), qos=1)
                time.sleep(3)
                retries = collector.metrics.registry.get_sample_value(
                    "instrumetry_collector_database_retries_total"
                )
                assert retries is not None and retries >= 1, (
                    "the collector stored without a database"
                )
            finally:
                stack.start_postgres()
            deadline = time.monotonic() + 120
            while (
                len(stored(info.database_url, "ms-outage")) < total and time.monotonic() < deadline
            ):
                time.sleep(0.5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert stored(info.database_url, "ms-outage") == list(range(1, total + 1))


def test_an_agents_last_will_opens_an_offline_period_and_its_return_closes_it(
    make_database: MakeDatabase, mqtt_url: str
) -> None:
    """The broker publishes the Will of an agent that vanishes; the collector records it."""
    tag = uuid.uuid4().hex[:10]
    instrument = f"ms-{tag}"
    broker = parse_mqtt_url(mqtt_url)
    status_topic = topics.topic(topics.Kind.STATUS, instrument)

    def status(value: Literal["online", "offline"], boot: str, t_ms: int) -> bytes:
        message = wire.Status(v=1, instrument=instrument, boot=boot, status=value, t=t_ms)
        return wire.encode(message)

    with make_database("test_will") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            key = enroll(conn, instrument)
        settings = own_collector(url, mqtt_url, tag)
        with running(settings):
            agent = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            agent.will_set(status_topic, status("offline", BOOT, T0_MS), qos=1)
            agent.connect(broker.host, broker.port)
            agent.loop_start()
            events_topic = topics.topic(topics.Kind.EVENTS, instrument)
            agent.publish(events_topic, signed_event(instrument, 1, key), qos=1).wait_for_publish(5)
            # Vanish: MQTT v5 lets a client ask for its Will, as a dropped link would.
            agent.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            )
            agent.loop_stop()
            last_heard = T0_MS + 60_000  # the device time of event 1
            still_open: list[tuple[int, int | None]] = [(last_heard, None)]
            assert eventually(lambda: periods(url, instrument), still_open) == still_open

            comeback = publisher(mqtt_url)
            new_boot, back_ms = "ff" * 16, T0_MS + 3_600_000
            comeback.publish(
                status_topic, status("online", new_boot, back_ms), qos=1
            ).wait_for_publish(5)
            comeback.disconnect()
            comeback.loop_stop()
            closed: list[tuple[int, int | None]] = [(last_heard, back_ms)]
            assert eventually(lambda: periods(url, instrument), closed) == closed
