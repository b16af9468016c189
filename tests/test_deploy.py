"""The production files agree with the code: compose, Dockerfile, provisioning."""

from __future__ import annotations

import itertools
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
    command = _compose()["services"][name]["command"]
    path = list(itertools.takewhile(lambda word: not word.startswith("-"), command))
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"{name}: `instrumetry {' '.join(path)}`: {result.output}"


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
