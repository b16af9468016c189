"""The agent's lean entry point and the service files that start it."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "agent" / "instrumetry-agent.service"


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


def test_the_lean_entry_point_imports_neither_typer_nor_server_libraries() -> None:
    probe = (
        "import sys, agents.__main__; "
        "print(sorted({'typer', 'pydantic', 'psycopg', 'rich', 'fastapi'} & set(sys.modules)))"
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
