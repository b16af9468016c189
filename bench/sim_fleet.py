"""Benchmark: a scenario's fleet through the whole system, then `sim verify`.

Starts a private dev stack (its own state folder and free ports), the
collector and the API as child processes, runs `instrumetry sim fleet` with
its outboxes on tmpfs, then `instrumetry sim verify`, and prints the wall
time of each step, the CPU time of the fleet (all its worker processes) and of
the collector during the fleet's run, and the load average. Usage:

    python bench/sim_fleet.py demo
    python bench/sim_fleet.py city-year --days 30
    python bench/sim_fleet.py city-year --instruments 2000 --days 7 --workers 2
    python bench/sim_fleet.py city-year --collectors 2
    python bench/sim_fleet.py city-year --instruments 200 --days 30 --workers 1 \\
        --profile /tmp/fleet.prof

Reference figure printed alongside: the pure driving cost (the same fleet's
readings through the agent's classifier alone, no outbox, no MQTT), so the
ratio says what the agent's storage, signing and publishing cost on top.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from instrumetry.devstack.stack import DevStack
from instrumetry.domain.classify import Classifier
from sim.fleet import Pace, run_fleet
from sim.scenario import build_fleet
from sim.scenario_file import find_scenario, load_scenario


def free_ports(count: int) -> list[int]:
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds used by the children waited for so far (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_after() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cli(*args: str) -> list[str]:
    """``python [-m cProfile -o FILE] -m instrumetry ARGS``."""
    if args[:1] == ("-m",):
        return [sys.executable, *args[:4], "-m", "instrumetry", *args[4:]]
    return [sys.executable, "-m", "instrumetry", *args]


class _Classifying:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def on_readings(self, readings: list[tuple[int, float | None]]) -> None:
        for now_ms, power_w in readings:
            self.classifier.step(now_ms, power_w)

    def crash(self) -> None:
        pass

    def restart(self) -> None:
        self.classifier = Classifier(self.classifier.thresholds)

    def set_online(self, online: bool) -> None:
        pass


def reference_s(scenario: str, instruments: int | None, days: int | None) -> float:
    """The fleet's readings through the classifier alone, in seconds."""
    loaded = load_scenario(find_scenario(scenario))
    spec = replace(
        loaded.spec,
        instruments=instruments or loaded.spec.instruments,
        days=days or loaded.spec.days,
    )
    fleet = build_fleet(spec)
    agents = {
        vi.instrument.id: _Classifying(Classifier(vi.instrument.thresholds))
        for vi in fleet.instruments
    }
    poll_ms = round(loaded.poll_s * 1000)
    started = time.monotonic()
    run_fleet(
        fleet,
        agents,
        pace=Pace(poll_ms, max(poll_ms, round(loaded.heartbeat_s * 1000))),
        restart_broker=lambda: None,
    )
    return time.monotonic() - started


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--instruments", type=int)
    parser.add_argument("--days", type=int)
    parser.add_argument("--workers", type=int, help="`sim fleet --workers` (default: CPUs)")
    parser.add_argument(
        "--collectors", type=int, default=1, help="collectors sharing the subscription (default 1)"
    )
    parser.add_argument(
        "--profile", help="write a cProfile of `sim fleet` to this file (with --workers 1)"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    overrides = [
        f"--{name}={value}"
        for name in ("instruments", "days", "workers")
        if (value := getattr(args, name)) is not None
    ]
    load_before = load_after()
    pg_port, mqtt_port, api_port, *metrics_ports = free_ports(3 + args.collectors)
    state = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    stack = DevStack(state, pg_port, mqtt_port)
    shm = Path(tempfile.mkdtemp(prefix="bench-sim-outbox-", dir="/dev/shm"))
    try:
        info = stack.up()
        env = {
            **os.environ,
            "INSTRUMETRY_DATABASE_URL": info.database_url,
            "INSTRUMETRY_MQTT_URL": info.mqtt_url,
            "INSTRUMETRY_STATE_DIR": str(state),
            # The scenarios replay past years: keep their heartbeats, as before retention.
            "INSTRUMETRY_HEARTBEAT_RETENTION_DAYS": "0",
        }
        subprocess.run(cli("db", "migrate"), env=env, check=True, capture_output=True)
        token = subprocess.run(
            cli("token", "create", "--role", "admin", "--name", "bench"),
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        logs = state / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / "collector.log").open("wb") as clog, (logs / "api.log").open("wb") as alog:
            collectors = [
                subprocess.Popen(
                    cli("collector", "run", "--metrics-port", str(port)),
                    env={**env, "INSTRUMETRY_CLIENT_ID": f"instrumetry-collector-{number}"},
                    stdout=clog,
                    stderr=clog,
                )
                for number, port in enumerate(metrics_ports, 1)
            ]
            api = subprocess.Popen(
                cli("api", "run", "--port", str(api_port)), env=env, stdout=alog, stderr=alog
            )
            try:
                time.sleep(5)
                collector_cpu = sum(cpu_s(collector.pid) for collector in collectors)
                fleet_cpu = children_cpu_s()
                started = time.monotonic()
                profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
                subprocess.run(
                    cli(
                        *profile,
                        "sim",
                        "fleet",
                        "--scenario",
                        args.scenario,
                        *overrides,
                        "--truth",
                        str(state / "truth"),
                        "--work-dir",
                        str(shm),
                    ),
                    env=env,
                    check=True,
                )
                fleet_s = time.monotonic() - started
                collector_cpu = sum(cpu_s(c.pid) for c in collectors) - collector_cpu
                fleet_cpu = children_cpu_s() - fleet_cpu
                started = time.monotonic()
                verify = subprocess.run(
                    cli(
                        "sim",
                        "verify",
                        "--truth",
                        str(state / "truth"),
                        "--api-url",
                        f"http://127.0.0.1:{api_port}",
                        "--token",
                        token,
                    ),
                    env={**env, "COLUMNS": "120"},
                    check=False,
                )
                verify_s = time.monotonic() - started
            finally:
                for child in (*collectors, api):
                    child.terminate()
                    child.wait(timeout=30)
        reference = reference_s(args.scenario, args.instruments, args.days)
        print(f"machine: {os.cpu_count()} CPUs, load average {load_before} before, {load_after()}")
        print(f"sim fleet: {fleet_s:.1f} s (wall, incl. the truth, registration and draining)")
        print(
            f"CPU during sim fleet: fleet {fleet_cpu:.1f} s, "
            f"{args.collectors} collector(s) {collector_cpu:.1f} s"
        )
        print(f"sim verify: {verify_s:.1f} s, exit {verify.returncode}")
        print(f"reference, classifier only: {reference:.1f} s; ratio {fleet_s / reference:.1f}x")
    finally:
        stack.purge()
        subprocess.run(["rm", "-rf", str(shm)], check=False)


if __name__ == "__main__":
    main()
