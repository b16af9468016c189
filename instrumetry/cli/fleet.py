"""Composing a simulated fleet: the simulator's instruments, the agent's own code.

The simulator (``sim``) and the agent (``agents``) must not import each other,
so this module, part of the composition root, builds one real ``AgentCore``
with its outbox and MQTT publisher per virtual instrument, registers the
fleet in the database, drives it through simulated time and waits until the
collector has acknowledged every event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agents.config import BrokerConfig
from agents.outbox import Outbox
from agents.publisher import Publisher
from agents.runner import AgentCore
from instrumetry.domain.classify import Classifier
from instrumetry.domain.errors import ServiceError
from instrumetry.domain.registry import Agent
from sim.fleet import Progress as SimProgress
from sim.fleet import run_fleet
from sim.scenario import Fleet

Report = Callable[[str, int, int], None]
"""Progress of a phase: (phase name, done, total)."""


PHASES = {"connect": "agents connecting", "simulate": "simulating", "deliver": "events acked"}


@contextmanager
def progress_bars(console: Console | None = None) -> Iterator[Report]:
    """A ``Report`` that draws one progress bar per phase of ``simulate``."""
    columns = (
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(PHASES.get(phase, phase), total=total or 1)
            progress.update(tasks[phase], completed=done if total else 1)

        yield report


@dataclass(frozen=True, slots=True)
class FleetResult:
    readings: int
    events: int
    seconds: float


def register_fleet(fleet: Fleet, database_url: str, keys: dict[str, Ed25519PrivateKey]) -> None:
    """Put the fleet's institutions, instruments and agents' public keys in the registry."""
    from api import registry
    from collector import db

    agents = [
        Agent(
            id=f"agent-{instrument_id}",
            instrument_id=instrument_id,
            public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )
        for instrument_id, key in keys.items()
    ]
    with db.connect(database_url) as conn:
        registry.upsert_institutions(conn, fleet.institutions)
        registry.upsert_instruments(conn, [vi.instrument for vi in fleet.instruments])
        registry.upsert_agents(conn, agents)


def simulate(
    fleet: Fleet,
    *,
    database_url: str,
    mqtt_url: str,
    work_dir: Path,
    poll_s: float = 60.0,
    heartbeat_s: float = 900.0,
    drain_timeout_s: float = 180.0,
    report: Report,
) -> FleetResult:
    """Register the fleet, run it against the broker, wait for every ack."""
    started = time.monotonic()
    keys = {vi.instrument.id: Ed25519PrivateKey.generate() for vi in fleet.instruments}
    register_fleet(fleet, database_url, keys)
    broker = BrokerConfig(url=mqtt_url, max_inflight=1000, replay_per_s=100_000.0)
    outboxes: list[Outbox] = []
    publishers: list[Publisher] = []
    cores: dict[str, AgentCore] = {}
    try:
        for vi in fleet.instruments:
            outbox = Outbox(work_dir / vi.instrument.id)
            outboxes.append(outbox)
            publisher = Publisher(broker, instrument=vi.instrument.id, outbox=outbox)
            publishers.append(publisher)
            cores[vi.instrument.id] = AgentCore(
                instrument=vi.instrument.id,
                outbox=outbox,
                classifier=Classifier(vi.instrument.thresholds),
                signer=keys[vi.instrument.id].sign,
                outlet=publisher,
                heartbeat_interval_s=heartbeat_s,
            )
        first_seq = {o: o.head().next_seq for o in outboxes}
        for publisher in publishers:
            publisher.start()

        def connected() -> int:
            for publisher in publishers:
                publisher.pump(wait_s=0.0)
            return sum(p.connected for p in publishers)

        _wait(
            connected,
            len(publishers),
            phase="connect",
            timeout_s=30.0,
            report=report,
            why=f"agents could not connect to the broker at {mqtt_url}",
        )
        progress: SimProgress = lambda done, total: report("simulate", done, total)  # noqa: E731
        readings = run_fleet(fleet, cores, poll_ms=round(poll_s * 1000), progress=progress)
        end_ms = fleet.period_ms[1]
        for publisher, core in zip(publishers, cores.values(), strict=True):
            publisher.send_heartbeat(core.heartbeat(end_ms))  # the state holds up to the end
        events = sum(o.head().next_seq - first_seq[o] for o in outboxes)

        def acked() -> int:
            for publisher in publishers:
                publisher.pump(wait_s=0.0)
            return events - sum(o.count() for o in outboxes)

        _wait(
            acked,
            events,
            phase="deliver",
            timeout_s=drain_timeout_s,
            report=report,
            why="events were not acknowledged: is the collector running?",
        )
    finally:
        for publisher in publishers:
            publisher.close()
        for outbox in outboxes:
            outbox.close()
    return FleetResult(readings, events, time.monotonic() - started)


def _wait(
    done: Callable[[], int],
    total: int,
    *,
    phase: str,
    timeout_s: float,
    report: Report,
    why: str,
) -> None:
    """Poll ``done()`` until it reaches ``total``, reporting progress, or fail after a timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        count = done()
        report(phase, count, total)
        if count >= total:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"{total - count} of {total} {why} (waited {timeout_s:.0f} s)")
        time.sleep(0.05)
