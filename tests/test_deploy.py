"""The production files agree with the code: compose, Dockerfile, provisioning."""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from instrumetry.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    return data


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        assert re.search(r":v?\d", image), f"{name}: image {image!r} is not pinned"


def test_every_mounted_file_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


@pytest.mark.parametrize(
    "name", [n for n, s in _compose()["services"].items() if s.get("build") == "."]
)
def test_project_services_run_real_commands(name: str) -> None:
    """Each command the compose file gives the project's image is one the CLI has."""
    path = _command_path(_compose()["services"][name]["command"])
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"{name}: `instrumetry {' '.join(path)}`: {result.output}"


def _project_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _compose()["services"].items() if s.get("build") == "."}


def _command_path(command: list[str]) -> list[str]:
    return list(itertools.takewhile(lambda word: not word.startswith("-"), command))


@pytest.mark.parametrize("name", list(_project_services()))
def test_every_broker_client_logs_in(name: str) -> None:
    """The broker refuses anonymous clients: each command that takes --mqtt-url has a login."""
    service = _project_services()[name]
    help_text = CliRunner().invoke(app, [*_command_path(service["command"]), "--help"]).output
    url = service.get("environment", {}).get("INSTRUMETRY_MQTT_URL")
    if "--mqtt-url" not in help_text:
        assert url is None, f"{name} does not talk to the broker"
        return
    assert url is not None, f"{name}: no INSTRUMETRY_MQTT_URL"
    login = r"mqtt://(collector|simulator):\$\{INSTRUMETRY_MQTT_\w+_PASSWORD:[-?][^}]*\}@"
    assert re.fullmatch(f"{login}mosquitto:1883", url), f"{name}: {url} has no account's login"


def test_the_simulator_logs_in_with_its_own_account() -> None:
    url = _compose()["services"]["sim"]["environment"]["INSTRUMETRY_MQTT_URL"]
    assert url.startswith("mqtt://simulator:")


def test_profiles_need_no_variable_the_default_services_do_not() -> None:
    """Compose checks `${VAR:?}` in every service, so a profile's must not stop a plain `up`."""
    required: dict[bool, set[str]] = {True: set(), False: set()}
    for service in _compose()["services"].values():
        found = re.findall(r"\$\{(\w+):\?", json.dumps(service))
        required["profiles" in service].update(found)
    assert required[True] <= required[False]


def _dockerfile_folders() -> dict[str, str]:
    """The folders the Dockerfile makes before ``USER``, with their owners."""
    dockerfile = (REPO / "Dockerfile").read_text("utf-8")
    before_user = dockerfile[: dockerfile.index("\nUSER ")]
    return {
        folder: owner
        for owner, folder in re.findall(r"install -d -o (\S+) -g \S+ (\S+)", before_user)
    }


@pytest.mark.parametrize("name", list(_project_services()))
def test_project_services_write_only_to_volumes_the_image_user_owns(name: str) -> None:
    """A fresh named volume takes the ownership of the image's folder at its mount point."""
    service = _project_services()[name]
    user = re.search(r"^USER (\S+)$", (REPO / "Dockerfile").read_text("utf-8"), re.M)
    assert user is not None
    targets = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        assert source in _compose()["volumes"], f"{name}: {source} is not a named volume"
        assert _dockerfile_folders().get(target) == user[1], f"{name}: {target} not made for user"
        targets.append(target)
    for word in service["command"]:
        if word.startswith("/"):
            assert any(word.startswith(f"{t}/") for t in targets), f"{name}: {word} not in a volume"


def test_the_simulator_keeps_its_truth_and_outboxes_on_its_volume() -> None:
    sim = _compose()["services"]["sim"]
    command = sim["command"]
    (volume,) = sim["volumes"]
    target = volume.split(":")[1]
    for option in ("--truth", "--work-dir"):
        assert command[command.index(option) + 1].startswith(f"{target}/"), option


def test_the_image_holds_every_package_of_the_wheel() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    dockerfile = (REPO / "Dockerfile").read_text("utf-8")
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package


def test_grafana_datasource_points_at_the_compose_database() -> None:
    path = REPO / "dashboards" / "provisioning" / "datasources" / "instrumetry.yaml"
    sources = yaml.safe_load(path.read_text("utf-8"))["datasources"]
    (source,) = [s for s in sources if s["uid"] == "instrumetry-pg"]
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["url"] == "timescaledb:5432"
    assert (
        source["jsonData"]["database"]
        == _compose()["services"]["timescaledb"]["environment"]["POSTGRES_DB"]
    )
