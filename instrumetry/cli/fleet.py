"""Composing a simulated fleet: the simulator's instruments, the agent's own code.

The simulator (``sim``) and the agent (``agents``) must not import each other,
so this module, part of the composition root, builds one real ``AgentCore``
with its outbox and MQTT publisher per virtual instrument (``FleetAgent``),
registers the fleet in the database, drives it through simulated time and
waits until the collector has acknowledged every event.

Each virtual agent keeps its own SQLite outbox, as a real agent does, but
shares an MQTT connection with up to ``AGENTS_PER_LINK`` others (see
``fleet_link`` for why, and for what that costs). The agents can be dealt out
to forked worker processes (``workers``); each worker keeps its agents at most
``MAX_BACKLOG`` unacknowledged events ahead of the collector. For long runs, put
``work_dir`` on a tmpfs (``/dev/shm``): the outbox fsyncs every event, which
on a disk costs milliseconds and on tmpfs nothing, while the code path stays
the agent's.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

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
MAX_BACKLOG = 2_000
"""Unacknowledged events a worker lets its connected agents run ahead of the collector.

Small enough that the collector's lag (these events and the heartbeats sent
alongside, about as many again, from every worker) stays well below the
agents' ack timeout (``BrokerConfig.ack_timeout_s``, 60 s): an agent that hears
no ack for that long resends what it has in flight, and every resend is one
more message for the collector. A broker restart, too, makes every agent
resend all it has pending. In a 2,000 x 7 day run (two workers, two broker
restarts) the collector counted 34,564 redelivered messages besides its
143,903 at 20,000 a worker, and 16,893 at 2,000. Large enough to keep the
collector's queue full between two pace checks.
"""
Report = Callable[[str, int, int], None]
"""Progress of a phase: (phase name, done, total)."""


PHASES = {"connect": "agents connecting", "simulate": "simulating", "deliver": "events acked"}


@contextmanager
def progress_bars(console: Console | None = None, every_s: float = 0.1) -> Iterator[Report]:
    """A ``Report`` that draws one progress bar per phase of ``simulate``.

    Drawn from the reports themselves (at most every ``every_s``), not from a
    refresh thread: ``simulate`` forks its workers, which wants no threads.
    """
    columns = (
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        tasks: dict[str, TaskID] = {}
        drawn = 0.0

        def report(phase: str, done: int, total: int) -> None:
            nonlocal drawn
            if phase not in tasks:
                tasks[phase] = progress.add_task(PHASES.get(phase, phase), total=total or 1)
            progress.update(tasks[phase], completed=done if total else 1, total=total or 1)
            if time.monotonic() - drawn >= every_s or done >= total:
                progress.refresh()
                drawn = time.monotonic()

        yield report


@dataclass(frozen=True, slots=True)
class FleetResult:
    readings: int
    events: int
    seconds: float
    simulated_s: float
    """Until every reading was fed; the rest of ``seconds`` is waiting for the collector's acks."""


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
        truth,
        fleet,
        scenario=loaded.name,
        poll_s=loaded.poll_s,
        heartbeat_s=loaded.heartbeat_s,
        orders=orders,
        labels=labels,
    )
    return loaded, fleet


def register_fleet(fleet: Fleet, database_url: str, keys: dict[str, Ed25519PrivateKey]) -> None:
    """Put the fleet's institutions, instruments and agents' public keys in the registry."""
    import psycopg

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
        try:
            registry.upsert_institutions(conn, fleet.institutions)
        except psycopg.errors.UndefinedTable:
            raise ServiceError(
                f"the database at {db.describe(database_url)} has no Instrumetry tables; "
                "run `instrumetry db migrate`"
            ) from None
        registry.upsert_instruments(conn, [vi.instrument for vi in fleet.instruments])
        registry.upsert_agents(conn, agents)


