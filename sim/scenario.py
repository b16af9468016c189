"""A seeded fleet of virtual instruments and each one's true timeline.

Everything is derived from one seed, so a scenario is reproducible: the same
seed gives the same fleet, the same bookings and the same ground truth. Times
are epoch milliseconds, the unit the agent's classifier works in.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span, TimeSet, normalize, subtract
from sim.archetypes import ARCHETYPES, Archetype

INSTITUTIONS = (
    ("city-univ", "城市大学 (City University)"),
    ("inst-tech", "理工学院 (Institute of Technology)"),
    ("med-school", "医学院 (Medical School)"),
    ("materials-lab", "新材料研究中心 (Materials Research Centre)"),
)
OFF_LEAKAGE_W = 0.4  # what a meter reads on a switched-off instrument


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What to simulate: how many instruments, which local days, which seed."""

    instruments: int = 50
    days: int = 7
    first_day: date = date(2026, 1, 5)
    tz: str = "Asia/Shanghai"
    seed: int = 1
    broken_share: float = 0.04  # instruments that are never switched on
    weekend_session_chance: float = 0.1


@dataclass(frozen=True, slots=True)
class Segment:
    """The true state of an instrument over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    state: State


class VirtualInstrument:
    """One simulated instrument: its registry entry, habits and true timeline."""

    def __init__(
        self, instrument: Instrument, archetype: Archetype, truth: list[Segment], seed: int
    ) -> None:
        self.instrument = instrument
        self.archetype = archetype
        self.truth = truth
        self._starts = [s.start_ms for s in truth]
        self._noise = random.Random(seed)

    def state_at(self, t_ms: int) -> State:
        """The true state at ``t_ms`` (inside the simulated period)."""
        return self.truth[bisect.bisect_right(self._starts, t_ms) - 1].state

    def power_at(self, t_ms: int) -> float:
        """What a meter reads at ``t_ms``: the state's level plus meter noise."""
        state = self.state_at(t_ms)
        if state is State.RUNNING:
            level = self.archetype.running_w
        elif state is State.STANDBY:
            level = self.archetype.standby_w
        else:
            level = OFF_LEAKAGE_W
        return max(0.0, self._noise.gauss(level, 0.03 * level + 0.2))


@dataclass(frozen=True, slots=True)
class Fleet:
    """A simulated platform: institutions, instruments and the period simulated."""

    institutions: list[Institution]
    instruments: list[VirtualInstrument]
    period: Span

    @property
    def period_ms(self) -> tuple[int, int]:
        return _ms(self.period[0]), _ms(self.period[1])


def build_fleet(spec: FleetSpec) -> Fleet:
    """The fleet of ``spec``: reproducible from its seed."""
    rng = random.Random(spec.seed)
    calendar = WorkingCalendar(tz=spec.tz)
    institutions = [Institution(iid, name, calendar) for iid, name in INSTITUTIONS]
    start = calendar.day_span(spec.first_day)[0]
    end = calendar.day_span(spec.first_day + timedelta(days=spec.days - 1))[1]
    instruments = []
    for n in range(spec.instruments):
        archetype = ARCHETYPES[n % len(ARCHETYPES)]
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
        powered, running = ([], []) if broken else _habits(archetype, calendar, spec, rng)
        truth = _segments((start, end), powered, running, archetype.always_on and not broken)
        instruments.append(VirtualInstrument(instrument, archetype, truth, rng.randrange(2**32)))
    return Fleet(institutions, instruments, (start, end))


def _habits(
    archetype: Archetype, calendar: WorkingCalendar, spec: FleetSpec, rng: random.Random
) -> tuple[TimeSet, TimeSet]:
    """Powered and running time from bookings: sessions of prep, run, post-processing."""
    powered: list[Span] = []
    running: list[Span] = []
    for offset in range(spec.days):
        day = spec.first_day + timedelta(days=offset)
        if not calendar.is_working_day(day) and rng.random() > spec.weekend_session_chance:
            continue
        midnight = calendar.day_span(day)[0]
        cursor = midnight + timedelta(hours=8, minutes=rng.uniform(15, 120))
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
    return normalize(powered), normalize(running)


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
