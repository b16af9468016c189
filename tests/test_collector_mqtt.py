"""The collector end to end: a real broker, a real database, events counted exactly once.

Each test runs collectors under its own share group and client ids and uses
its own instruments, so no test can receive another's messages.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import paho.mqtt.client as mqtt
import psutil
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from collector.service import Collector
from collector.settings import BrokerAddress, CollectorSettings, load_settings, parse_mqtt_url
from instrumetry.devstack.stack import DevStack, StackInfo
from instrumetry.domain import topics, wire
from instrumetry.domain.errors import ConfigError, ServiceError
from instrumetry.domain.states import State

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

T = TypeVar("T")
BOOT = "00112233445566778899aabbccddeeff"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def admin_dsn(stack_info: StackInfo) -> str:
    return make_conninfo(stack_info.superuser_dsn, dbname="postgres")


@pytest.fixture(scope="module")
def mqtt_database(make_database: MakeDatabase) -> Iterator[str]:
    """A migrated database of this module's own, so tests elsewhere never see its rows."""
    with make_database("test_mqtt") as url:
        yield url


@pytest.fixture
def settings(mqtt_database: str, mqtt_url: str) -> CollectorSettings:
    """Settings of this test's collectors: a share group and a client id of its own."""
    tag = uuid.uuid4().hex[:10]
    return CollectorSettings(
        database_url=mqtt_database,
        mqtt_url=mqtt_url,
        client_id=f"collector-{tag}",
        share_group=f"group-{tag}",
        batch_ms=50,
        metrics_port=0,
    )


@pytest.fixture
def conn(mqtt_database: str) -> Iterator[psycopg.Connection[TupleRow]]:
    with psycopg.connect(mqtt_database, autocommit=True) as connection:
        yield connection


@contextmanager
def running(settings: CollectorSettings) -> Iterator[Collector]:
    """A started collector serving in a thread; stopped and joined on exit."""
    collector = Collector(settings)
    collector.start()
    worker = threading.Thread(target=collector.serve, name="collector-under-test")
    worker.start()
    try:
        yield collector
    finally:
        collector.stop()
        worker.join(timeout=15)
        assert not worker.is_alive(), "the collector did not stop"


