"""The agent end to end: simulated meter -> agent -> real Mosquitto -> a watching client.

Covers what a collector relies on: signed, chained events arriving in order;
an event leaving the outbox only on the collector's ack; resending after a
restart; the in-flight window; and the retained status, ``online`` while
connected and ``offline`` after a clean stop or (as the Last Will) a kill -9.
"""

from __future__ import annotations

import base64
import itertools
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agents.config import BrokerConfig, load_config, render_config
from agents.meter import MeterReader
from agents.outbox import Outbox
from agents.publisher import Publisher
from agents.runner import AgentCore
from instrumetry.devstack.mosquitto import find_mosquitto
from instrumetry.domain import chain, wire
from instrumetry.domain.classify import Classifier, Thresholds, Transition
from instrumetry.domain.registers import register_map
from instrumetry.domain.states import State
from instrumetry.domain.topics import Kind, topic
from sim.meters import Schedule, ScheduledInstrument, Segment, VirtualMeter
from sim.modbus_server import MeterServerThread

INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")
START_S = 1_767_225_600.0  # 2026-01-01 00:00 UTC, the virtual clock's origin


class Watcher:
    """A test client subscribed to one instrument's events, heartbeats and status."""

    def __init__(self, mqtt_url: str, instrument: str) -> None:
        url = urlsplit(mqtt_url)
        self.instrument = instrument
        self._received: list[tuple[Kind, bytes]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(url.hostname or "", url.port or 1883)
        self._client.loop_start()
        kinds = (Kind.EVENTS, Kind.HEARTBEATS, Kind.STATUS)
        self._client.subscribe([(topic(kind, instrument), 1) for kind in kinds])
        assert subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        kind = Kind(message.topic.split("/")[2])
        with self._lock:
            self._received.append((kind, bytes(message.payload)))

    def events(self) -> list[wire.Event]:
        return [wire.decode(wire.Event, p) for p in self._payloads(Kind.EVENTS)]

    def heartbeats(self) -> list[wire.Heartbeat]:
        return [wire.decode(wire.Heartbeat, p) for p in self._payloads(Kind.HEARTBEATS)]

    def statuses(self) -> list[wire.Status]:
        return [wire.decode(wire.Status, p) for p in self._payloads(Kind.STATUS)]

    def _payloads(self, kind: Kind) -> list[bytes]:
        with self._lock:
            return [payload for k, payload in self._received if k is kind]

    def ack(self, seqs: list[int]) -> None:
        ack = wire.Ack(v=wire.SCHEMA_VERSION, instrument=self.instrument, seqs=seqs)
        self._client.publish(topic(Kind.ACKS, self.instrument), wire.encode(ack), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float = 10.0,
    *,
    pump: Callable[..., object] | None = None,
) -> None:
    """Poll ``condition`` (pumping the publisher, as the agent's loop does) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if pump is None:
            time.sleep(0.02)
        else:
            pump(wait_s=0.02)


def verify_chain(events: list[wire.Event], public_key: Ed25519PublicKey) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev == wire.GENESIS
    for earlier, later in itertools.pairwise(events):
        assert later.prev == wire.event_hash(earlier)
    for event in events:
        public_key.verify(wire.signature_bytes(event), wire.canonical(event))


class Clock:
    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def instrument() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def watcher(mqtt_url: str, instrument: str) -> Iterator[Watcher]:
    watching = Watcher(mqtt_url, instrument)
    yield watching
    watching.close()


def test_the_agent_core_sends_signed_events_in_order_and_forgets_them_on_ack(
    mqtt_url: str, instrument: str, watcher: Watcher, tmp_path: Path
) -> None:
    clock = Clock()
    schedule = Schedule([Segment(10, 0.0), Segment(10, 40.0), Segment(10, 900.0)])
    sim_meter = VirtualMeter(ScheduledInstrument(schedule, start=START_S).power_w, seed=7)
    key = Ed25519PrivateKey.generate()
    thresholds = Thresholds(min_dwell_s=2, unknown_after_s=5)

    with MeterServerThread({1: sim_meter}, clock=clock) as port, Outbox(tmp_path) as outbox:
        publisher = Publisher(BrokerConfig(url=mqtt_url), instrument=instrument, outbox=outbox)
        core = AgentCore(
            instrument=instrument,
            outbox=outbox,
            classifier=Classifier(thresholds),
            signer=key.sign,
            outlet=publisher,
            heartbeat_interval_s=10,
        )
        publisher.start()
        wait_until(lambda: publisher.connected, pump=publisher.pump)
        meter = MeterReader.tcp("127.0.0.1", port, 1, register_map("sdm120"), timeout_s=0.5)
        for second in range(42):  # one poll per virtual second
            clock.now = START_S + second
            if second == 35:
                sim_meter.fail = "exception"
            core.on_reading(round(clock.now * 1000), meter.read_power())
            publisher.pump()
        meter.close()

        wait_until(lambda: len(watcher.events()) >= 5, pump=publisher.pump)
        events = watcher.events()
        verify_chain(events, key.public_key())
        assert [(e.from_state, e.to_state) for e in events] == [
            (State.UNKNOWN, State.OFF),
            (State.OFF, State.STANDBY),
            (State.STANDBY, State.RUNNING),
            (State.RUNNING, State.OFF),
            (State.OFF, State.UNKNOWN),  # the meter failed: unknown, never off
        ]
        assert [round(e.t / 1000 - START_S) for e in events] == [0, 10, 20, 30, 35]
        assert {e.boot for e in events} == {outbox.boot}
        assert outbox.count() == 5  # sent is not enough: only the collector's ack counts

        heartbeats = watcher.heartbeats()
        assert [round(h.t / 1000 - START_S) for h in heartbeats] == [10, 20, 30, 40]
        running = heartbeats[2]  # readings of seconds 20-29
        assert (running.state, running.samples, running.last_seq) == (State.RUNNING, 10, 3)
        low, mean, high = running.power_min_w, running.power_mean_w, running.power_max_w
        assert low is not None and mean is not None and high is not None
        assert 800 < low <= mean <= high < 1000
        assert heartbeats[3].samples == 5  # seconds 35-39 had no reading

        watcher.ack([1, 2, 3, 4, 5])
        wait_until(lambda: outbox.count() == 0, pump=publisher.pump)

        assert watcher.statuses()[0].status == "online"
        publisher.close()
        wait_until(lambda: watcher.statuses()[-1].status == "offline")
        assert {s.boot for s in watcher.statuses()} == {outbox.boot}


def fill(outbox: Outbox, count: int, key: Ed25519PrivateKey, instrument: str) -> None:
    head = outbox.head()
    for n in range(count):
        transition = Transition(n * 1000, State.OFF, State.STANDBY, 10.0)
        event, head = chain.append(
            head, instrument=instrument, boot=outbox.boot, transition=transition, signer=key.sign
        )
        outbox.add(event)


def test_at_most_max_inflight_events_await_an_ack_and_restarts_resend(
    mqtt_url: str, instrument: str, watcher: Watcher, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    broker = BrokerConfig(url=mqtt_url, max_inflight=2)
    with Outbox(tmp_path) as outbox:
        fill(outbox, 5, key, instrument)
        publisher = Publisher(broker, instrument=instrument, outbox=outbox)
        publisher.start()

        def seen() -> list[int]:
            return [e.seq for e in watcher.events()]

        wait_until(lambda: seen() == [1, 2], pump=publisher.pump)
        publisher.pump(wait_s=0.5)
        assert seen() == [1, 2]  # the window is full
        watcher.ack([1])
        wait_until(lambda: seen() == [1, 2, 3], pump=publisher.pump)
        publisher.close()  # 2 and 3 are still pending

    with Outbox(tmp_path) as outbox:  # the agent restarts
        publisher = Publisher(broker, instrument=instrument, outbox=outbox)
        publisher.start()
        wait_until(lambda: seen()[3:] == [2, 3], pump=publisher.pump)
        watcher.ack([2, 3])
        wait_until(lambda: seen()[5:] == [4, 5], pump=publisher.pump)
        watcher.ack([4, 5])
        wait_until(lambda: outbox.count() == 0, pump=publisher.pump)
        publisher.close()


def test_a_backlog_is_replayed_in_order_no_faster_than_the_rate_limit(
    mqtt_url: str, instrument: str, watcher: Watcher, tmp_path: Path
) -> None:
    broker = BrokerConfig(url=mqtt_url, max_inflight=5, replay_per_s=20)
    acked: set[int] = set()

    def ack_all_seen() -> bool:
        fresh = {event.seq for event in watcher.events()} - acked
        if fresh:
            watcher.ack(sorted(fresh))
            acked.update(fresh)
        return outbox.count() == 0

    with Outbox(tmp_path) as outbox:
        fill(outbox, 25, Ed25519PrivateKey.generate(), instrument)
        publisher = Publisher(broker, instrument=instrument, outbox=outbox)
        started = time.monotonic()
        publisher.start()
        wait_until(ack_all_seen, pump=publisher.pump)
        elapsed = time.monotonic() - started
        publisher.close()

    assert [event.seq for event in watcher.events()] == list(range(1, 26))
    assert elapsed >= (25 - 5) / 20 * 0.9  # a first window at once, then 20 per second


def test_an_event_whose_ack_is_late_is_sent_again(
    mqtt_url: str, instrument: str, watcher: Watcher, tmp_path: Path
) -> None:
    with Outbox(tmp_path) as outbox:
        fill(outbox, 1, Ed25519PrivateKey.generate(), instrument)
        broker = BrokerConfig(url=mqtt_url)
        publisher = Publisher(broker, instrument=instrument, outbox=outbox, ack_timeout_s=0.3)
        publisher.start()
        wait_until(lambda: len(watcher.events()) >= 2, pump=publisher.pump)
        assert [event.seq for event in watcher.events()][:2] == [1, 1]
        publisher.close()


def test_an_unreachable_broker_is_named_in_the_log_once_per_outage(
    instrument: str,
    tmp_path: Path,
    unused_ports: Callable[[int], list[int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The agent runs on without its broker (events wait in the outbox) but says why, once."""
    (port,) = unused_ports(1)
    caplog.set_level(logging.INFO, logger="agents.publisher")

    def told() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if "cannot reach the broker" in r.getMessage()
        ]

    with Outbox(tmp_path) as outbox:
        publisher = Publisher(
            BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), instrument=instrument, outbox=outbox
        )
        publisher.start()
        try:
            wait_until(lambda: len(told()) == 1)
            time.sleep(3.5)  # paho retries after 1 s and after 2 s more: no new warning
            (warning,) = told()
            assert f"at 127.0.0.1:{port}: " in warning
            assert "Connection refused" in warning
            broker = subprocess.Popen(
                [find_mosquitto(), "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(lambda: publisher.connected, timeout_s=30, pump=publisher.pump)
            finally:
                broker.terminate()
                broker.wait()
            wait_until(lambda: len(told()) == 2, timeout_s=30)  # a new outage is told again
        finally:
            publisher.close()


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [INSTRUMETRY, "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_the_agent_command_goes_offline_by_last_will_on_kill_9_and_cleanly_on_sigterm(
    mqtt_url: str, instrument: str, watcher: Watcher, tmp_path: Path
) -> None:
    schedule = Schedule([Segment(1.5, 0.0), Segment(1.5, 900.0)])
    sim_meter = VirtualMeter(ScheduledInstrument(schedule, start=time.time()).power_w, seed=3)
    with MeterServerThread({1: sim_meter}) as port:
        config_path = tmp_path / "agent.toml"
        enrolled = subprocess.run(
            [
                INSTRUMETRY,
                "agent",
                "enroll",
                "--instrument",
                instrument,
                "--broker",
                mqtt_url,
                "--meter-host",
                "127.0.0.1",
                "--meter-port",
                str(port),
                "--out",
                str(config_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        public_key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(enrolled.stdout.splitlines()[-1])
        )
        config = load_config(config_path)
        fast = msgspec.structs.replace(
            config,
            meter=msgspec.structs.replace(config.meter, poll_interval_s=0.2),
            thresholds=msgspec.structs.replace(config.thresholds, min_dwell_s=0.4),
        )
        config_path.write_text(render_config(fast), encoding="utf-8")

        checked = subprocess.run(
            [INSTRUMETRY, "agent", "check", "--config", str(config_path)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
        assert " W\n" in checked.stdout
        assert "connected" in checked.stdout

        def online_boots() -> list[str]:
            return [s.boot for s in watcher.statuses() if s.status == "online"]

        def offline_boots() -> list[str]:
            return [s.boot for s in watcher.statuses() if s.status == "offline"]

        killed = start_agent(config_path)
        wait_until(lambda: len(online_boots()) == 1 and len(watcher.events()) >= 2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        wait_until(lambda: offline_boots() == online_boots(), timeout_s=5)  # the Last Will

        stopped = start_agent(config_path)
        wait_until(lambda: len(online_boots()) == 2)
        second_boot = online_boots()[1]
        wait_until(lambda: any(e.boot == second_boot for e in watcher.events()))
        stopped.send_signal(signal.SIGTERM)
        _, stderr = stopped.communicate(timeout=10)
        assert stopped.returncode == 0, stderr.decode()
        assert offline_boots()[-1] == second_boot

    # Both runs' events, including any the kill -9 caught unsent, form one chain.
    by_seq = {event.seq: event for event in watcher.events()}
    verify_chain([by_seq[seq] for seq in sorted(by_seq)], public_key)
    assert len({event.boot for event in by_seq.values()}) == 2