def default_workers() -> int:
    """One worker process per CPU where processes can be forked (Linux, macOS), else one."""
    return (os.cpu_count() or 1) if "fork" in multiprocessing.get_all_start_methods() else 1


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
    workers: int = 1,
    stop: threading.Event | None = None,
) -> FleetResult:
    """Register the fleet, run it against the broker, wait for every ack.

    ``restart_broker`` stops and starts the broker, for scenarios that
    schedule broker restarts (the CLI passes the dev stack's). With
    ``workers`` > 1 the agents are dealt out to that many forked processes
    (agents are independent: each process drives its share through the same
    simulated time, with its own MQTT links); they meet only at broker
    restarts. Fork only from a process that runs no other threads. Setting
    ``stop`` (from a signal, say) ends the run within a second with
    ``FleetStopped``; workers are terminated.
    """
    started = time.monotonic()
    shard = _Shard(
        broker=fleet_broker(mqtt_url),
        work_dir=work_dir,
        pace=pace,
        heartbeat_s=heartbeat_s,
        drain_timeout_s=drain_timeout_s,
        restarts=restart_broker is not None,
    )
    keys = {vi.instrument.id: Ed25519PrivateKey.generate() for vi in fleet.instruments}
    register_fleet(fleet, database_url, keys)
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError(f"--workers {workers}: worker processes need fork(), missing here")
    workers = max(1, min(workers, len(fleet.instruments)))
    if workers == 1:
        readings, events, simulated_at = shard.run(fleet, keys, report, restart_broker, stop)
    else:
        shards = [replace(fleet, instruments=fleet.instruments[n::workers]) for n in range(workers)]
        readings, events, simulated_at = _run_workers(
            shard, shards, keys, report, restart_broker=restart_broker, stop=stop
        )
    return FleetResult(readings, events, time.monotonic() - started, simulated_at - started)


def fleet_broker(mqtt_url: str) -> BrokerConfig:
    """How the fleet's links reach the broker, from ``mqtt://[user:password@]host:port``.

    A broker that wants logins gets the simulator account's
    (``instrumetry broker add-simulator``) from the URL, as the collector's
    comes in its own; the agents' settings keep the login apart from the URL,
    so messages that name the URL never show the password.
    """
    try:
        parts = urlsplit(mqtt_url)
        if parts.username is not None and not parts.password:
            raise ConfigError(
                f"broker URL: login {unquote(parts.username)!r} has no password "
                "(mqtt://USER:PASSWORD@host:port)"
            )
        return BrokerConfig(
            url=urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
            username=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
            max_inflight=1000,
            replay_per_s=100_000.0,
        )
    except ValueError as error:
        raise ConfigError(f"broker URL: {error}") from None