class Agent:
    """A bare MQTT client playing an instrument's agent: publishes, and hears Acks."""

    def __init__(self, mqtt_url: str, instrument_id: str, key: Ed25519PrivateKey) -> None:
        broker = parse_mqtt_url(mqtt_url)
        self.instrument_id = instrument_id
        self.key = key
        self.acked: queue.SimpleQueue[wire.Ack] = queue.SimpleQueue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, message: self.acked.put(
            wire.decode(wire.Ack, bytes(message.payload))
        )
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe(
            topics.topic(topics.Kind.ACKS, instrument_id), qos=1
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(timeout=10), "no SUBACK for the acks topic"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def send_events(self, seqs: range, states: tuple[State, ...] = tuple(State)) -> None:
        for seq in seqs:
            event = wire.Event(
                v=1,
                instrument=self.instrument_id,
                boot=BOOT,
                seq=seq,
                t=int((T0 + timedelta(minutes=seq)).timestamp() * 1000),
                from_state=states[(seq - 1) % len(states)],
                to_state=states[seq % len(states)],
            )
            event = wire.sign(event, self.key.sign)
            self.publish(topics.topic(topics.Kind.EVENTS, self.instrument_id), wire.encode(event))

    def acked_seqs(self, expected: set[int], timeout: float = 10) -> set[int]:
        """Seqs acked until all of ``expected`` are, or the timeout."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while not expected <= seen and time.monotonic() < deadline:
            try:
                seen.update(self.acked.get(timeout=0.1).seqs)
            except queue.Empty:
                continue
        return seen

    def deliver(self, seqs: range, timeout: float = 20) -> set[int]:
        """Resend every un-acked event each second, as a real agent's outbox does."""
        acked: set[int] = set()
        deadline = time.monotonic() + timeout
        while not set(seqs) <= acked and time.monotonic() < deadline:
            for seq in sorted(set(seqs) - acked):
                self.send_events(range(seq, seq + 1))
            acked |= self.acked_seqs(set(seqs) - acked, timeout=1)
        return acked

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def agent(conn: psycopg.Connection[TupleRow], mqtt_url: str) -> Iterator[Agent]:
    """An agent of a newly registered instrument."""
    instrument_id = f"xrd-{uuid.uuid4().hex[:10]}"
    conn.execute(
        "INSERT INTO institutions (id, name) VALUES ('lab', 'Test lab') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', 'XRD')",
        (instrument_id,),
    )
    key = Ed25519PrivateKey.generate()
    conn.execute(
        "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
        (
            f"agent-{instrument_id}",
            instrument_id,
            key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        ),
    )
    client = Agent(mqtt_url, instrument_id, key)
    try:
        yield client
    finally:
        client.close()


def stored_seqs(conn: psycopg.Connection[TupleRow], instrument_id: str) -> list[int]:
    rows = conn.execute(
        "SELECT seq FROM events WHERE instrument_id = %s ORDER BY seq", (instrument_id,)
    ).fetchall()
    return [seq for (seq,) in rows]


def eventually(check: Callable[[], T], expected: T, timeout: float = 10) -> T:
    """Poll ``check`` until it returns ``expected``; return its last value."""
    deadline = time.monotonic() + timeout
    while (value := check()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker.lab:1884", BrokerAddress("broker.lab", 1884)),
        ("mqtt://127.0.0.1", BrokerAddress("127.0.0.1", 1883)),
        (
            "mqtt://collector:s%40cret@broker.lab:1884/",
            BrokerAddress("broker.lab", 1884, "collector", "s@cret"),
        ),
    ],
)
def test_mqtt_urls_are_parsed(url: str, address: BrokerAddress) -> None:
    assert parse_mqtt_url(url) == address


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "mqtt://", "mqtt://broker:99999", "broker:1883"]
)
def test_bad_settings_are_one_line_config_errors(url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^invalid collector settings: mqtt_url \(INSTRUMETRY_MQTT_URL\)"
    ):
        load_settings(database_url="postgresql://db/x", mqtt_url=url)


def test_an_unreachable_broker_is_a_service_error(
    mqtt_database: str, unused_ports: Callable[[int], list[int]]
) -> None:
    (port,) = unused_ports(1)
    collector = Collector(
        load_settings(database_url=mqtt_database, mqtt_url=f"mqtt://127.0.0.1:{port}")
    )
    with pytest.raises(
        ServiceError, match=rf"cannot connect to the MQTT broker at mqtt://127.0.0.1:{port}"
    ):
        collector.start()


def test_an_unreachable_database_is_a_service_error(
    mqtt_url: str, unused_ports: Callable[[int], list[int]]
) -> None:
    (port,) = unused_ports(1)
    url = f"postgresql://instrumetry:x@127.0.0.1:{port}/instrumetry"
    collector = Collector(load_settings(database_url=url, mqtt_url=mqtt_url))
    with pytest.raises(ServiceError, match=rf"cannot connect to the database at 127.0.0.1:{port}"):
        collector.start()


def test_events_are_stored_once_and_acked(
    settings: CollectorSettings, agent: Agent, conn: psycopg.Connection[TupleRow]
) -> None:
    with running(settings):
        agent.send_events(range(1, 21))
        assert agent.acked_seqs(set(range(1, 21))) == set(range(1, 21))
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 21))

        agent.send_events(range(1, 21))  # an agent resending its whole outbox
        assert agent.acked_seqs(set(range(1, 21))) == set(range(1, 21))
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 21))
        intervals = conn.execute(
            "SELECT count(*) FROM intervals WHERE instrument_id = %s", (agent.instrument_id,)
        ).fetchone()
        assert intervals == (20,)


