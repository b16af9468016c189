"""Composing a simulated fleet: the simulator's instruments, the agent's own code.

The simulator (``sim``) and the agent (``agents``) must not import each other,
so this module, part of the composition root, builds one real ``AgentCore``
with its outbox and MQTT publisher per virtual instrument (``FleetAgent``),
registers the fleet in the database, drives it through simulated time and
waits until the collector has acknowledged every event.

Each virtual agent keeps its own SQLite outbox, as a real agent does, but
shares an MQTT connection with up to ``AGENTS_PER_LINK`` others (see
``fleet_link`` for why, and for what that costs). For long runs, put
``work_dir`` on a tmpfs (``/dev/shm``): the outbox fsyncs every event, which
on a disk costs milliseconds and on tmpfs nothing, while the code path stays
the agent's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from agents.config import BrokerConfig
from instrumetry.cli.fleet_agent import FleetAgent
from instrumetry.cli.fleet_link import SharedLink
from instrumetry.domain.errors import ConfigError, ServiceError
from instrumetry.domain.registry import Agent
from sim.fleet import DENSE, Pace, run_fleet
from sim.scenario import Fleet
from sim.scenario_file import Scenario

AGENTS_PER_LINK = 250
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


def prepare(
    scenario: str,
    truth: Path,
    *,
    instruments: int | None = None,
    days: int | None = None,
    first_day: str | date | None = None,
    seed: int | None = None,
) -> tuple[Scenario, Fleet]:
    """Load a scenario (with overrides), build its fleet and write its truth and orders."""
    from sim.orders import make_orders
    from sim.scenario import build_fleet
    from sim.scenario_file import find_scenario, load_scenario
    from sim.truth_files import write_truth

    loaded = load_scenario(find_scenario(scenario))
    if isinstance(first_day, str):
        try:
            first_day = date.fromisoformat(first_day)
        except ValueError:
            raise ConfigError(f"--first-day: {first_day!r} is not a date (YYYY-MM-DD)") from None
    spec = replace(
        loaded.spec,
        instruments=instruments or loaded.spec.instruments,
        days=days or loaded.spec.days,
        first_day=first_day or loaded.spec.first_day,
        seed=loaded.spec.seed if seed is None else seed,
    )
    loaded = replace(loaded, spec=spec)
    fleet = build_fleet(spec)
    orders, labels = make_orders(fleet, loaded.orders, spec.seed)
    write_truth(
        truth, fleet, scenario=loaded.name, poll_s=loaded.poll_s, orders=orders, labels=labels
    )
    return loaded, fleet


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
    pace: Pace = DENSE,
    heartbeat_s: float = 900.0,
    drain_timeout_s: float = 180.0,
    report: Report,
    restart_broker: Callable[[], None] | None = None,
) -> FleetResult:
    """Register the fleet, run it against the broker, wait for every ack.

    ``restart_broker`` stops and starts the broker, for scenarios that
    schedule broker restarts (the CLI passes the dev stack's).
    """
    started = time.monotonic()
    keys = {vi.instrument.id: Ed25519PrivateKey.generate() for vi in fleet.instruments}
    register_fleet(fleet, database_url, keys)
    broker = BrokerConfig(url=mqtt_url, max_inflight=1000, replay_per_s=100_000.0)
    links = [SharedLink(broker) for _ in range(-(-len(fleet.instruments) // AGENTS_PER_LINK))]
    agents: dict[str, FleetAgent] = {}
    try:
        for link in links:  # before any outbox is opened: low descriptor numbers (fleet_link)
            link.start()
        _wait_links(links, mqtt_url)
        for n, vi in enumerate(fleet.instruments):
            agents[vi.instrument.id] = FleetAgent(
                vi.instrument,
                keys[vi.instrument.id],
                broker,
                links[n % len(links)],
                work_dir / vi.instrument.id,
                heartbeat_s=heartbeat_s,
            )
        for agent in agents.values():
            agent.start()
        _wait(
            lambda: _pump_all(agents.values()) and sum(a.connected for a in agents.values()),
            len(agents),
            phase="connect",
            timeout_s=30.0,
            report=report,
            why=f"agents could not connect to the broker at {mqtt_url}",
        )

        def broker_restart() -> None:
            assert restart_broker is not None
            before = [link.connects for link in links]
            restart_broker()
            # The simulation waits for every link to reconnect: a real broker is back soon.
            _wait_links(links, mqtt_url, after=before)

        pump = _Throttled(lambda: _pump_all(agents.values()), every_s=0.2)
        readings = run_fleet(
            fleet,
            agents,
            pace=pace,
            progress=lambda done, total: report("simulate", done, total),
            between_chunks=pump,
            restart_broker=broker_restart if restart_broker is not None else None,
        )
        end_ms = fleet.period_ms[1]
        for agent in agents.values():
            agent.set_online(True)  # whoever is still cut off gets through now, and replays
            skew_ms = fleet.faults.skew_ms(agent.instrument.id)
            agent.send_heartbeat(agent.core.heartbeat(end_ms + skew_ms))  # state holds to the end
        events = sum(agent.events() for agent in agents.values())
        _wait(
            lambda: (
                _pump_all(agents.values()) and events - sum(a.pending() for a in agents.values())
            ),
            events,
            phase="deliver",
            timeout_s=drain_timeout_s,
            report=report,
            why="events were not acknowledged: is the collector running?",
        )
    finally:
        for agent in agents.values():
            agent.close()
        for link in links:
            link.close()
    return FleetResult(readings, events, time.monotonic() - started)


def _wait_links(
    links: list[SharedLink],
    mqtt_url: str,
    *,
    after: list[int] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Wait until every link is connected (and has connected anew since ``after``)."""
    floor = after or [0] * len(links)
    deadline = time.monotonic() + timeout_s
    while not all(
        link.connected and link.connects > old for link, old in zip(links, floor, strict=True)
    ):
        if time.monotonic() > deadline:
            raise ServiceError(f"the fleet could not connect to the broker at {mqtt_url}")
        time.sleep(0.02)


def _pump_all(agents: Iterable[FleetAgent]) -> bool:
    """Let every agent take its acks and send what it may; always True (for chaining)."""
    for agent in agents:
        agent.pump()
    return True


class _Throttled:
    """Call ``action`` at most every ``every_s`` seconds of real time."""

    def __init__(self, action: Callable[[], object], every_s: float) -> None:
        self._action = action
        self._every_s = every_s
        self._last = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._action()


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