@dataclass(frozen=True, slots=True)
class _Shard:
    """How to run a share of the fleet's agents, in this process (``run``)."""

    broker: BrokerConfig
    work_dir: Path
    pace: Pace
    heartbeat_s: float
    drain_timeout_s: float
    restarts: bool

    def run(
        self,
        fleet: Fleet,
        keys: dict[str, Ed25519PrivateKey],
        report: Report,
        restart_broker: Callable[[], None] | None,
        stop: threading.Event | None = None,
    ) -> tuple[int, int, float]:
        """Run ``fleet``'s agents until the collector acked every event (or ``stop`` is set).

        Returns the readings fed, the events made and when (``time.monotonic``)
        the last reading was fed.
        """
        mqtt_url = self.broker.url
        links = [
            SharedLink(self.broker) for _ in range(-(-len(fleet.instruments) // AGENTS_PER_LINK))
        ]
        agents: dict[str, FleetAgent] = {}
        try:
            for link in links:  # before any outbox is opened: low descriptor numbers (fleet_link)
                link.start()
            _wait_links(links, mqtt_url)
            for n, vi in enumerate(fleet.instruments):
                agents[vi.instrument.id] = FleetAgent(
                    vi.instrument,
                    keys[vi.instrument.id],
                    self.broker,
                    links[n % len(links)],
                    self.work_dir / vi.instrument.id,
                    heartbeat_s=self.heartbeat_s,
                    start_ms=fleet.period_ms[0],
                )
            for agent in agents.values():
                agent.start()
            _wait(
                lambda: (
                    _pump_all(agents.values(), stop) and sum(a.connected for a in agents.values())
                ),
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

            keep_pace = partial(
                _keep_pace,
                agents.values(),
                stop,
                check=lambda: _refusals(links, mqtt_url),
                stall_s=self.drain_timeout_s,
            )
            pump = _Throttled(keep_pace, every_s=0.2)
            readings = run_fleet(
                fleet,
                agents,
                pace=self.pace,
                progress=lambda done, total: report("simulate", done, total),
                between_chunks=pump,
                restart_broker=broker_restart if restart_broker is not None else None,
            )
            simulated_at = time.monotonic()
            end_ms = fleet.period_ms[1]
            for agent in agents.values():
                agent.set_online(True)  # whoever is still cut off gets through now, and replays
                skew_ms = fleet.faults.skew_ms(agent.instrument.id)
                agent.send_heartbeat(
                    agent.core.heartbeat(end_ms + skew_ms)
                )  # state holds to the end
            events = sum(agent.events() for agent in agents.values())
            _wait(
                lambda: (
                    _pump_all(agents.values(), stop)
                    and _refusals(links, mqtt_url)
                    and events - sum(a.pending() for a in agents.values())
                ),
                events,
                phase="deliver",
                timeout_s=self.drain_timeout_s,
                report=report,
                why="events were not acknowledged: is the collector running?",
                every_s=0.5,  # acks wait in the publishers' queues; the collector wants the CPU
            )
        finally:
            for agent in agents.values():
                agent.close()
            for link in links:
                link.close()
        return readings, events, simulated_at


def _run_workers(
    shard: _Shard,
    shards: list[Fleet],
    keys: dict[str, Ed25519PrivateKey],
    report: Report,
    *,
    restart_broker: Callable[[], None] | None,
    stop: threading.Event | None,
) -> tuple[int, int, float]:
    """Run each of ``shards`` in a forked worker; sum up their progress and results.

    A broker restart happens once every worker has reached it (each asks, and
    waits for the answer): the restart's simulated time is the same for all.
    """
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe() for _ in shards]
    processes = [
        context.Process(
            target=_worker,
            args=(shard, fleet, keys, child),
            name=f"fleet-worker-{n}",
            daemon=True,
        )
        for n, (fleet, (_, child)) in enumerate(zip(shards, pipes, strict=True))
    ]
    gc.freeze()  # the fleet stays shared with the workers: no collector pass copies it
    try:
        for process in processes:
            process.start()
        for _, child in pipes:
            child.close()
        return _serve([parent for parent, _ in pipes], processes, report, restart_broker, stop)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        gc.unfreeze()


def _worker(
    shard: _Shard, fleet: Fleet, keys: dict[str, Ed25519PrivateKey], conn: Connection[Any, Any]
) -> None:
    """A worker process: run ``fleet``, talking to the parent over ``conn``.

    The parent alone answers Ctrl-C (the terminal sends it to every process);
    it ends a worker with SIGTERM, whose default action needs no Python code to
    run, so no thread of the worker can hold it up.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's may be Python code (the demo's)
    if hasattr(signal, "pthread_sigmask"):  # a parent that takes signals by sigwait blocked it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    sent = 0.0

    def report(phase: str, done: int, total: int) -> None:
        nonlocal sent
        if time.monotonic() - sent >= 0.1 or done >= total:  # the parent draws ~10 times/s
            conn.send(("progress", phase, done, total))
            sent = time.monotonic()

    def restart_broker() -> None:
        conn.send(("restart",))
        conn.recv()  # the parent restarted the broker

    outcome: tuple[object, ...]
    try:
        outcome = (
            "done",
            *shard.run(fleet, keys, report, restart_broker if shard.restarts else None),
        )
    except Exception as error:  # the parent raises it
        outcome = ("failed", str(error) if isinstance(error, ServiceError) else repr(error))
    conn.send(outcome)


def _serve(
    conns: list[Connection[Any, Any]],
    processes: Sequence[BaseProcess],
    report: Report,
    restart_broker: Callable[[], None] | None,
    stop: threading.Event | None,
) -> tuple[int, int, float]:
    """Serve the workers until each is done: progress, broker restarts, results."""
    progress: dict[str, list[tuple[int, int]]] = {}
    results: dict[int, tuple[int, int, float]] = {}
    at_restart: set[int] = set()
    while len(results) < len(conns):
        _check(stop)
        running = [conn for n, conn in enumerate(conns) if n not in results]
        for ready in wait(running, timeout=1.0):
            n = next(i for i, conn in enumerate(conns) if conn is ready)
            try:
                message = conns[n].recv()
            except EOFError:
                code = processes[n].exitcode
                raise ServiceError(f"fleet worker {n} died (exit code {code})") from None
            if message[0] == "progress":
                phase, done, total = message[1:]
                shares = progress.setdefault(phase, [(0, 0)] * len(conns))
                shares[n] = (done, total)
                report(phase, sum(d for d, _ in shares), sum(t for _, t in shares))
            elif message[0] == "restart":
                at_restart.add(n)
                if len(at_restart) == len(conns) and restart_broker is not None:
                    restart_broker()
                    for other in conns:
                        other.send(("restarted",))
                    at_restart.clear()
            elif message[0] == "done":
                results[n] = message[1:]
            else:
                raise ServiceError(f"fleet worker {n}: {message[1]}")
    readings, events, simulated_at = zip(*results.values(), strict=True)
    return sum(readings), sum(events), max(simulated_at)


def _wait_links(
    links: list[SharedLink],
    mqtt_url: str,
    *,
    after: list[int] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Wait until every link is connected (and has connected anew since ``after``).

    A login the broker refuses ends the wait at once: trying again cannot help.
    """
    floor = after or [0] * len(links)
    deadline = time.monotonic() + timeout_s
    while not all(
        link.connected and link.connects > old for link, old in zip(links, floor, strict=True)
    ):
        refused = next((link.refused for link in links if link.refused), None)
        if refused is not None:
            raise ServiceError(
                f"the broker at {mqtt_url} refused the fleet's login ({refused}); "
                "the simulator's account comes from `instrumetry broker add-simulator`"
            )
        if time.monotonic() > deadline:
            raise ServiceError(f"the fleet could not connect to the broker at {mqtt_url}")
        time.sleep(0.02)


class FleetStopped(Exception):
    """The run was asked to stop (``simulate``'s ``stop``) before it finished."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise FleetStopped("the fleet was stopped before every event was acknowledged")


def _pump_all(agents: Iterable[FleetAgent], stop: threading.Event | None = None) -> bool:
    """Let every agent take its acks and send what it may; always True (for chaining).

    Raises ``FleetStopped`` first if ``stop`` is set.
    """
    _check(stop)
    for agent in agents:
        agent.pump()
    return True


def _keep_pace(
    agents: Collection[FleetAgent],
    stop: threading.Event | None = None,
    backlog: int = MAX_BACKLOG,
    *,
    check: Callable[[], object] = lambda: None,
    stall_s: float = 180.0,
) -> None:
    """Serve the agents; while the collector lags ``backlog`` events behind, wait for it.

    Without this a long run outpaces the collector by millions of messages,
    more than the broker queues for it (``max_queued_messages``): it would
    drop heartbeats, and agents would resend events it still holds. Agents cut
    off from the broker are left out: their backlog waits for them. ``check``
    runs at each round (it raises to end the run); a collector that acks
    nothing for ``stall_s`` seconds ends it with ``ServiceError``.
    """
    _pump_all(agents, stop)
    waiting = sum(a.pending() for a in agents if a.online and a.alive)
    deadline = time.monotonic() + stall_s
    while waiting > backlog:
        # Each round pumps every agent: at 0.1 s, a third of a waiting worker's
        # CPU. The collector's queue holds seconds of work; a quarter is soon enough.
        time.sleep(0.25)
        _pump_all(agents, stop)
        check()
        now_waiting = sum(a.pending() for a in agents if a.online and a.alive)
        if now_waiting < waiting:
            deadline = time.monotonic() + stall_s
        elif time.monotonic() > deadline:
            raise ServiceError(
                f"{now_waiting} events were not acknowledged for {stall_s:.0f} s: "
                "is the collector running?"
            )
        waiting = now_waiting


def _refusals(links: Iterable[SharedLink], mqtt_url: str) -> bool:
    """True, or ``ServiceError`` if the broker refused one of the links' messages."""
    refused = next((link.publish_refused for link in links if link.publish_refused), None)
    if refused is not None:
        raise ServiceError(
            f"the broker at {mqtt_url} refused the fleet's messages ({refused}): its login "
            "must be the simulator's account (`instrumetry broker add-simulator`)"
        )
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
    every_s: float = 0.05,
) -> None:
    """Poll ``done()`` until it reaches ``total``, reporting progress.

    Fails once ``timeout_s`` pass without progress: a long run's backlog may
    take longer than that, a stalled one does not move.
    """
    deadline = time.monotonic() + timeout_s
    last = -1
    while True:
        count = done()
        report(phase, count, total)
        if count >= total:
            return
        if count > last:
            last, deadline = count, time.monotonic() + timeout_s
        elif time.monotonic() > deadline:
            raise ServiceError(
                f"{total - count} of {total} {why} (no progress for {timeout_s:.0f} s)"
            )
        time.sleep(every_s)
