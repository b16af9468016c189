"""What the agent benchmarks share: a private stack, a simulated meter, an enrolled agent.

Each benchmark starts its own Mosquitto and PostgreSQL + TimescaleDB on free
ports in a temporary folder (``instrumetry.devstack``), so it never touches a
developer's stack or the machine's services, and stops them at the end.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg

from agents.config import parse_config, render_config
from agents.keys import generate_key
from instrumetry.devstack.stack import DevStack, StackInfo

INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")


def machine() -> str:
    """CPU, cores, memory, OS and versions: a figure means nothing without them."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"paho-mqtt {version('paho-mqtt')}, pymodbus {version('pymodbus')}"
    )


def free_ports(count: int) -> list[int]:
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@contextmanager
def private_stack() -> Iterator[tuple[Path, StackInfo]]:
    """A started stack in a temporary folder; purged on exit. Yields (folder, info)."""
    with tempfile.TemporaryDirectory(prefix="instrumetry-bench-") as folder:
        work = Path(folder)
        pg_port, mqtt_port = free_ports(2)
        stack = DevStack(work / "stack", pg_port, mqtt_port)
        try:
            yield work, stack.up()
        finally:
            stack.purge()


def register_instrument(database_url: str, instrument: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO institutions (id, name) VALUES ('bench', 'Bench') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'bench', 'bench')",
            (instrument,),
        )


def write_agent(work: Path, instrument: str, settings: dict[str, Any]) -> Path:
    """An enrolled agent in ``work``: key, and agent.toml from ``settings``."""
    generate_key(work / "agent.key")
    config = parse_config(
        {"instrument_id": instrument, "key_file": "agent.key", "state_dir": "state"} | settings,
        "bench",
    )
    path = work / "agent.toml"
    path.write_text(render_config(config), encoding="utf-8")
    return path


def start_collector(info: StackInfo, log: Path) -> subprocess.Popen[str]:
    """``instrumetry collector run`` on the stack, once it says it stores messages."""
    env = os.environ | {
        "INSTRUMETRY_DATABASE_URL": info.database_url,
        "INSTRUMETRY_MQTT_URL": info.mqtt_url,
        "INSTRUMETRY_METRICS_PORT": "0",  # no /metrics: another collector may hold 9464
    }
    collector = subprocess.Popen(
        [INSTRUMETRY, "collector", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
    )
    assert collector.stdout is not None
    for line in collector.stdout:
        if "storing messages" in line:
            return collector
    raise RuntimeError(f"the collector did not start; see {log}")
