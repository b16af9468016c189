"""Per-agent broker logins and the topic ACL, against a real Mosquitto.

An agent's login lets it speak only for its own instrument and hear only its
own acks; a collector's login reads everyone's messages through the shared
subscription and writes everyone's acks; a simulator's login speaks for every
instrument and hears every instrument's acks; nobody gets in without a login.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from typer.testing import CliRunner

from agents.config import BrokerConfig, load_config
from agents.outbox import Outbox
from agents.publisher import Publisher
from collector.service import Collector
from collector.settings import load_settings, parse_mqtt_url
from instrumetry.cli.demo import _child
from instrumetry.cli.main import app
from instrumetry.devstack.broker_auth import AuthFiles
from instrumetry.devstack.mosquitto import Mosquitto
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import broker_auth, topics
from instrumetry.domain.broker_auth import Account
from instrumetry.domain.errors import ConfigError, ServiceError
from instrumetry.domain.topics import Kind
from tests.conftest import require_services
from tests.test_sim_cli import _cli


class Client:
    """A logged-in MQTT v5 client that records what it receives."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.received: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.connack: queue.SimpleQueue[ReasonCode] = queue.SimpleQueue()
        self.suback: queue.SimpleQueue[list[ReasonCode]] = queue.SimpleQueue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, code, _p: self.connack.put(code)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.suback.put(codes)
        self.client.on_message = lambda _c, _u, m: self.received.put((m.topic, bytes(m.payload)))
        self.client.reconnect_delay_set(60, 60)  # a refused login must not retry during the test
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.code = self.connack.get(timeout=10)

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        self.client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        return self.suback.get(timeout=10)

    def publish(self, kind: Kind, instrument: str, payload: bytes) -> None:
        self.client.publish(topics.topic(kind, instrument), payload, qos=1).wait_for_publish(10)

    def until(self, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including ``payload``."""
        seen: list[tuple[str, bytes]] = []
        while not seen or seen[-1][1] != payload:
            seen.append(self.received.get(timeout=10))
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def files(tmp_path: Path) -> AuthFiles:
    return AuthFiles(tmp_path / "passwd", tmp_path / "acl")


@pytest.fixture
def broker(
    tmp_path: Path, files: AuthFiles, unused_ports: Callable[[int], list[int]]
) -> Iterator[Mosquitto]:
    require_services()
    files.add_account(Account.COLLECTOR, "collector", "collector-secret")
    (port,) = unused_ports(1)
    mosquitto = Mosquitto(tmp_path / "broker", port, auth=files)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


@pytest.fixture
def logins_stack(tmp_path: Path, unused_ports: Callable[[int], list[int]]) -> Iterator[DevStack]:
    """A dev stack whose broker requires logins (not started: each test starts it)."""
    require_services()
    pg_port, mqtt_port = unused_ports(2)
    stack = DevStack(tmp_path / "state", pg_port, mqtt_port, broker_auth=True)
    try:
        yield stack
    finally:
        stack.purge()


@pytest.fixture
def connect(broker: Mosquitto) -> Iterator[Callable[[str | None, str | None], Client]]:
    made: list[Client] = []

    def make(username: str | None, password: str | None) -> Client:
        made.append(Client(broker.port, username, password))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_an_agent_speaks_only_for_its_own_instrument(
    files: AuthFiles, broker: Mosquitto, connect: Callable[[str | None, str | None], Client]
) -> None:
    nmr1 = files.add_agent("nmr-01")
    files.add_agent("nmr-02")
    broker.reload()
    collector = connect("collector", "collector-secret")
    granted = collector.subscribe(
        *(f"$share/collectors/{topics.subscription(kind)}" for kind in (Kind.EVENTS, Kind.STATUS))
    )
    assert [code.value for code in granted] == [1, 1]
    agent = connect("nmr-01", nmr1)

    agent.publish(Kind.EVENTS, "nmr-01", b"own")
    agent.publish(Kind.EVENTS, "nmr-02", b"spoofed event")
    agent.publish(Kind.STATUS, "nmr-02", b"spoofed status")
    agent.publish(Kind.STATUS, "nmr-01", b"last")

    assert collector.until(b"last") == [
        ("instrumetry/v1/events/nmr-01", b"own"),
        ("instrumetry/v1/status/nmr-01", b"last"),
    ]


def test_an_agent_hears_only_its_own_acks(
    files: AuthFiles, broker: Mosquitto, connect: Callable[[str | None, str | None], Client]
) -> None:
    passwords = {name: files.add_agent(name) for name in ("nmr-01", "nmr-02")}
    broker.reload()
    nmr1, nmr2 = (connect(name, password) for name, password in passwords.items())
    nmr1.subscribe(topics.topic(Kind.ACKS, "nmr-01"))
    nmr2.subscribe(topics.topic(Kind.ACKS, "nmr-01"), topics.topic(Kind.ACKS, "nmr-02"))
    collector = connect("collector", "collector-secret")

    collector.publish(Kind.ACKS, "nmr-01", b"ack for 1")
    collector.publish(Kind.ACKS, "nmr-02", b"ack for 2")
    nmr1.publish(Kind.ACKS, "nmr-02", b"forged ack")  # agents may not write acks at all
    collector.publish(Kind.ACKS, "nmr-02", b"last")

    assert nmr1.until(b"ack for 1") == [("instrumetry/v1/acks/nmr-01", b"ack for 1")]
    assert nmr2.until(b"last") == [
        ("instrumetry/v1/acks/nmr-02", b"ack for 2"),
        ("instrumetry/v1/acks/nmr-02", b"last"),
    ]


INSTRUMENTS = ("nmr-01", "nmr-02", "sem-03")


def test_a_simulator_speaks_for_every_instrument_and_hears_their_acks(
    files: AuthFiles, broker: Mosquitto, connect: Callable[[str | None, str | None], Client]
) -> None:
    """The fleet's shared connection, beside an agent and the collector whose rights stay theirs."""
    files.add_account(Account.SIMULATOR, "simulator", "simulator-secret")
    nmr1_password = files.add_agent("nmr-01")
    broker.reload()
    collector = connect("collector", "collector-secret")
    kinds = (Kind.EVENTS, Kind.HEARTBEATS, Kind.STATUS)
    collector.subscribe(*(f"$share/collectors/{topics.subscription(kind)}" for kind in kinds))
    simulator = connect("simulator", "simulator-secret")
    granted = simulator.subscribe(
        *(topics.topic(Kind.ACKS, name) for name in INSTRUMENTS),
        topics.subscription(Kind.EVENTS),  # granted, but the ACL lets no event through
    )
    assert [code.value for code in granted] == [1, 1, 1, 1]
    agent = connect("nmr-01", nmr1_password)
    agent.subscribe(topics.topic(Kind.ACKS, "nmr-01"))

    sent = [(kind, name) for name in INSTRUMENTS for kind in kinds]
    for kind, name in sent:
        simulator.publish(kind, name, f"{kind} of {name}".encode())
    agent.publish(Kind.EVENTS, "nmr-02", b"spoofed by an agent")
    collector.publish(Kind.EVENTS, "nmr-02", b"spoofed by the collector")
    simulator.publish(Kind.STATUS, "nmr-01", b"last")
    assert collector.until(b"last") == [
        *((topics.topic(kind, name), f"{kind} of {name}".encode()) for kind, name in sent),
        ("instrumetry/v1/status/nmr-01", b"last"),
    ]

    simulator.publish(Kind.ACKS, "nmr-01", b"forged ack")  # only collectors write acks
    for name in INSTRUMENTS:
        collector.publish(Kind.ACKS, name, f"ack for {name}".encode())
    assert simulator.until(b"ack for sem-03") == [
        (topics.topic(Kind.ACKS, name), f"ack for {name}".encode()) for name in INSTRUMENTS
    ]
    assert agent.until(b"ack for nmr-01") == [("instrumetry/v1/acks/nmr-01", b"ack for nmr-01")]


def test_an_agent_whose_login_may_not_speak_for_its_instrument_says_so(
    tmp_path: Path, files: AuthFiles, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A config naming another instrument than its login's: the broker refuses quietly."""
    login = BrokerConfig(
        url=f"mqtt://127.0.0.1:{broker.port}", username="nmr-01", password=files.add_agent("nmr-01")
    )
    broker.reload()
    with caplog.at_level(logging.INFO, logger="agents.publisher"), Outbox(tmp_path) as outbox:
        publisher = Publisher(login, instrument="xrd-02", outbox=outbox)
        publisher.start()
        deadline = time.monotonic() + 10
        while not any(r.levelno == logging.ERROR for r in caplog.records):
            assert time.monotonic() < deadline, caplog.text
            publisher.pump(0.05)
        publisher.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the broker refused a message (Not authorized): this login may not publish for "
        "instrument xrd-02 (broker ACL: instrumetry broker add-agent); events wait in the outbox"
    ]


def test_nobody_gets_in_without_a_valid_login(
    files: AuthFiles, broker: Mosquitto, connect: Callable[[str | None, str | None], Client]
) -> None:
    password = files.add_agent("nmr-01")
    broker.reload()
    assert connect(None, None).code.is_failure
    assert connect("nmr-01", "wrong").code.is_failure
    assert not connect("nmr-01", password).code.is_failure

    files.remove("nmr-01")
    broker.reload()
    # SIGHUP is asynchronous: try until the broker has read the files again.
    assert any(connect("nmr-01", password).code.is_failure for _ in range(50))


def test_login_files_keep_agents_and_accounts_apart(files: AuthFiles) -> None:
    files.add_agent("nmr-01")
    files.add_account(Account.COLLECTOR, "collector")
    files.add_account(Account.SIMULATOR, "simulator")
    with pytest.raises(ConfigError, match="'collector' is a collector account, not an instrument"):
        files.add_agent("collector")
    with pytest.raises(ConfigError, match="'simulator' is a simulator account, not an instrument"):
        files.add_agent("simulator")
    with pytest.raises(ConfigError, match="'nmr-01' is an agent's login; choose another collector"):
        files.add_account(Account.COLLECTOR, "nmr-01")
    with pytest.raises(ConfigError, match="'collector' is a collector account; choose another"):
        files.add_account(Account.SIMULATOR, "collector")
    with pytest.raises(ConfigError, match="broker username 'bad/name' is invalid"):
        files.add_agent("bad/name")
    passwd = files.password_file.read_text()
    assert broker_auth.usernames(passwd) == ["nmr-01", "collector", "simulator"]
    assert files.password_file.stat().st_mode & 0o077 == 0


def test_rewriting_the_acl_keeps_every_account_of_its_kind(files: AuthFiles) -> None:
    files.add_account(Account.COLLECTOR, "collector")
    files.add_account(Account.SIMULATOR, "simulator")
    files.add_account(Account.COLLECTOR, "collector-2")
    files.add_agent("nmr-01")
    files.add_account(Account.SIMULATOR, "simulator")  # a new password, the same section
    both = {"collector": Account.COLLECTOR, "collector-2": Account.COLLECTOR}
    simulator = {"simulator": Account.SIMULATOR}
    assert broker_auth.accounts(files.acl_file.read_text()) == both | simulator
    files.remove("simulator")
    assert broker_auth.accounts(files.acl_file.read_text()) == both
    assert files.acl_file.read_text() == broker_auth.render_acl(both)
    assert broker_auth.usernames(files.password_file.read_text()) == [
        "collector", "collector-2", "nmr-01"
    ]  # fmt: skip


def test_the_simulator_section_says_what_it_may_do_and_why_that_is_safe() -> None:
    acl = broker_auth.render_acl({"simulator": Account.SIMULATOR})
    section = acl[acl.index("# Simulator account 'simulator'") :]
    assert section.endswith(
        "user simulator\n"
        "topic write instrumetry/v1/events/+\n"
        "topic write instrumetry/v1/heartbeats/+\n"
        "topic write instrumetry/v1/status/+\n"
        "topic read instrumetry/v1/acks/+\n"
    )
    comment = " ".join(line.removeprefix("# ") for line in section.splitlines() if line[0] == "#")
    assert "speak for ANY instrument" in comment
    assert "Ed25519 signature against the key enrolled" in comment
    assert "only where a simulated fleet is wanted" in comment


@pytest.mark.parametrize(
    ("acl", "error"),
    [
        (
            "user someone\ntopic readwrite instrumetry/v1/#\n",
            "account 'someone': its topic rules are not those of any account kind "
            "(collector, simulator)",
        ),
        ("topic read instrumetry/v1/events/+\n", "line 1: a topic rule before any `user` line"),
        ("user bad/name\n", "broker username 'bad/name' is invalid"),
        ("user \n", "broker username '' is invalid"),
    ],
)
def test_an_acl_edited_by_hand_is_named_not_rewritten(
    files: AuthFiles, acl: str, error: str
) -> None:
    files.acl_file.write_text(acl)
    with pytest.raises(ConfigError) as raised:
        files.add_agent("nmr-01")
    assert str(raised.value).startswith(f"{files.acl_file}: {error}")
    assert files.acl_file.read_text() == acl
    assert not files.password_file.exists()


def test_password_entries_match_mosquittos_format() -> None:
    """The known answer of ``mosquitto_passwd -b`` for this salt and password."""
    entry = broker_auth.password_hash("s3cret", bytes.fromhex("49f59e8eebb2ebfaf7df1ebf"))
    assert entry == (
        "$7$101$SfWejuuy6/r33x6/$ScbVhNmIB+ayT090yMZKIEVHSsX86iv68NRt0sVkTX937x414gmg7ymKtB5"
        "lRdzU9EeHoIXArmDlWnXuSpR7WQ=="
    )


REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_broker_config_requires_logins_and_applies_the_acl() -> None:
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text("utf-8").splitlines()
    assert "allow_anonymous false" in conf
    assert "password_file /mosquitto/config/auth/passwd" in conf
    assert "acl_file /mosquitto/config/auth/acl" in conf
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    assert (
        "./deploy/mosquitto/auth:/mosquitto/config/auth:ro"
        in (compose["services"]["mosquitto"]["volumes"])
    )
    collector_url = compose["services"]["collector"]["environment"]["INSTRUMETRY_MQTT_URL"]
    assert collector_url.startswith("mqtt://collector:")
    shipped = (REPO / "deploy" / "mosquitto" / "auth" / "acl").read_text("utf-8")
    assert shipped == broker_auth.render_acl({"collector": Account.COLLECTOR})


def test_broker_commands_write_the_files_and_name_bad_input(tmp_path: Path) -> None:
    files = ["--password-file", str(tmp_path / "passwd"), "--acl-file", str(tmp_path / "acl")]
    runner = CliRunner()
    added = runner.invoke(app, ["broker", "add-agent", "nmr-01", *files])
    assert added.exit_code == 0, added.output
    assert "username = 'nmr-01'" in added.output
    assert broker_auth.usernames((tmp_path / "passwd").read_text()) == ["nmr-01"]
    for command in ("add-collector", "add-simulator"):
        added = runner.invoke(app, ["broker", command, *files])
        assert added.exit_code == 0, added.output
    assert "simulator login 'simulator', password '" in added.output
    assert broker_auth.accounts((tmp_path / "acl").read_text()) == {
        "collector": Account.COLLECTOR,
        "simulator": Account.SIMULATOR,
    }

    result = subprocess.run(
        [sys.executable, "-m", "instrumetry", "broker", "remove", "nmr-02", *files],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "INSTRUMETRY_STATE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr == "instrumetry: error: broker login 'nmr-02' does not exist\n"


def test_a_dev_stack_with_broker_auth_gives_the_collector_and_the_fleet_their_logins(
    logins_stack: DevStack,
) -> None:
    stack, mqtt_port = logins_stack, logins_stack.mqtt_port
    info = stack.up()
    address = parse_mqtt_url(info.mqtt_url)
    assert address.username == "collector"
    assert not Client(mqtt_port, address.username, address.password).code.is_failure
    assert Client(mqtt_port, None, None).code.is_failure
    fleet = parse_mqtt_url(info.fleet_mqtt_url)  # and `sim fleet` (and the demo) theirs
    assert fleet.username == "simulator"
    assert not Client(mqtt_port, fleet.username, fleet.password).code.is_failure
    env = info.env_file.read_text(encoding="utf-8")
    assert f"INSTRUMETRY_FLEET_MQTT_URL={info.fleet_mqtt_url}\n" in env
    again = stack.up()  # idempotent: the same logins
    assert (again.mqtt_url, again.fleet_mqtt_url) == (info.mqtt_url, info.fleet_mqtt_url)

    # A login missing from a running broker (a stack from before the fleet had one) is
    # written and read at the next up; SIGHUP is asynchronous, hence the tries.
    stack.auth_files.remove("simulator")
    stack.reload_mosquitto()
    assert any(Client(mqtt_port, fleet.username, fleet.password).code.is_failure for _ in range(50))
    stack.up()
    assert any(
        not Client(mqtt_port, fleet.username, fleet.password).code.is_failure for _ in range(50)
    )


def test_a_dev_stack_keeps_its_broker_logins_until_told_otherwise(
    logins_stack: DevStack,
) -> None:
    """A handle that does not say (a plain `dev up`, the broker restarts of `sim fleet` and
    of fault tests) keeps the logins the stack was brought up with."""
    logins_stack.up()
    port = logins_stack.mqtt_port
    unsaid = DevStack(logins_stack.state_dir, logins_stack.pg_port, port)
    unsaid.stop_mosquitto()
    unsaid.start_mosquitto()
    assert Client(port, None, None).code.is_failure
    assert parse_mqtt_url(unsaid.up().mqtt_url).username == "collector"
    assert Client(port, None, None).code.is_failure

    said = DevStack(logins_stack.state_dir, logins_stack.pg_port, port, broker_auth=False)
    assert parse_mqtt_url(said.up().mqtt_url).username is None
    assert not Client(port, None, None).code.is_failure  # restarted without logins


def test_enrol_issues_a_login_the_broker_accepts(tmp_path: Path, logins_stack: DevStack) -> None:
    """`agent enroll --broker-password-file` writes the login into the config and the broker."""
    stack, mqtt_port = logins_stack, logins_stack.mqtt_port
    stack.up()
    out = tmp_path / "agent.toml"
    result = CliRunner().invoke(
        app,
        [
            "agent", "enroll", "--instrument", "xrd-07", "--broker",
            f"mqtt://127.0.0.1:{mqtt_port}", "--meter-host", "127.0.0.1", "--out", str(out),
            "--broker-password-file", str(stack.state_dir / "mosquitto" / "passwd"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    broker = load_config(out).broker
    assert broker.username == "xrd-07"
    assert broker.password
    stack.reload_mosquitto()
    assert not Client(mqtt_port, "xrd-07", broker.password).code.is_failure
    assert Client(mqtt_port, "xrd-07", "not-the-password").code.is_failure


def test_a_fleet_with_the_simulator_login_is_stored_by_the_logged_in_collector(
    tmp_path: Path, logins_stack: DevStack
) -> None:
    """`sim fleet` as in compose's sim profile: logins on, simulator account, real collector."""
    stack, mqtt_port = logins_stack, logins_stack.mqtt_port
    info = stack.up()  # the collector's login is in info.mqtt_url
    broker_files = stack.state_dir / "mosquitto"
    added = CliRunner().invoke(
        app,
        [
            "broker", "add-simulator", "--password", "sim secret/1",
            "--password-file", str(broker_files / "passwd"),
            "--acl-file", str(broker_files / "acl"),
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    stack.reload_mosquitto()
    env = {**os.environ, "INSTRUMETRY_DATABASE_URL": info.database_url}
    assert _cli("db", "migrate", env=env).returncode == 0
    collector = {**env, "INSTRUMETRY_MQTT_URL": info.mqtt_url}
    with _child(["collector", "run"], collector, tmp_path / "collector.log", ready="storing"):
        fleet = _cli(
            "sim", "fleet", "--instruments", "3", "--days", "1", "--workers", "1",
            "--truth", str(tmp_path / "truth"), "--work-dir", str(tmp_path / "fleet"),
            "--mqtt-url", f"mqtt://simulator:sim%20secret%2F1@127.0.0.1:{mqtt_port}",
            env=env,
        )  # fmt: skip
    assert fleet.returncode == 0, fleet.stdout + fleet.stderr
    announced = re.search(
        r"3 instruments, 1 days .*, ([\d,]+) events, all acknowledged", fleet.stdout
    )
    assert announced, fleet.stdout
    with psycopg.connect(info.database_url) as conn:
        stored = conn.execute("SELECT count(DISTINCT instrument_id), count(*) FROM events")
        assert stored.fetchone() == (3, int(announced[1].replace(",", "")))


def test_a_fleet_on_an_unmigrated_database_or_with_a_refused_login_is_named_at_once(
    tmp_path: Path, logins_stack: DevStack
) -> None:
    info = logins_stack.up()
    url = f"mqtt://127.0.0.1:{logins_stack.mqtt_port}"
    env = {**os.environ, "INSTRUMETRY_DATABASE_URL": info.database_url}
    fleet_args = (
        "sim", "fleet", "--instruments", "2", "--days", "1", "--workers", "1",
        "--truth", str(tmp_path / "truth"), "--work-dir", str(tmp_path / "fleet"),
        "--mqtt-url", (wrong := url.replace("//", "//simulator:wrong@")),
    )  # fmt: skip
    unmigrated = _cli(*fleet_args, env=env)
    assert unmigrated.returncode == 2, unmigrated.stdout + unmigrated.stderr
    assert unmigrated.stderr.endswith(
        f"instrumetry: error: the database at 127.0.0.1:{logins_stack.pg_port}/instrumetry has "
        "no Instrumetry tables; run `instrumetry db migrate`\n"
    )
    assert _cli("db", "migrate", env=env).returncode == 0
    started = time.monotonic()
    fleet = _cli(*fleet_args, env=env)
    assert fleet.returncode == 2, fleet.stdout + fleet.stderr
    assert fleet.stderr.endswith(
        f"instrumetry: error: the broker at {url} refused the fleet's login (Not authorized); "
        "the simulator's account comes from `instrumetry broker add-simulator`\n"
    )
    assert time.monotonic() - started < 30  # not the 60 s a broker that never answers gets
    # The dev stack's env file has both URLs: the fleet logs in with the fleet's, of the
    # same broker; a fleet URL of another broker never wins over the broker URL.
    both = {**env, "INSTRUMETRY_MQTT_URL": info.mqtt_url, "INSTRUMETRY_FLEET_MQTT_URL": wrong}
    by_env = _cli(*fleet_args[:-2], env=both)
    assert by_env.returncode == 2, by_env.stdout + by_env.stderr
    assert "refused the fleet's login (Not authorized)" in by_env.stderr
    elsewhere = {**both, "INSTRUMETRY_MQTT_URL": wrong, "INSTRUMETRY_FLEET_MQTT_URL": "mqtt://x:1"}
    by_hand = _cli(*fleet_args[:-2], env=elsewhere)
    assert by_hand.returncode == 2, by_hand.stdout + by_hand.stderr
    assert f"the broker at {url} refused the fleet's login" in by_hand.stderr
    # The collector's login gets in, but may not speak for the instruments.
    collectors = _cli(*fleet_args[:-1], info.mqtt_url, env=env)
    assert collectors.returncode == 2, collectors.stdout + collectors.stderr
    assert collectors.stderr.endswith(
        f"instrumetry: error: the broker at {url} refused the fleet's messages (Not authorized): "
        "its login must be the simulator's account (`instrumetry broker add-simulator`)\n"
    )


def test_a_fleet_login_without_its_password_is_named(tmp_path: Path) -> None:
    """As compose's sim service runs without INSTRUMETRY_MQTT_SIM_PASSWORD."""
    result = _cli(
        "sim", "fleet", "--instruments", "2", "--days", "1", "--truth", str(tmp_path / "truth"),
        "--database-url", "postgresql://nobody@127.0.0.1:1/none",
        "--mqtt-url", "mqtt://simulator:@mosquitto:1883",
        env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "instrumetry: error: broker URL: login 'simulator' has no password "
        "(mqtt://USER:PASSWORD@host:port)\n"
    )


def test_a_fleet_without_a_broker_url_is_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "MQTT_URL" not in k}
    result = _cli(
        "sim", "fleet", "--instruments", "2", "--days", "1", "--truth", str(tmp_path / "truth"),
        "--database-url", "postgresql://nobody@127.0.0.1:1/none",
        env=env | {"INSTRUMETRY_FLEET_MQTT_URL": "mqtt://simulator:pw@127.0.0.1:1"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "instrumetry: error: no broker URL: give --mqtt-url or set INSTRUMETRY_MQTT_URL "
        "(`instrumetry dev up` writes it)\n"
    )


def test_a_collector_whose_login_is_refused_says_so_at_start(logins_stack: DevStack) -> None:
    """The broker's refusal reaches the collector from its receiving child, as one error."""
    info = logins_stack.up()
    url = f"mqtt://collector:wrong@127.0.0.1:{logins_stack.mqtt_port}"
    collector = Collector(load_settings(database_url=info.database_url, mqtt_url=url))
    started = time.monotonic()
    with pytest.raises(ServiceError) as refused:
        collector.start()
    assert str(refused.value) == (
        f"the MQTT broker at mqtt://127.0.0.1:{logins_stack.mqtt_port} refused us: Not authorized"
    )
    assert time.monotonic() - started < 15  # not the wait for a broker that never answers