def test_bad_messages_become_dead_letters_and_the_collector_goes_on(
    settings: CollectorSettings, agent: Agent, conn: psycopg.Connection[TupleRow]
) -> None:
    marker = uuid.uuid4().hex
    events_topic = topics.topic(topics.Kind.EVENTS, agent.instrument_id)
    bad = {
        "malformed": f"garbage {marker}".encode(),
        "schema_version": f'{{"v": 9, "m": "{marker}"}}'.encode(),
        "invalid": f'{{"v": 1, "m": "{marker}"}}'.encode(),
        "oversized": marker.encode() + b" " * wire.MAX_PAYLOAD_BYTES,
    }
    with running(settings):
        for payload in bad.values():
            agent.publish(events_topic, payload)
        agent.send_events(range(1, 2))

        assert agent.acked_seqs({1}) == {1}
        rows = eventually(
            lambda: conn.execute(
                "SELECT reason, topic, payload FROM dead_letters "
                "WHERE position(%s in payload) > 0 ORDER BY id",
                (marker.encode(),),
            ).fetchall(),
            [(reason, events_topic, payload) for reason, payload in bad.items()],
        )
        assert rows == [(reason, events_topic, payload) for reason, payload in bad.items()]
        assert stored_seqs(conn, agent.instrument_id) == [1]


def test_stop_commits_and_acks_what_is_in_hand(
    settings: CollectorSettings, agent: Agent, conn: psycopg.Connection[TupleRow]
) -> None:
    slow = settings.model_copy(update={"batch_ms": 60_000})
    with running(slow):
        agent.send_events(range(1, 11))
        time.sleep(0.5)  # delivered to the collector, waiting for its batch to fill
        assert stored_seqs(conn, agent.instrument_id) == []
    assert stored_seqs(conn, agent.instrument_id) == list(range(1, 11))
    assert agent.acked_seqs(set(range(1, 11))) == set(range(1, 11))


def test_a_database_outage_delays_but_loses_nothing(
    settings: CollectorSettings, agent: Agent, mqtt_database: str, admin_dsn: str
) -> None:
    """The database refuses connections mid-run: nothing is acked until it is back.

    Meanwhile the backlog waits in the broker: the collector holds at most the
    two batches its receive maximum lets the broker send.
    """
    small = settings.model_copy(update={"batch_max": 20})
    name = str(conninfo_to_dict(mqtt_database)["dbname"])
    database = sql.Identifier(name)
    with running(small) as collector, psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            agent.send_events(range(1, 201))
            assert agent.acked_seqs({1}, timeout=1.5) == set(), "acked without a database"
            in_hand = in_hand_now(collector)
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
        assert agent.acked_seqs(set(range(1, 201)), timeout=30) == set(range(1, 201))
        assert eventually(lambda: in_hand_now(collector), 0.0) == 0
    assert 0 < in_hand <= small.receive_maximum == 40
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 201))


def in_hand_now(collector: Collector) -> float:
    value = collector.metrics.registry.get_sample_value("instrumetry_collector_messages_in_hand")
    assert value is not None, "no messages-in-hand gauge"
    return value


def collector_process(
    settings: CollectorSettings, *, new_session: bool = False
) -> subprocess.Popen[str]:
    """``instrumetry collector run`` with ``settings`` and a minute-long batch, once it stores."""
    script = Path(sys.executable).with_name("instrumetry")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTRUMETRY_")} | {
        "INSTRUMETRY_STATE_DIR": str(Path("/nonexistent")),
        "INSTRUMETRY_DATABASE_URL": settings.database_url,
        "INSTRUMETRY_MQTT_URL": settings.mqtt_url,
        "INSTRUMETRY_CLIENT_ID": settings.client_id,
        "INSTRUMETRY_SHARE_GROUP": settings.share_group,
        "INSTRUMETRY_BATCH_MS": "60000",
        "INSTRUMETRY_METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [str(script), "collector", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    started = process.stdout.readline()
    if "storing messages" not in started:
        process.kill()
        pytest.fail(f"the collector did not start: {process.communicate(timeout=10)}")
    return process


