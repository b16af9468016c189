"""`sim fleet` with every fault through the real system, then `sim verify` against the truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import cast

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt import subscribe
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import MQTTProtocolVersion

from agents.config import BrokerConfig
from api import auth
from collector import db
from instrumetry.cli.demo import _child
from instrumetry.cli.fleet import _keep_pace
from instrumetry.cli.fleet_agent import FleetAgent
from instrumetry.cli.fleet_link import SharedLink
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import wire
from instrumetry.domain.classify import Classifier
from instrumetry.domain.errors import ServiceError
from instrumetry.domain.registry import Instrument
from instrumetry.domain.topics import Kind, topic
from sim.fleet import Pace, run_fleet
from sim.scenario import build_fleet
from sim.scenario_file import load_scenario
from tests.test_sim_fleet import Recorder

SCENARIO = """
name = "faults"
seed = 5
first_day = 2026-09-21
days = 2
heartbeat_s = 1800
[[institutions]]
id = "u"
name = "大学"
[fleet]
instruments = 7
broken_share = 0
[[faults]]
kind = "meter_unreachable"
at = 2026-09-21T10:00:00+08:00
hours = 6
instruments = ["nmr-0001", "sem-0002"]
[[faults]]
kind = "agent_offline"
at = 2026-09-21T09:00:00+08:00
hours = 20
instruments = ["lcms-0003"]
[[faults]]
kind = "agent_crash"
at = 2026-09-22T11:00:00+08:00
hours = 0.02
instruments = ["xrd-0004", "nmr-0001"]
[[faults]]
kind = "clock_skew"
skew_s = 5
instruments = ["pcr-0006"]
[[faults]]
kind = "broker_restart"
at = 2026-09-22T03:00:00+08:00
[orders]
inflated = 1
phantom = 0
double_billed = 1
"""


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instrumetry", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _fleet_then_verify(
    tmp_path: Path,
    stack: DevStack,
    unused_ports: Callable[[int], list[int]],
    scenario: list[str],
) -> tuple[str, str]:
    """Run `sim fleet` with ``scenario`` options, then `sim verify`.

    Returns verify's output and the database's URL.
    """
    info = stack.up()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "INSTRUMETRY_DATABASE_URL": info.database_url,
        "INSTRUMETRY_MQTT_URL": info.mqtt_url,
        "INSTRUMETRY_STATE_DIR": str(stack.state_dir),
        "INSTRUMETRY_METRICS_PORT": "0",  # no fixed port: other collectors may run here
    }
    assert _cli("db", "migrate", env=env).returncode == 0
    logs = tmp_path / "logs"
    logs.mkdir()
    truth = tmp_path / "truth"
    with ExitStack() as children:
        children.enter_context(
            _child(["collector", "run"], env, logs / "collector.log", ready="storing messages")
        )
        (api_port,) = unused_ports(1)  # late: the collector's own connections take ports too
        children.enter_context(
            _child(
                ["api", "run", "--port", str(api_port)],
                env,
                logs / "api.log",
                ready="Application startup complete",
            )
        )
        fleet = _cli(
            "sim",
            "fleet",
            *scenario,
            "--truth",
            str(truth),
            "--work-dir",
            str(tmp_path / "outboxes"),
            env=env,
        )
        assert fleet.returncode == 0, fleet.stdout + fleet.stderr
        assert "all acknowledged" in fleet.stdout
        with db.connect(info.database_url) as conn:
            _, token = auth.create_token(conn, "verify", auth.Role.ADMIN, None)
        verify = _cli(
            "sim",
            "verify",
            "--truth",
            str(truth),
            "--api-url",
            f"http://127.0.0.1:{api_port}",
            "--token",
            token,
            env=env,
        )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "all targets met" in verify.stdout
    return verify.stdout, info.database_url


def test_fleet_with_every_fault_meets_the_targets(
    tmp_path: Path, make_stack: Callable[[], DevStack], unused_ports: Callable[[int], list[int]]
) -> None:
    scenario = tmp_path / "faults.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    stack = make_stack()  # private: the scenario restarts its broker
    out, database_url = _fleet_then_verify(
        tmp_path, stack, unused_ports, ["--scenario", str(scenario), "--workers", "2"]
    )
    broker_log = (stack.state_dir / "mosquitto" / "mosquitto.log").read_text(encoding="utf-8")
    assert broker_log.count(" running") == 2  # started, restarted once mid-run
    # Two meters were unreachable for 6 of 48 hours (12/336 of the time unknown), and two
    # agents crashed: from their last heartbeat, half an hour before, to their restart.
    assert "expected from the faults 96.257%" in out
    assert "measured 96.25" in out
    # Two worker processes stored exactly what one process driving every agent decides.
    fleet = build_fleet(load_scenario(scenario).spec)
    recorders = {
        vi.instrument.id: Recorder(Classifier(vi.instrument.thresholds)) for vi in fleet.instruments
    }
    run_fleet(fleet, recorders, pace=Pace(60_000, 1_800_000), restart_broker=lambda: None)
    expected = sorted(
        (instrument, t.at_ms, t.from_state.value, t.to_state.value, _power(t.power_w))
        for instrument, recorder in recorders.items()
        for t in recorder.transitions
    )
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT instrument_id, (extract(epoch FROM device_time) * 1000)::bigint, "
            "from_state::text, to_state::text, power_w FROM events"
        ).fetchall()
    assert expected
    assert sorted((i, t, a, b, _power(p)) for i, t, a, b, p in rows) == expected


def _power(watts: float | None) -> float | None:
    return None if watts is None else round(watts, 3)


def test_ctrl_c_stops_a_fleet_and_its_workers_while_it_waits_for_acks(
    tmp_path: Path, stack: DevStack
) -> None:
    """No collector runs, so the fleet waits for acks until Ctrl-C: exit 130, no worker left."""
    scenario = tmp_path / "faults.toml"
    no_restart = '[[faults]]\nkind = "broker_restart"\nat = 2026-09-22T03:00:00+08:00\n'
    assert no_restart in SCENARIO
    scenario.write_text(SCENARIO.replace(no_restart, ""))
    info = stack.up()
    env = {
        **os.environ,
        "INSTRUMETRY_DATABASE_URL": info.database_url,
        "INSTRUMETRY_MQTT_URL": info.mqtt_url,
    }
    assert _cli("db", "migrate", env=env).returncode == 0
    outboxes = tmp_path / "outboxes"
    options = ["--scenario", str(scenario), "--workers", "2", "--truth", str(tmp_path / "truth")]
    fleet = subprocess.Popen(
        [sys.executable, "-m", "instrumetry", "sim", "fleet", *options, "--work-dir", outboxes],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(outboxes.glob("*/outbox.sqlite3"))) < 7:  # every agent has started
            assert fleet.poll() is None, fleet.communicate()[1]
            assert time.monotonic() < deadline, "the fleet did not start its agents"
            time.sleep(0.2)
        children = Path(f"/proc/{fleet.pid}/task/{fleet.pid}/children").read_text().split()
        assert len(children) == 2
        time.sleep(1.0)
        fleet.send_signal(signal.SIGINT)
        _, stderr = fleet.communicate(timeout=30)
    finally:
        fleet.kill()
    assert fleet.returncode == 130, stderr
    assert "stopped: the fleet was stopped before every event was acknowledged" in stderr
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


@pytest.mark.long
def test_city_year_scenario_for_a_month_meets_the_targets(
    tmp_path: Path, make_stack: Callable[[], DevStack], unused_ports: Callable[[int], list[int]]
) -> None:
    """The bundled city scenario, 300 instruments for 30 days, every kind of fault."""
    options = ["--scenario", "city-year", "--instruments", "300", "--days", "30"]
    out, _ = _fleet_then_verify(tmp_path, make_stack(), unused_ports, options)
    assert "300/300" in out


def test_verify_names_a_missing_truth_folder(tmp_path: Path) -> None:
    result = _cli("sim", "verify", "--truth", str(tmp_path / "none"), env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.startswith("instrumetry: error: ")
    assert "fleet.json: cannot read the truth" in result.stderr


@pytest.mark.parametrize("scenario", ["no-such-scenario", "demo.tomll"])
def test_fleet_names_a_missing_scenario(scenario: str) -> None:
    result = _cli(
        "sim",
        "fleet",
        "--scenario",
        scenario,
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/none",
        "--mqtt-url",
        "mqtt://127.0.0.1:1",
        env=dict(os.environ),
    )
    assert result.returncode == 2
    assert f"{scenario}: cannot read the scenario" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_crashed_fleet_agent_ignores_pumps_and_resends_after_restart(
    tmp_path: Path, mqtt_url: str
) -> None:
    broker = BrokerConfig(url=mqtt_url)
    link = SharedLink(broker)
    link.start()
    instrument = Instrument("crash-test-1", "u", "x")
    agent = FleetAgent(
        instrument, Ed25519PrivateKey.generate(), broker, link, tmp_path, heartbeat_s=60, start_ms=0
    )
    try:
        agent.start()
        agent.on_readings([(1_000, 0.0)])  # first reading: unknown -> off, seq 1
        agent.on_readings([(61_000, 20.0)])
        agent.on_readings([(121_000, 20.0)])  # off -> standby once the dwell is over, seq 2
        boot = agent.outbox.boot
        # An ack for seq 1 arrives (as from the collector) and waits in the publisher ...
        ack = wire.Ack(v=wire.SCHEMA_VERSION, instrument=instrument.id, seqs=[1])
        link.client.publish(topic(Kind.ACKS, instrument.id), wire.encode(ack), qos=1)
        time.sleep(1.0)
        agent.crash()  # ... when the agent dies: that ack is lost with the process.
        assert agent.pump() is False  # its outbox is closed: a pump must not touch it
        # Its Last Will, published by the link as the broker would: the dead boot is offline.
        status = _retained_status(broker, instrument.id)
        assert (status.status, status.boot, status.t) == ("offline", boot, 0)  # simulated time
        agent.restart()
        assert agent.outbox.boot != boot
        assert agent.events() == 2
        assert agent.pending() == 2  # both wait for the collector again
        # The new boot says it is online at the agent's clock: the latest reading's time.
        deadline = time.monotonic() + 10
        while (status := _retained_status(broker, instrument.id)).boot == boot:
            assert time.monotonic() < deadline, "the restarted agent never said it is online"
            time.sleep(0.1)
        assert (status.status, status.boot, status.t) == ("online", agent.outbox.boot, 121_000)
    finally:
        agent.close()
        link.close()


def _retained_status(broker: BrokerConfig, instrument: str) -> wire.Status:
    address = broker.address()
    retained = subscribe.simple(  # type: ignore[no-untyped-call]
        topic(Kind.STATUS, instrument),
        qos=1,
        hostname=address.host,
        port=address.port,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    assert isinstance(retained, MQTTMessage)
    return wire.decode(wire.Status, bytes(retained.payload))


class _Lagging:
    """A stand-in fleet agent whose events the collector acks one per pump."""

    def __init__(self, pending: int, *, online: bool = True, acked: int = 1) -> None:
        self.left, self.online, self.alive, self.pumps = pending, online, True, 0
        self.acked = acked

    def pump(self) -> bool:
        self.pumps += 1
        self.left = max(0, self.left - self.acked)
        return False

    def pending(self) -> int:
        return self.left


def test_the_fleet_waits_while_the_collector_lags_behind() -> None:
    lagging, cut_off = _Lagging(5), _Lagging(100, online=False)
    agents = cast(list[FleetAgent], [lagging, cut_off])
    _keep_pace(agents, backlog=2)
    assert lagging.pending() == 2  # waited until the connected agents were back within bounds
    assert lagging.pumps == 3
    _keep_pace(agents, backlog=2)
    assert lagging.pumps == 4  # within bounds: one pump, no wait


def test_the_fleet_stops_waiting_for_a_collector_that_acks_nothing() -> None:
    stalled = cast(list[FleetAgent], [_Lagging(5, acked=0)])
    started = time.monotonic()
    with pytest.raises(ServiceError, match="5 events were not acknowledged for 1 s: is the"):
        _keep_pace(stalled, backlog=2, stall_s=1.0)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("option", ["--truth", "--work-dir"])
def test_fleet_names_a_folder_it_cannot_make(tmp_path: Path, option: str) -> None:
    """As in a container whose working directory belongs to another user."""
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    folder = tmp_path / "file" / "sub"
    paths = {"--truth": tmp_path / "truth", "--work-dir": tmp_path / "fleet"} | {option: folder}
    result = _cli(
        "sim", "fleet", "--instruments", "10", "--days", "1",
        "--truth", str(paths["--truth"]), "--work-dir", str(paths["--work-dir"]),
        "--database-url", "postgresql://nobody@127.0.0.1:1/none",
        "--mqtt-url", "mqtt://127.0.0.1:1",
        env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"instrumetry: error: {folder}: cannot "), result.stderr
    assert result.stderr.endswith(": Not a directory\n"), result.stderr
