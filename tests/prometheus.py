"""A real Prometheus for the tests, run with docker compose's own configuration.

``deploy/prometheus/prometheus.yml`` is loaded as written, with its collector
target pointed at a local collector and its scrape interval shortened, so a
test run of a few seconds gives enough samples for ``rate()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
SCRAPE = timedelta(seconds=1)


def require_prometheus() -> str:
    """The Prometheus binary; a skip without it, a failure where it is mandatory (CI)."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus is not installed; run scripts/install-system-deps.sh"
        if os.environ.get("CI") or os.environ.get("INSTRUMETRY_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@contextmanager
def prometheus(target: str, port: int, work_dir: Path) -> Iterator[str]:
    """Prometheus scraping ``target`` (host:port) every second; yields its URL."""
    binary = require_prometheus()
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text("utf-8"))
    interval = f"{int(SCRAPE.total_seconds())}s"
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config), "utf-8")
    url = f"http://127.0.0.1:{port}"
    with (work_dir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={work_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("prometheus did not become ready in 30 s")


def wait_for_scrape(url: str, after: datetime) -> None:
    """Until Prometheus has scraped its target, successfully, once more after ``after``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/api/v1/query", params={"query": "timestamp(up == 1)"}, timeout=5)
        result = body.json()["data"]["result"]
        if result and float(result[0]["value"][1]) > after.timestamp():
            return
        time.sleep(0.2)
    raise RuntimeError("prometheus did not scrape the collector")


def query_range(
    url: str, expr: str, start: datetime, end: datetime, step: timedelta
) -> list[dict[str, Any]]:
    """``/api/v1/query_range`` as Grafana calls it; the result's series."""
    answer = httpx.get(
        f"{url}/api/v1/query_range",
        params={
            "query": expr,
            "start": start.timestamp(),
            "end": end.timestamp(),
            "step": step.total_seconds(),
        },
        timeout=30,
    )
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
