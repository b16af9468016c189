"""The committed dashboard JSON is what the code builds, and provisioning loads it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dashboards import build
from instrumetry.cli.main import app

REPO = Path(__file__).resolve().parents[1]
PROVIDER = REPO / "dashboards" / "provisioning" / "dashboards" / "instrumetry.yaml"


def test_committed_json_equals_what_the_code_builds() -> None:
    assert build.stale() == []


def test_check_fails_on_stale_json_and_build_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(build.JSON_DIR, tmp_path / "json")
    monkeypatch.setattr(build, "JSON_DIR", tmp_path / "json")
    fleet = tmp_path / "json" / "fleet-overview.json"
    fleet.write_text(fleet.read_text("utf-8").replace("Fleet overview", "Fleet"), "utf-8")
    (tmp_path / "json" / "old.json").write_text("{}", "utf-8")
    runner = CliRunner()

    result = runner.invoke(app, ["dashboards", "build", "--check"])
    assert result.exit_code != 0
    assert "fleet-overview.json: differs" in result.output
    assert "old.json: not built by the code" in result.output

    result = runner.invoke(app, ["dashboards", "build"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 of 5" in result.output
    assert build.stale(tmp_path / "json") == ["old.json: not built by the code"]


def test_dashboards_have_unique_uids_and_panel_ids() -> None:
    boards = build.dashboards()
    uids = [board.uid for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for board in boards.values():
        ids = [panel.id_val for panel in board.panels or []]
        assert ids == list(range(1, len(ids) + 1))


def _datasources() -> dict[str, dict[str, Any]]:
    """The provisioned datasources by uid."""
    path = REPO / "dashboards" / "provisioning" / "datasources" / "instrumetry.yaml"
    return {d["uid"]: d for d in yaml.safe_load(path.read_text("utf-8"))["datasources"]}


QUERY_FIELD = {"grafana-postgresql-datasource": "rawSql", "prometheus": "expr"}


def test_every_panel_reads_a_provisioned_datasource() -> None:
    sources = _datasources()
    database = sources["instrumetry-pg"]
    used = set()
    for text in build.rendered().values():
        board = json.loads(text)
        for panel in board["panels"]:
            for target in panel["targets"]:
                source = sources[target["datasource"]["uid"]]
                assert target["datasource"] == {"type": source["type"], "uid": source["uid"]}
                assert panel["datasource"] == target["datasource"], panel["title"]
                assert target[QUERY_FIELD[source["type"]]].strip()
                used.add(source["uid"])
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == database["uid"]
            assert variable["multi"] and variable["includeAll"]
    assert used == set(sources), "a provisioned datasource no panel reads"


def test_datasource_uses_the_read_only_role() -> None:
    source = _datasources()["instrumetry-pg"]
    migration = (REPO / "collector" / "migrations" / "0006_grafana_reader.sql").read_text("utf-8")
    assert source["user"] == "instrumetry_grafana"
    assert f"CREATE ROLE {source['user']} LOGIN" in migration


def test_prometheus_datasource_scrapes_the_compose_collector() -> None:
    """Grafana's Prometheus is compose's, which scrapes the collector's metrics port."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    source = _datasources()["instrumetry-prom"]
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text("utf-8"))
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [
        {"targets": [f"collector:{compose['services']['collector']['expose'][0]}"]}
    ]
    assert source["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


def test_compose_mounts_the_json_where_the_provider_reads_it() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    (provider,) = yaml.safe_load(PROVIDER.read_text("utf-8"))["providers"]
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./dashboards/json"] == provider["options"]["path"]
    assert mounts["./dashboards/provisioning"] == "/etc/grafana/provisioning"


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def test_every_variable_in_provisioning_is_in_grafanas_environment() -> None:
    """Grafana expands ``$NAME`` in provisioning values from its own environment only."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))
    environment = compose["services"]["grafana"]["environment"]
    files = sorted((REPO / "dashboards" / "provisioning").rglob("*.yaml"))
    values = [s for path in files for s in _strings(yaml.safe_load(path.read_text("utf-8")))]
    used = {a or b for value in values for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", value)}
    assert "INSTRUMETRY_GRAFANA_DB_PASSWORD" in used
    assert used <= set(environment), used - set(environment)
