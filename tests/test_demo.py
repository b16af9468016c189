"""`instrumetry demo` end to end: real services, collector, API, simulated fleet."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from instrumetry.devstack.stack import DevStack


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_reports_startup_rates_close_to_the_truth(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    pg_port, mqtt_port, api_port, metrics_port = unused_ports(4)
    state_dir = tmp_path / "state"
    env = {**os.environ, "COLUMNS": "200", "INSTRUMETRY_STATE_DIR": str(state_dir)}
    env.pop("INSTRUMETRY_DATABASE_URL", None)
    env.pop("INSTRUMETRY_MQTT_URL", None)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "instrumetry",
                "demo",
                "--instruments",
                "8",
                "--days",
                "3",
                "--no-wait",
                "--state-dir",
                str(state_dir),
                "--pg-port",
                str(pg_port),
                "--mqtt-port",
                str(mqtt_port),
                "--api-port",
                str(api_port),
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        # Clean shutdown: nothing left listening, the state folder stays.
        assert not any(_listening(p) for p in (pg_port, mqtt_port, api_port))
        assert (state_dir / "logs" / "collector.log").exists()
    finally:
        DevStack(state_dir, pg_port, mqtt_port).purge()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "all acknowledged" in out
    for instrument in ("nmr-0001", "sem-0002", "general-0007", "nmr-0008"):
        assert instrument in out
    error = re.search(r"mean absolute error ([\d.]+) points, worst ([\d.]+) points", out)
    assert error is not None, out
    assert float(error[1]) < 1.0, out
    assert float(error[2]) < 3.0, out


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "instrumetry",
                "demo",
                "--no-wait",
                "--api-port",
                str(port),
                "--state-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"instrumetry: error: port {port} is already in use; choose another with --api-port"
    )
    assert "Traceback" not in result.stderr
