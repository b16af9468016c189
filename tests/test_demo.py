"""`instrumetry demo` end to end: real services, collector, API, simulated fleet."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from instrumetry.devstack.stack import DevStack


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_reports_startup_rates_close_to_the_truth_and_stops_cleanly_on_sigterm(
    tmp_path: Path, unused_ports: Callable[[int], list[int]]
) -> None:
    """The demo waits with the stack up; SIGTERM stops it as Ctrl-C does (SIGHUP, from a
    closed terminal, takes the same path), leaving nothing running but its state folder."""
    pg_port, mqtt_port, api_port, metrics_port = unused_ports(4)
    state_dir = tmp_path / "state"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        "INSTRUMETRY_STATE_DIR": str(state_dir),
    }
    env.pop("INSTRUMETRY_DATABASE_URL", None)
    env.pop("INSTRUMETRY_MQTT_URL", None)
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    try:
        with stdout.open("w") as out, stderr.open("w") as err:
            demo = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "instrumetry",
                    "demo",
                    "--instruments",
                    "8",
                    "--days",
                    "3",
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
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 280
                while "Press Ctrl-C" not in stdout.read_text(encoding="utf-8"):
                    assert demo.poll() is None, stdout.read_text("utf-8") + stderr.read_text(
                        "utf-8"
                    )
                    assert time.monotonic() < deadline, "the demo did not finish its report"
                    time.sleep(0.5)
                assert all(_listening(p) for p in (pg_port, mqtt_port, api_port, metrics_port))
                demo.send_signal(signal.SIGTERM)
                returncode = demo.wait(timeout=60)
            finally:
                if demo.poll() is None:
                    demo.kill()
                    demo.wait()
        # Clean shutdown: nothing left listening, the state folder stays.
        assert not any(_listening(p) for p in (pg_port, mqtt_port, api_port, metrics_port))
        assert (state_dir / "logs" / "collector.log").exists()
    finally:
        DevStack(state_dir, pg_port, mqtt_port).purge()
    out_text = stdout.read_text(encoding="utf-8")
    assert returncode == 0, out_text + stderr.read_text(encoding="utf-8")
    assert "Stopping the collector, the API and the local services" in out_text
    assert "all acknowledged" in out_text
    for instrument in ("nmr-0001", "sem-0002", "general-0007", "nmr-0008"):
        assert instrument in out_text
    error = re.search(r"mean absolute error ([\d.]+) points, worst ([\d.]+) points", out_text)
    assert error is not None, out_text
    assert float(error[1]) < 1.0, out_text
    assert float(error[2]) < 3.0, out_text


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
