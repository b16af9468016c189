"""A seeded fleet of virtual instruments and each one's true timeline.

Everything is derived from one seed, so a scenario is reproducible: the same
seed gives the same fleet, the same bookings and the same ground truth. Times
are epoch milliseconds, the unit the agent's classifier works in.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span, TimeSet, normalize, subtract
from sim import faults
from sim.archetypes import ARCHETYPES, Archetype

INSTITUTIONS = (
    Institution("city-univ", "城市大学 (City University)"),
    Institution("inst-tech", "理工学院 (Institute of Technology)"),
    Institution("med-school", "医学院 (Medical School)"),
    Institution("materials-lab", "新材料研究中心 (Materials Research Centre)"),
)
OFF_LEAKAGE_W = 0.4  # what a meter reads on a switched-off instrument


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to simulate: institutions, how many instruments of which kinds, which days, faults.

    ``mix`` weighs archetype kinds (all equal if empty); instruments are dealt
    out by smooth weighted round robin, so the shares are exact and equal
    weights give the archetypes in turn. The period runs from local midnight
    of ``first_day`` in the first institution's time zone.
    """

    instruments: int = 50
    days: int = 7
    first_day: date = date(2026, 1, 5)
    seed: int = 1
    broken_share: float = 0.04  # instruments that are never switched on
    weekend_session_chance: float = 0.1
    institutions: tuple[Institution, ...] = INSTITUTIONS
    mix: tuple[tuple[str, float], ...] = ()
    faults: tuple[faults.FaultSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Segment:
    """The true state of an instrument over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    state: State


class VirtualInstrument:
    """One simulated instrument: its registry entry, habits and true timeline."""

    def __init__(
        self,
        instrument: Instrument,
        archetype: Archetype,
        truth: list[Segment],
        seed: int,
        sessions: TimeSet,
    ) -> None:
        self.instrument = instrument
        self.archetype = archetype
        self.truth = truth
        self.sessions: TimeSet = list(sessions)
        """Bookings that became use: each from power-on to the end of post-processing."""
        self._starts = [s.start_ms for s in truth]
        self._seed = seed

    def state_at(self, t_ms: int) -> State:
        """The true state at ``t_ms`` (inside the simulated period)."""
        return self.truth[bisect.bisect_right(self._starts, t_ms) - 1].state

    def segments_between(self, start_ms: int, end_ms: int) -> list[Segment]:
        """The true segments that overlap ``[start_ms, end_ms)``."""
        first = max(0, bisect.bisect_right(self._starts, start_ms) - 1)
        last = bisect.bisect_left(self._starts, end_ms)
        return self.truth[first:last]

    def is_off_throughout(self, start_ms: int, end_ms: int) -> bool:
        return all(s.state is State.OFF for s in self.segments_between(start_ms, end_ms))

    def power_at(self, t_ms: int) -> float:
        """What a meter reads at ``t_ms``: the state's level plus meter noise.

        The noise is a pure function of the instrument and the time, so a
        reading does not depend on which other readings were taken before it
        (the fleet's sparse mode relies on that).
        """
        state = self.state_at(t_ms)
        if state is State.RUNNING:
            level = self.archetype.running_w
        elif state is State.STANDBY:
            level = self.archetype.standby_w
        else:
            level = OFF_LEAKAGE_W
        return max(0.0, level + _gauss(self._seed, t_ms) * (0.03 * level + 0.2))


def _gauss(seed: int, t_ms: int) -> float:
    """A standard normal number determined by ``(seed, t_ms)`` (Box-Muller on splitmix64)."""
    first = _mix(seed ^ t_ms)
    second = _mix(first)
    u1 = ((first >> 11) + 1) / 2.0**53
    u2 = (second >> 11) / 2.0**53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_MASK64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Fleet:
    """A simulated platform: institutions, instruments and the period simulated."""

    institutions: list[Institution]
    instruments: list[VirtualInstrument]
    period: Span
    faults: faults.FaultPlan = field(default_factory=faults.FaultPlan)

    @property
    def period_ms(self) -> tuple[int, int]:
        return _ms(self.period[0]), _ms(self.period[1])


def build_fleet(spec: FleetSpec) -> Fleet:
    """The fleet of ``spec``: reproducible from its seed."""
    rng = random.Random(spec.seed)
    institutions = list(spec.institutions)
    calendar = institutions[0].calendar
    start = calendar.day_span(spec.first_day)[0]
    end = calendar.day_span(spec.first_day + timedelta(days=spec.days - 1))[1]
    instruments = []
    for n, archetype in enumerate(_deal(spec)):
        institution = institutions[rng.randrange(len(institutions))]
        instrument = Instrument(
            id=f"{archetype.kind}-{n + 1:04d}",
            institution_id=institution.id,
            name=f"{archetype.name} #{n + 1}",
            model=archetype.model,
            category=archetype.category,
            thresholds=archetype.thresholds,
        )
        broken = rng.random() < spec.broken_share
        powered, running, sessions = (
            ([], [], []) if broken else _habits(archetype, institution.calendar, spec, rng)
        )
        truth = _segments((start, end), powered, running, archetype.always_on and not broken)
        instruments.append(
            VirtualInstrument(instrument, archetype, truth, rng.randrange(2**32), sessions)
        )
    period_ms = (_ms(start), _ms(end))
    plan = faults.resolve(
        spec.faults, [vi.instrument.id for vi in instruments], period_ms, random.Random(spec.seed)
    )
    return Fleet(institutions, instruments, (start, end), plan)


def _deal(spec: FleetSpec) -> list[Archetype]:
    """``spec.instruments`` archetypes in the proportions of ``spec.mix`` (smooth round robin)."""
    weights = dict(spec.mix) or {a.kind: 1.0 for a in ARCHETYPES}
    kinds = [a for a in ARCHETYPES if weights.get(a.kind, 0) > 0]
    total = sum(weights[a.kind] for a in kinds)
    current = dict.fromkeys((a.kind for a in kinds), 0.0)
    dealt = []
    for _ in range(spec.instruments):
        for archetype in kinds:
            current[archetype.kind] += weights[archetype.kind]
        chosen = max(kinds, key=lambda a: current[a.kind])
        current[chosen.kind] -= total
        dealt.append(chosen)
    return dealt


def _habits(
    archetype: Archetype, calendar: WorkingCalendar, spec: FleetSpec, rng: random.Random
) -> tuple[TimeSet, TimeSet, TimeSet]:
    """Powered and running time from bookings: sessions of prep, run, post-processing."""
    powered: list[Span] = []
    running: list[Span] = []
    for offset in range(spec.days):
        day = spec.first_day + timedelta(days=offset)
        if not calendar.is_working_day(day) and rng.random() > spec.weekend_session_chance:
            continue
        midnight = calendar.day_span(day)[0]
        cursor = midnight + timedelta(hours=8, minutes=rng.uniform(15, 120))
        if powered and cursor < powered[-1][1]:  # still on from yesterday: that session goes on
            cursor = powered[-1][1] + timedelta(minutes=rng.uniform(20, 150))
        day_close = midnight + timedelta(hours=19)
        sessions = rng.randint(*archetype.sessions_per_day)
        for index in range(sessions):
            if cursor >= day_close:
                break
            prep = timedelta(minutes=rng.uniform(*archetype.prep_minutes))
            run = timedelta(hours=rng.uniform(*archetype.run_hours))
            post = timedelta(minutes=rng.uniform(*archetype.post_minutes))
            if index == sessions - 1 and rng.random() < archetype.overnight_run_chance:
                run += timedelta(hours=rng.uniform(6, 14))
            run_start = cursor + prep
            running.append((run_start, run_start + run))
            session_end = run_start + run + post
            if rng.random() < archetype.left_on_chance:
                session_end = max(session_end, midnight + timedelta(days=1, hours=8))
            powered.append((cursor, session_end))
            cursor = session_end + timedelta(minutes=rng.uniform(20, 150))
    return normalize(powered), normalize(running), powered


def _segments(period: Span, powered: TimeSet, running: TimeSet, always_on: bool) -> list[Segment]:
    """A contiguous cover of ``period`` by true states."""
    on = normalize([period] if always_on else powered)
    spans: list[tuple[Span, State]] = [(s, State.RUNNING) for s in normalize(running)]
    spans += [(s, State.STANDBY) for s in subtract(on, normalize(running))]
    spans += [(s, State.OFF) for s in subtract([period], on)]
    segments = []
    for (first, last), state in sorted(spans):
        start, end = max(first, period[0]), min(last, period[1])
        if start < end:
            segments.append(Segment(_ms(start), _ms(end), state))
    return segments


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
