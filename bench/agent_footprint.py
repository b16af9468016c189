"""Footprint of a running agent at 1 Hz polling: resident memory and CPU, beside a bare Python.

Targets (issue 3): at most 40 MB resident and 1% of one core. Two agents run
side by side, each for its own instrument: one started by the lean entry point
the service files use (``instrumetry-agent``, i.e. ``python -m agents``), one by
``instrumetry agent run`` through the full Typer CLI. Each polls a simulated
SDM120 over Modbus TCP (served from this process) once a second and reports to
a private Mosquitto and collector; the instruments switch state every half
minute, so events, acks and heartbeats all happen. The reference, in the same
run and measured the same way, is a bare interpreter waking once a second.
After a warm-up, all are sampled every few seconds over ``--duration-s``.

    python -m bench.agent_footprint --duration-s 600
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
import psycopg

from bench.agent_common import (
    INSTRUMETRY,
    machine,
    private_stack,
    register_instrument,
    start_collector,
    write_agent,
)
from sim.meters import Schedule, ScheduledInstrument, Segment, VirtualMeter
from sim.modbus_server import MeterServerThread

BARE = "import time\nwhile True:\n    time.sleep(1)\n"
SCHEDULE = Schedule([Segment(30, 0.0), Segment(30, 40.0), Segment(30, 900.0)])


@dataclass
class Usage:
    """What one process used over the window."""

    rss_max_mb: float = 0.0
    rss_sum_mb: float = 0.0
    samples: int = 0
    cpu_s: float = 0.0

    def sample(self, process: psutil.Process) -> None:
        rss = process.memory_info().rss / 2**20
        self.rss_max_mb = max(self.rss_max_mb, rss)
        self.rss_sum_mb += rss
        self.samples += 1


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=20.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()

    meter = VirtualMeter(ScheduledInstrument(SCHEDULE, start=time.time()).power_w, seed=5)
    entries = {
        "agent (instrumetry-agent)": [sys.executable, "-m", "agents", "--config"],
        "agent (instrumetry agent run)": [INSTRUMETRY, "agent", "run", "--config"],
    }
    with private_stack() as (work, info), MeterServerThread({1: meter}) as port:
        collector = start_collector(info, work / "collector.log")
        children: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = [collector]
        try:
            for n, command in enumerate(entries.values()):
                instrument = f"bench-footprint-{n}"
                register_instrument(info.database_url, instrument)
                folder = work / instrument
                folder.mkdir()
                config = write_agent(
                    folder,
                    instrument,
                    {
                        "broker": {"url": info.mqtt_url},
                        "meter": {"host": "127.0.0.1", "port": port, "poll_interval_s": 1.0},
                        "thresholds": {"min_dwell_s": 3.0},
                        "heartbeat_interval_s": 60.0,
                        "log": {"file": "agent.log"},
                    },
                )
                children.append(subprocess.Popen([*command, str(config)]))
            children.append(subprocess.Popen([sys.executable, "-c", BARE]))
            time.sleep(args.warmup_s)
            names = [*entries, "bare interpreter"]
            processes = {
                name: psutil.Process(c.pid) for name, c in zip(names, children[1:], strict=True)
            }
            usage = {name: Usage() for name in processes}
            started_cpu = {name: cpu_seconds(p) for name, p in processes.items()}
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < args.duration_s:
                for name, process in processes.items():
                    usage[name].sample(process)
                time.sleep(min(args.sample_s, max(0.0, args.duration_s - elapsed)))
            window = time.monotonic() - started
            for name, process in processes.items():
                usage[name].cpu_s = cpu_seconds(process) - started_cpu[name]
            events = stored_events(info.database_url)
        finally:
            for child in children:
                child.terminate()
                child.wait(timeout=20)

    print(f"machine: {machine()}")
    print(f"window: {window:.0f} s after a {args.warmup_s:.0f} s warm-up, 1 Hz polling")
    print(f"events stored for the two agents: {events}")
    print("| process | RSS max MB | RSS mean MB | CPU % of one core |")
    print("|---|---|---|---|")
    for name, used in usage.items():
        print(
            f"| {name} | {used.rss_max_mb:.1f} | {used.rss_sum_mb / used.samples:.1f} | "
            f"{100 * used.cpu_s / window:.3f} |"
        )
    bare = usage["bare interpreter"]
    for name in entries:
        used = usage[name]
        cpu_pct = 100 * used.cpu_s / window
        print(
            f"{name}: RSS {used.rss_max_mb - bare.rss_max_mb:+.1f} MB over the bare interpreter "
            f"(target <= 40 MB: {'met' if used.rss_max_mb <= 40 else 'MISSED'}), "
            f"CPU {cpu_pct:.3f}% (target <= 1%: {'met' if cpu_pct <= 1 else 'MISSED'})"
        )


def stored_events(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
