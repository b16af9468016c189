"""The development stack against the real services: idempotence, crashes, ports, CLI.

Tests that stop or crash services use their own stack (``make_stack``), so
the session ``stack`` other tests rely on stays up.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from instrumetry.devstack.broker_auth import AuthFiles
from instrumetry.devstack.mosquitto import find_mosquitto, policy_dir
from instrumetry.devstack.procs import port_accepts, wait_until
from instrumetry.devstack.stack import DevStack, StackInfo
from instrumetry.domain.broker_auth import Account
from instrumetry.domain.errors import ServiceError

REPO = Path(__file__).resolve().parents[1]


def pids(dev: DevStack) -> tuple[int | None, int | None]:
    status = dev.status()
    return status.postgres.pid, status.mosquitto.pid


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``instrumetry`` script as a user would, with only ``env`` set of ours."""
    script = Path(sys.executable).with_name("instrumetry")
    command = str(script) if script.is_file() else shutil.which("instrumetry")
    assert command, "the instrumetry script is not installed in this environment"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INSTRUMETRY_")}
    env = clean | (env or {})
    return subprocess.run(
        [command, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_up_is_idempotent(stack: DevStack, stack_info: StackInfo) -> None:
    before = pids(stack)
    assert stack.up() == stack_info
    assert stack.up() == stack_info
    assert pids(stack) == before


def test_status_reports_running_services(stack: DevStack, stack_info: StackInfo) -> None:
    status = stack.status()
    assert status.postgres.running and status.postgres.pid
    assert status.mosquitto.running and status.mosquitto.pid
    assert status.postgres.port == stack_info.pg_port
    assert status.mosquitto.port == stack_info.mqtt_port
    assert port_accepts(stack_info.pg_port) and port_accepts(stack_info.mqtt_port)


def test_database_has_timescaledb_and_app_role(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:  # TCP + scram-sha-256 password
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        user = conn.execute("SELECT current_user").fetchone()
    assert version and version[0]
    assert owner == ("instrumetry",)
    assert user == ("instrumetry",)


def test_superuser_dsn_reaches_the_app_database(stack_info: StackInfo) -> None:
    with psycopg.connect(stack_info.superuser_dsn) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        telemetry = conn.execute("SHOW timescaledb.telemetry_level").fetchone()
    assert row == ("postgres", "instrumetry")
    assert preload == ("timescaledb",)
    assert telemetry == ("off",)


def test_env_and_credentials_files_are_owner_only(stack_info: StackInfo) -> None:
    env = stack_info.env_file.read_text(encoding="utf-8").splitlines()
    assert f"INSTRUMETRY_DATABASE_URL={stack_info.database_url}" in env
    assert f"INSTRUMETRY_MQTT_URL={stack_info.mqtt_url}" in env
    for path in (stack_info.env_file, stack_info.state_dir / "credentials.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_running_stack_cannot_silently_move_port(
    stack: DevStack, unused_ports: Callable[[int], list[int]]
) -> None:
    (other_port,) = unused_ports(1)
    moved = DevStack(stack.state_dir, other_port, stack.mqtt_port)
    with pytest.raises(ServiceError, match=r"already runs on port \d+; run `instrumetry dev down`"):
        moved.up()


@pytest.mark.parametrize(
    ("service", "option", "envvar"),
    [
        ("pg", "--pg-port", "INSTRUMETRY_DEV_PG_PORT"),
        ("mqtt", "--mqtt-port", "INSTRUMETRY_DEV_MQTT_PORT"),
    ],
)
def test_port_in_use_is_reported_before_starting_anything(
    make_stack: Callable[[], DevStack], service: str, option: str, envvar: str
) -> None:
    dev = make_stack()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        clashing = DevStack(
            dev.state_dir,
            port if service == "pg" else dev.pg_port,
            port if service == "mqtt" else dev.mqtt_port,
        )
        with pytest.raises(ServiceError) as raised:
            clashing.up()
    assert str(raised.value) == (
        f"port {port} is already in use by another process; "
        f"choose another with {option} or {envvar}"
    )
    assert pids(clashing) == (None, None)


def test_crashed_services_leave_stale_pid_files_that_up_recovers(
    make_stack: Callable[[], DevStack],
) -> None:
    dev = make_stack()
    info = dev.up()
    old = pids(dev)
    dev.kill_postgres()
    dev.kill_mosquitto()
    assert pids(dev) == (None, None)
    assert (info.pg_data_dir / "postmaster.pid").exists()
    assert (dev.state_dir / "mosquitto" / "mosquitto.pid").exists()

    assert dev.up() == info
    new = pids(dev)
    assert None not in new and new != old
    with psycopg.connect(info.database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pid_files_naming_another_live_process_are_stale(
    make_stack: Callable[[], DevStack],
) -> None:
    dev = make_stack()
    info = dev.up()
    dev.down()
    for pid_file in (
        info.pg_data_dir / "postmaster.pid",
        dev.state_dir / "mosquitto" / "mosquitto.pid",
    ):
        pid_file.write_text(f"{os.getpid()}\n", encoding="ascii")  # alive, but not the server
    assert pids(dev) == (None, None)
    dev.up()
    assert None not in pids(dev)


def test_each_service_can_be_killed_stopped_and_restarted(
    make_stack: Callable[[], DevStack],
) -> None:
    dev = make_stack()
    info = dev.up()
    for stop in (dev.kill_mosquitto, dev.stop_mosquitto):
        dev.start_mosquitto()
        stop()
        assert dev.status().mosquitto.pid is None and not port_accepts(info.mqtt_port)
    dev.start_mosquitto()
    assert port_accepts(info.mqtt_port)
    for stop in (dev.kill_postgres, dev.stop_postgres):
        dev.start_postgres()
        stop()
        assert dev.status().postgres.pid is None and not port_accepts(info.pg_port)
    dev.start_postgres()
    with psycopg.connect(info.database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_fault_controls_need_a_stack_brought_up_before(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="run `instrumetry dev up` first"):
        DevStack(tmp_path).kill_postgres()


def test_down_is_idempotent_and_up_again_keeps_data(make_stack: Callable[[], DevStack]) -> None:
    dev = make_stack()
    info = dev.up()
    with psycopg.connect(info.database_url) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")

    dev.down()
    assert pids(dev) == (None, None)
    assert not (info.pg_data_dir / "postmaster.pid").exists()
    assert not (dev.state_dir / "mosquitto" / "mosquitto.pid").exists()
    assert not port_accepts(info.pg_port) and not port_accepts(info.mqtt_port)
    dev.down()

    assert dev.up() == info  # same password, same ports
    with psycopg.connect(info.database_url) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]


def test_status_and_down_of_an_empty_folder_create_nothing(tmp_path: Path) -> None:
    dev = DevStack(tmp_path / "never-up")
    assert not dev.status().postgres.running
    dev.down()
    assert not dev.state_dir.exists()


def test_cli_status_lists_both_services(stack: DevStack) -> None:
    result = cli("dev", "status", "--state-dir", str(stack.state_dir))
    assert result.returncode == 0, result.stderr
    pg_pid, mqtt_pid = pids(stack)
    assert re.search(
        rf"^postgres\s+running\s+pid {pg_pid}\s+port {stack.pg_port}\b", result.stdout, re.M
    )
    assert re.search(
        rf"^mosquitto\s+running\s+pid {mqtt_pid}\s+port {stack.mqtt_port}\b", result.stdout, re.M
    )


def test_cli_takes_state_dir_from_the_environment(stack: DevStack) -> None:
    result = cli("dev", "status", env={"INSTRUMETRY_STATE_DIR": str(stack.state_dir)})
    assert result.returncode == 0, result.stderr
    assert re.search(r"^postgres\s+running\s", result.stdout, re.M)


def test_cli_up_on_a_running_stack_prints_the_urls(stack: DevStack, stack_info: StackInfo) -> None:
    result = cli(
        "dev", "up", "--state-dir", str(stack.state_dir),
        "--pg-port", str(stack.pg_port), "--mqtt-port", str(stack.mqtt_port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"INSTRUMETRY_DATABASE_URL={stack_info.database_url}\n" in result.stdout
    assert f"INSTRUMETRY_MQTT_URL={stack_info.mqtt_url}\n" in result.stdout
    assert f"set -a; . {stack_info.env_file}; set +a" in result.stdout


def test_cli_port_clash_is_one_line_without_traceback(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    (pg_port,) = unused_ports(1)  # not the default one: a developer's own stack may hold it
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = cli(
            "dev", "up", "--state-dir", str(tmp_path / "s"),
            "--pg-port", str(pg_port), "--mqtt-port", str(port),
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"instrumetry: error: port {port} is already in use by another process; "
        "choose another with --mqtt-port or INSTRUMETRY_DEV_MQTT_PORT\n"
    )


def test_cli_unknown_option_fails_without_traceback() -> None:
    result = cli("dev", "status", "--bogus")
    assert result.returncode != 0
    assert "No such option: --bogus" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_broker_policy_holds_no_per_deployment_settings() -> None:
    settings = [
        line.split()[0]
        for line in (policy_dir() / "instrumetry.conf").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "max_queued_messages" in settings and "persistence" in settings
    assert not {"listener", "persistence_location", "pid_file", "log_dest", "user"} & set(settings)


def test_compose_broker_config_is_accepted_by_this_mosquitto(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    """deploy/mosquitto/mosquitto.conf with its container paths mapped to a temp folder."""
    binary = find_mosquitto()
    (port,) = unused_ports(1)
    (tmp_path / "data").mkdir()
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    auth = tmp_path / "auth"  # the committed ACL, and a password file made as the README says
    auth.mkdir()
    shutil.copy(REPO / "deploy" / "mosquitto" / "auth" / "acl", auth / "acl")
    AuthFiles(auth / "passwd", auth / "acl").add_account(Account.COLLECTOR, "collector")
    conf = (
        conf.replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("/mosquitto/data/", f"{tmp_path}/data/")
        .replace("/mosquitto/config/conf.d", str(policy_dir()))
        .replace("/mosquitto/config/auth", str(auth))
    )
    user = pwd.getpwuid(os.geteuid()).pw_name  # as root, keep the temp folder writable
    (tmp_path / "mosquitto.conf").write_text(conf + f"user {user}\n", encoding="utf-8")
    broker = subprocess.Popen(
        [str(binary), "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: port_accepts(port) or broker.poll() is not None, 10)
        assert broker.poll() is None, "mosquitto rejected the compose config"
    finally:
        broker.terminate()
        output, _ = broker.communicate(timeout=10)
    assert "Error" not in output, output
