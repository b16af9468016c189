"""The agent: poll the meter, classify, sign and chain transitions, store them, send them.

``AgentCore`` is the per-reading logic and reads no clock: it is fed
``(now_ms, power_w)``, so the simulator's fleet can drive thousands of
virtual agents on a virtual clock with the very code a real agent runs.
``run_agent`` wraps it in the real-time loop with a real meter and broker.
Order matters: an event is in the fsynced outbox before anything tries to
send it, so a crash between the two loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from agents.config import AgentConfig, ProbeConfig
from agents.keys import load_key
from agents.meter import MeterReader
from agents.outbox import Outbox
from agents.publisher import Publisher, wall_ms
from instrumetry.domain import chain, wire
from instrumetry.domain.classify import Classifier, Transition
from instrumetry.domain.combine import RunningIf
from instrumetry.domain.errors import ConfigError
from instrumetry.stopping import calling_on_stop_signals

log = logging.getLogger(__name__)

Reading = tuple[int, float | None, bool | None]
"""``(now_ms, power_w, process_running)``: see ``AgentCore.on_reading``."""


class Outlet(Protocol):
    """Where ``AgentCore`` hands its output; ``Publisher`` is the real one."""

    def pump(self, wait_s: float = 0.0) -> bool: ...

    def send_heartbeat(self, heartbeat: wire.Heartbeat) -> None: ...


class _PowerStats:
    """Min, mean and max of the readings since the last heartbeat."""

    __slots__ = ("high", "low", "samples", "total")

    def __init__(self) -> None:
        self.samples = 0
        self.total = 0.0
        self.low = float("inf")
        self.high = 0.0

    def add(self, power_w: float) -> None:
        self.samples += 1
        self.total += power_w
        self.low = min(self.low, power_w)
        self.high = max(self.high, power_w)


class AgentCore:
    """What the agent does with one meter reading, independent of real time.

    Each reading goes through the classifier; a completed transition becomes
    the next signed, chained event, is stored in the outbox and handed to the
    outlet. Every ``heartbeat_interval_s`` a heartbeat with the power
    statistics since the previous one goes out too.

    When the outbox is full, the last reserved slot records a transition to
    ``unknown`` and classification pauses (heartbeats then say ``unknown``)
    until acks make room; an ERROR is logged on entering that state and every
    ``FULL_REMINDER_MS`` while it lasts. Stored events are never dropped.
    """

    FULL_REMINDER_MS = 10 * 60_000

    def __init__(
        self,
        *,
        instrument: str,
        outbox: Outbox,
        classifier: Classifier,
        signer: Callable[[bytes], bytes],
        outlet: Outlet,
        heartbeat_interval_s: float,
    ) -> None:
        self.instrument = instrument
        self.outbox = outbox
        self.classifier = classifier
        self._signer = signer
        self._outlet = outlet
        self._heartbeat_ms = round(heartbeat_interval_s * 1000)
        self._head = outbox.head()
        self._stats = _PowerStats()
        self._heartbeat_due: int | None = None
        self._full_since: int | None = None
        self._full_reminded = 0

    def on_reading(
        self, now_ms: int, power_w: float | None, process_running: bool | None = None
    ) -> None:
        """Feed one reading at ``now_ms`` (``power_w`` is ``None`` if the meter failed).

        ``process_running`` is the PC probe's answer, if there is a probe.
        """
        self.on_readings([(now_ms, power_w, process_running)])

    def on_readings(self, readings: Iterable[Reading]) -> None:
        """Feed readings in time order as one step, as ``on_reading`` would one by one.

        Their events are stored in one outbox transaction, and only once it is
        committed does anything go out: the events, then the heartbeats that
        fell due (each computed at its own reading). The simulator's fleet feeds
        an agent an hour of readings at a time this way; a real agent one.
        """
        heartbeats: list[wire.Heartbeat] = []
        head = self._head
        stored = False
        try:
            with self.outbox.batch():
                for now_ms, power_w, process_running in readings:
                    stored |= self._step(now_ms, power_w, process_running)
                    if self._heartbeat_due is None:
                        self._heartbeat_due = now_ms + self._heartbeat_ms
                    elif now_ms >= self._heartbeat_due:
                        heartbeats.append(self.heartbeat(now_ms))
                        self._heartbeat_due = now_ms + self._heartbeat_ms
                    if power_w is not None:  # this reading opens the next heartbeat's period
                        self._stats.add(power_w)
        except BaseException:
            self._head = head  # nothing of this step was stored
            raise
        if stored:
            self._outlet.pump()
        for heartbeat in heartbeats:
            self._outlet.send_heartbeat(heartbeat)

    def _step(self, now_ms: int, power_w: float | None, process_running: bool | None) -> bool:
        """Classify one reading; add its transition, if any, to the outbox (True then)."""
        if self.outbox.full:
            transition = self._outbox_full(now_ms)
        else:
            if self._full_since is not None:
                log.warning(
                    "the outbox has room again after %.0f s: classifying again",
                    (now_ms - self._full_since) / 1000,
                )
                self._full_since = None
            transition = self.classifier.step(now_ms, power_w, process_running)
        if transition is None:
            return False
        event, self._head = chain.append(
            self._head,
            instrument=self.instrument,
            boot=self.outbox.boot,
            transition=transition,
            signer=self._signer,
        )
        self.outbox.add(event)
        return True

    def _outbox_full(self, now_ms: int) -> Transition | None:
        """Record ``unknown`` once with the reserved slot; remind loudly while it lasts."""
        if self._full_since is None:
            self._full_since = self._full_reminded = now_ms
            log.error(
                "OUTBOX FULL: %d events / %d bytes wait for the collector's ack (max %d / %d); "
                "the state is recorded as unknown from now until the collector acknowledges; "
                "no stored event is dropped",
                self.outbox.count(),
                self.outbox.size(),
                self.outbox.max_events,
                self.outbox.max_bytes,
            )
            return self.classifier.suspend(now_ms)
        if now_ms - self._full_reminded >= self.FULL_REMINDER_MS:
            self._full_reminded = now_ms
            log.error(
                "OUTBOX STILL FULL for %.0f min: %d events wait for the collector's ack",
                (now_ms - self._full_since) / 60_000,
                self.outbox.count(),
            )
        return None

    def heartbeat(self, now_ms: int) -> wire.Heartbeat:
        """The heartbeat for the readings since the last one; starts a new period."""
        stats, self._stats = self._stats, _PowerStats()
        measured = stats.samples > 0
        return wire.Heartbeat(
            v=wire.SCHEMA_VERSION,
            instrument=self.instrument,
            boot=self.outbox.boot,
            t=now_ms,
            state=self.classifier.state,
            last_seq=self._head.next_seq - 1,
            samples=stats.samples,
            power_min_w=round(stats.low, 3) if measured else None,
            power_mean_w=round(stats.total / stats.samples, 3) if measured else None,
            power_max_w=round(stats.high, 3) if measured else None,
        )


def run_agent(config: AgentConfig, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``), then say offline and disconnect.

    Stop signals are taken only on the main thread; callers on other threads
    pass ``stop`` instead.
    """
    stop = stop or threading.Event()

    def on_signal(name: str) -> None:
        log.info("received %s, stopping", name)
        stop.set()

    with calling_on_stop_signals(on_signal):  # before any thread starts
        _run(config, stop)


