"""The agent's lean entry point and the service files that start it."""

from __future__ import annotations

import configparser
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.keys import generate_key

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "agent" / "instrumetry-agent.service"
INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")


def lean_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_a_bad_config_ends_in_one_line_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('instrument_id = "x"\n[broker]\nurl = "mqtt://h"\n[meter]\nport = 1\n')
    result = lean_agent("--config", str(config))
    assert result.returncode == 2
    assert result.stderr == f"instrumetry-agent: error: {config}: meter: kind 'tcp' needs host\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "the option --config FILE is required"),
        (("--config",), "option --config requires argument"),
        (("--config", "a.toml", "--bogus"), "option --bogus not recognized"),
        (("--config", "a.toml", "b.toml"), "unexpected argument 'b.toml'"),
    ],
)
def test_bad_options_end_in_the_usage_and_one_line(args: tuple[str, ...], error: str) -> None:
    result = lean_agent(*args)
    assert result.returncode == 2
    assert result.stderr == (
        f"usage: instrumetry-agent --config FILE [--verbose]\ninstrumetry-agent: error: {error}\n"
    )


def test_help_names_every_option() -> None:
    result = lean_agent("--help")
    assert result.returncode == 0
    for option in ("-c, --config FILE", "-v, --verbose", "-h, --help"):
        assert option in result.stdout


def test_the_lean_entry_point_imports_neither_typer_nor_server_libraries() -> None:
    # Nor, logging to stderr (the journal), the file handlers and the pickle they import.
    probe = (
        "import sys, agents.__main__, agents.config as c, agents.logs as l; "
        "l.setup_logging(c.LogConfig()); "
        "print(sorted({'typer', 'pydantic', 'psycopg', 'rich', 'fastapi', 'logging.handlers', "
        "'pickle', 'argparse'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_systemd_unit_starts_the_declared_entry_point_with_a_config() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNIT, encoding="utf-8")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(command[0]).name in scripts
    assert scripts[Path(command[0]).name] == "agents.__main__:main"
    assert command[1:3] == ["--config", "/etc/instrumetry/agent.toml"]
    assert service["KillSignal"] == "SIGTERM"  # the agent's clean stop: offline, disconnect
    assert service["Restart"] == "always"
    assert {"/var/lib/instrumetry"} <= set(service["ReadWritePaths"].split())


def test_agent_check_prints_what_it_sees_and_fails_in_one_line(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    meter_port, broker_port = unused_ports(2)
    generate_key(tmp_path / "agent.key")
    config = tmp_path / "agent.toml"
    config.write_text(
        'instrument_id = "nmr-9"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{broker_port}"\n'
        f'[meter]\nhost = "127.0.0.1"\nport = {meter_port}\nmodel = "dtsu666"\ntimeout_s = 0.3\n'
        '[probe]\nprocesses = ["no-such-control-software"]\n'
    )
    result = subprocess.run(
        [INSTRUMETRY, "agent", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "instrument: nmr-9"
    assert lines[1].startswith("public key: ")
    assert lines[2].startswith(f"meter 127.0.0.1:{meter_port} unit 1 (dtsu666): no reading: ")
    assert lines[3].startswith("control software (no-such-control-software): not running; ")
    assert lines[4].startswith(f"broker 127.0.0.1:{broker_port}: cannot connect: ")
    assert result.returncode == 2
    assert result.stderr == "instrumetry: error: check failed: meter and broker (see above)\n"


def test_stop_signals_reach_only_the_sigwait_thread_so_sigterm_always_stops_the_agent(
    tmp_path: Path, mqtt_url: str, unused_ports: Callable[[int], list[int]]
) -> None:
    generate_key(tmp_path / "agent.key")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'instrument_id = "sig-1"\n[broker]\nurl = "{mqtt_url}"\n'
        f'[meter]\nhost = "127.0.0.1"\nport = {unused_ports(1)[0]}\ntimeout_s = 0.2\n'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agents", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tasks = Path(f"/proc/{agent.pid}/task")
        deadline = time.monotonic() + 20
        while len(list(tasks.iterdir())) < 3:  # main, the signal waiter, the MQTT thread
            assert time.monotonic() < deadline, "the agent started no network thread"
            time.sleep(0.05)
        stop_bits = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
        open_to_them = []
        for task in tasks.iterdir():
            status = (task / "status").read_text()
            blocked = int(
                next(ln for ln in status.splitlines() if ln.startswith("SigBlk:"))[7:], 16
            )
            if blocked & stop_bits != stop_bits:
                open_to_them.append(task.name)
        # Only the thread inside sigwait() (which unblocks them while it waits) takes them.
        assert len(open_to_them) == 1 and open_to_them[0] != str(agent.pid)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
    finally:
        agent.kill()
        agent.wait()
