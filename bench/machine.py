"""What the figures were measured on: without it, a benchmark number means nothing."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import psycopg


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def _mosquitto_version() -> str:
    result = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def describe(database_url: str) -> list[str]:
    """One line per fact: CPU, memory, OS, and the versions of everything on the data path."""
    with psycopg.connect(database_url) as conn:
        server = conn.execute("SHOW server_version").fetchone()
        timescale = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    return [
        f"CPU: {_cpu_model()}, nproc {os.cpu_count()}",
        f"memory: {_memory_gib():.1f} GiB",
        f"OS: {platform.platform()}",
        f"Python {platform.python_version()}, paho-mqtt {version('paho-mqtt')}, "
        f"psycopg {version('psycopg')}, msgspec {version('msgspec')}",
        f"Mosquitto {_mosquitto_version()}, PostgreSQL {server[0] if server else '?'}, "
        f"TimescaleDB {timescale[0] if timescale else '?'}",
    ]