def _run(config: AgentConfig, stop: threading.Event) -> None:
    key = load_key(Path(config.key_file))
    bounds = config.outbox
    with Outbox(
        Path(config.state_dir), max_events=bounds.max_events, max_bytes=bounds.max_bytes
    ) as outbox:
        meter = MeterReader.from_config(config.meter)
        publisher = Publisher(config.broker, instrument=config.instrument_id, outbox=outbox)
        core = AgentCore(
            instrument=config.instrument_id,
            outbox=outbox,
            classifier=Classifier(
                config.thresholds.to_domain(),
                running_if=config.probe.running_if if config.probe else RunningIf.POWER,
            ),
            signer=key.sign,
            outlet=publisher,
            heartbeat_interval_s=config.heartbeat_interval_s,
        )
        log.info(
            "agent for %s started: boot %s, %d events pending, next seq %d",
            config.instrument_id,
            outbox.boot,
            outbox.count(),
            outbox.head().next_seq,
        )
        probe = _probe(config.probe)
        publisher.start()
        try:
            _loop(core, lambda: (meter.read_power(), probe()), publisher, config, stop)
        finally:
            publisher.close()
            meter.close()


def _probe(config: ProbeConfig | None) -> Callable[[], bool | None]:
    """The PC probe's question, or one that always answers "not checked"."""
    if config is None:
        return lambda: None
    try:
        from agents.probe import ProcessProbe  # noqa: PLC0415 (psutil only when configured)
    except ImportError:
        raise ConfigError(
            "probe: needs psutil; install it with `pip install instrumetry[probe]`"
        ) from None
    return ProcessProbe(config.processes, interval_s=config.interval_s).running


def _loop(
    core: AgentCore,
    sample: Callable[[], tuple[float | None, bool | None]],
    publisher: Publisher,
    config: AgentConfig,
    stop: threading.Event,
) -> None:
    """Poll ``sample`` (meter, probe) on the monotonic clock; between polls, serve the publisher.

    Waits are capped at half a second so a stop request is seen promptly,
    and shortened to the replay pace while a backlog is being sent.
    """
    interval_s = config.meter.poll_interval_s
    replay_pause_s = 1.0 / config.broker.replay_per_s
    next_poll = time.monotonic()
    throttled = False
    while not stop.is_set():
        if time.monotonic() >= next_poll:
            core.on_reading(wall_ms(), *sample())
            next_poll = max(next_poll + interval_s, time.monotonic())
        wait_s = min(max(0.0, next_poll - time.monotonic()), 0.5)
        if throttled:
            wait_s = min(wait_s, replay_pause_s)
        throttled = publisher.pump(wait_s=wait_s)