def test_ctrl_c_in_a_terminal_stops_the_collector_after_its_last_commit_and_acks(
    settings: CollectorSettings, agent: Agent, mqtt_database: str
) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the receiving child outlives the
    signal until the collector has acked its last batch through it."""
    process = collector_process(settings, new_session=True)
    try:
        agent.send_events(range(1, 11))
        time.sleep(0.5)  # delivered to the collector, waiting for its batch to fill
        os.killpg(process.pid, signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, errors
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 11))
    assert agent.acked_seqs(set(range(1, 11)), timeout=5) == set(range(1, 11))


def test_messages_of_a_killed_collector_are_redelivered(
    settings: CollectorSettings, agent: Agent, mqtt_database: str
) -> None:
    """kill -9 with messages received but not committed, then restart: nothing is lost."""
    process = collector_process(settings)
    try:
        agent.send_events(range(1, 11))
        time.sleep(0.5)  # delivered to the collector, waiting for its batch to fill
        children = psutil.Process(process.pid).children()
        assert any("collector.receiver" in child.cmdline() for child in children)
    finally:
        process.kill()
        process.communicate(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "a child of the killed collector lives on"
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == []
    agent.send_events(range(11, 16))  # sent while no collector runs: queued in its session

    with running(settings):
        assert agent.acked_seqs(set(range(1, 16))) == set(range(1, 16))
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 16))


def test_a_collector_whose_receiving_process_dies_stores_what_it_has_then_fails(
    settings: CollectorSettings, agent: Agent, mqtt_database: str
) -> None:
    """Without its receiving child the collector can neither receive nor ack: it ends, saying
    why, and the broker keeps what it did not ack for the next start."""
    slow = settings.model_copy(update={"batch_ms": 60_000})
    collector = Collector(slow)
    collector.start()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            collector.serve()
        except ServiceError as error:
            failure.append(error)

    worker = threading.Thread(target=serve, name="collector-under-test")
    worker.start()
    try:
        agent.send_events(range(1, 6))
        time.sleep(0.5)  # delivered to the collector, waiting for its batch to fill
        (child,) = [c for c in psutil.Process().children() if "collector.receiver" in c.cmdline()]
        child.kill()
        worker.join(timeout=15)
        assert not worker.is_alive(), "the collector did not stop"
    finally:
        collector.stop()
        worker.join(timeout=15)
    assert len(failure) == 1
    assert "receiving process ended (exit code -9)" in str(failure[0])
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == [1, 2, 3, 4, 5]  # what it had
    with running(settings):
        assert agent.acked_seqs(set(range(1, 6))) == set(range(1, 6))  # redelivered, acked


def test_a_broker_restart_loses_nothing(
    settings: CollectorSettings, agent: Agent, mqtt_database: str, stack: DevStack
) -> None:
    """The broker stops while the collector holds un-acked messages, then comes back."""
    slow = settings.model_copy(update={"batch_ms": 1_000})
    with running(slow):
        agent.send_events(range(1, 6))
        try:
            stack.stop_mosquitto()  # the collector commits its batch with no broker to ack to
            time.sleep(1.5)
        finally:
            stack.start_mosquitto()
        # Mosquitto 2.0.11 restores the session but not its shared subscription, so
        # what is published before the collector subscribes again is dropped: only
        # the agent's outbox, resending until acked, makes that loss-free.
        assert agent.subscribed.wait(timeout=15), "the agent did not reconnect"
        assert agent.deliver(range(1, 11)) == set(range(1, 11))
    with psycopg.connect(mqtt_database) as conn:
        assert stored_seqs(conn, agent.instrument_id) == list(range(1, 11))
