"""A server command on an agent-only install names the extra to install, in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from instrumetry.cli.extras import EXTRA_MODULES, missing_extra

ROOT = Path(__file__).resolve().parents[1]


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def test_the_table_names_the_modules_of_exactly_each_extras_libraries() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    provided = metadata.packages_distributions()
    assert set(EXTRA_MODULES) == set(extras) - {"dev"}
    for extra, modules in EXTRA_MODULES.items():
        declared = {_distribution(requirement) for requirement in extras[extra]}
        from_modules = {_distribution(d) for module in modules for d in provided[module]}
        assert from_modules == declared, extra


@pytest.mark.parametrize(
    ("module", "extra"),
    [("psycopg", "server"), ("psycopg.rows", "server"), ("psutil", "probe"), ("os", None)],
)
def test_a_module_maps_to_the_extra_that_installs_it(module: str, extra: str | None) -> None:
    assert missing_extra(module) == extra


def _cli_without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``module`` made unimportable, as on a machine without it."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['instrumetry', *{argv!r}]; "
        "from instrumetry.cli.main import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


def test_a_server_command_without_the_server_libraries_says_which_extra() -> None:
    result = _cli_without(
        "psycopg", "db", "migrate", "--database-url", "postgresql://localhost:1/x"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "instrumetry: error: this command needs the 'server' extra (no module 'psycopg'): "
        "pip install 'instrumetry[server]'\n"
    )


def test_a_missing_module_of_no_extra_keeps_its_traceback() -> None:
    result = _cli_without("sqlite3", "agent", "check", "--config", "/nonexistent/agent.toml")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
