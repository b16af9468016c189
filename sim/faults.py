"""Faults a scenario schedules: what goes wrong, to whom, and when.

A fault spec names a kind and either the instruments it hits or how many
(chosen by the scenario's seed), and either a start time or none (then each
hit instrument gets its own random start). Resolving the specs gives plain
``Fault`` records in epoch milliseconds, which both the fleet driver (to make
the fault happen) and the ground truth (to say what could be measured) read.

- ``agent_offline``: the agent keeps polling and classifying into its outbox
  but cannot publish; when it is back it replays the backlog.
- ``agent_crash``: the agent process dies and is restarted after ``hours``
  with a new boot id; its chain continues from the outbox.
- ``meter_unreachable``: every reading fails (``None``), so the agent
  reports ``unknown`` while the instrument goes on in its true state.
- ``clock_skew``: the agent's clock is off by ``skew_s`` for the whole
  period (a PC without time sync), so its event times are shifted.
- ``broker_restart``: the broker goes down and comes back; every agent and
  the collector reconnect. Needs a controller from the CLI.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from instrumetry.domain.errors import ConfigError

FaultKind = Literal[
    "agent_offline", "agent_crash", "meter_unreachable", "clock_skew", "broker_restart"
]
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One line of a scenario's fault schedule, before instruments and times are drawn."""

    kind: FaultKind
    at: datetime | None = None  # None: a random start per instrument
    hours: float = 0.0
    instruments: tuple[str, ...] = ()
    count: int = 0  # instruments drawn at random, in addition to ``instruments``
    skew_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault as it happens: ``[start_ms, end_ms)`` of true time; ``instrument`` None = broker."""

    kind: FaultKind
    start_ms: int
    end_ms: int
    instrument: str | None = None
    skew_ms: int = 0


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Every resolved fault, by instrument, plus the broker's restarts."""

    by_instrument: dict[str, list[Fault]] = field(default_factory=dict)
    broker_restarts: list[int] = field(default_factory=list)

    def of(self, instrument: str) -> list[Fault]:
        return self.by_instrument.get(instrument, [])

    def skew_ms(self, instrument: str) -> int:
        return sum(f.skew_ms for f in self.of(instrument) if f.kind == "clock_skew")

    def spans(self, instrument: str, kind: FaultKind) -> list[tuple[int, int]]:
        return [(f.start_ms, f.end_ms) for f in self.of(instrument) if f.kind == kind]


def resolve(
    specs: tuple[FaultSpec, ...],
    instrument_ids: list[str],
    period_ms: tuple[int, int],
    rng: random.Random,
) -> FaultPlan:
    """Draw instruments and start times for ``specs``; ``ConfigError`` names a bad spec."""
    plan = FaultPlan()
    start_ms, end_ms = period_ms
    known = set(instrument_ids)
    for index, spec in enumerate(specs):
        where = f"faults[{index}] ({spec.kind})"
        if spec.kind == "broker_restart":
            plan.broker_restarts.append(_start(spec, period_ms, rng, where))
            continue
        unknown = [i for i in spec.instruments if i not in known]
        if unknown:
            raise ConfigError(f"{where}: instruments: no instrument has id {unknown[0]!r}")
        others = [i for i in instrument_ids if i not in spec.instruments]
        if spec.count > len(others):
            raise ConfigError(
                f"{where}: count: {spec.count} exceeds the {len(others)} instruments left"
            )
        hit = [*spec.instruments, *rng.sample(others, spec.count)]
        for instrument in hit:
            faults = plan.by_instrument.setdefault(instrument, [])
            if spec.kind == "clock_skew":
                faults.append(
                    Fault(spec.kind, start_ms, end_ms, instrument, round(spec.skew_s * 1000))
                )
                continue
            span_ms = round(spec.hours * HOUR_MS)
            for _ in range(20):  # a random start that collides with another fault is redrawn
                first = _start(spec, period_ms, rng, where, span_ms=span_ms)
                fault = Fault(spec.kind, first, min(end_ms, first + span_ms), instrument)
                if spec.at is not None or not any(_overlap(fault, f) for f in faults):
                    break
            faults.append(fault)
    for faults in plan.by_instrument.values():
        faults.sort(key=lambda f: f.start_ms)
        _check_disjoint(faults)
    plan.broker_restarts.sort()
    return plan


def _start(
    spec: FaultSpec, period_ms: tuple[int, int], rng: random.Random, where: str, span_ms: int = 0
) -> int:
    start_ms, end_ms = period_ms
    if spec.at is None:
        return rng.randrange(start_ms, max(start_ms + 1, end_ms - span_ms))
    at_ms = int(spec.at.astimezone(UTC).timestamp() * 1000)
    if not start_ms <= at_ms < end_ms:
        raise ConfigError(f"{where}: at: {spec.at.isoformat()} is outside the simulated period")
    return at_ms


def _overlap(a: Fault, b: Fault) -> bool:
    timed = a.kind != "clock_skew" and b.kind != "clock_skew"
    return timed and a.start_ms < b.end_ms and b.start_ms < a.end_ms


def _check_disjoint(faults: list[Fault]) -> None:
    """Agent-side faults of one instrument must not overlap: their effects would be ambiguous."""
    timed = [f for f in faults if f.kind != "clock_skew"]
    for before, after in itertools.pairwise(timed):
        if after.start_ms < before.end_ms:
            raise ConfigError(
                f"faults: {before.kind} and {after.kind} overlap on instrument "
                f"{before.instrument!r}; give them separate times"
            )
