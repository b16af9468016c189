"""Virtual instruments and the power meters that measure them.

A virtual instrument follows a repeating schedule of power levels (off, then
standby, then a run, ...), so the true state at any moment is known and the
numbers the platform computes can be checked against it. Its meter adds the
noise a real meter shows, which is what the agent's hysteresis and dwell time
exist for. Time is the caller's (``now`` in epoch seconds), scaled by an
acceleration factor, so a day of instrument use can be replayed in minutes.
A meter takes any power function, so other virtual instruments (the fleet's)
can be served over Modbus too.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from instrumetry.domain.errors import ConfigError
from instrumetry.domain.registers import RegisterMap, register_map

FailMode = Literal["no_reply", "exception", "corrupt"]
"""How a failing meter misbehaves: it stays silent, answers with a Modbus exception,
or (on a serial line) answers with a bad CRC."""

MAINS_V = 230.0


@dataclass(frozen=True, slots=True)
class Segment:
    """``watts`` drawn for ``duration_s`` seconds of virtual time."""

    duration_s: float
    watts: float


DEFAULT_SEGMENTS = (
    Segment(120.0, 0.0),  # off
    Segment(60.0, 40.0),  # powered on, warming up
    Segment(300.0, 900.0),  # measuring
    Segment(90.0, 45.0),  # post-processing, idle
    Segment(240.0, 850.0),  # a second run
    Segment(60.0, 40.0),  # idle
    Segment(180.0, 0.0),  # off again
)
"""A compressed instrument day: two runs between standby and off periods."""


class Schedule:
    """A repeating sequence of power segments."""

    __slots__ = ("_ends", "period_s", "segments")

    def __init__(self, segments: Sequence[Segment] = DEFAULT_SEGMENTS) -> None:
        if not segments:
            raise ConfigError("schedule: needs at least one segment")
        for segment in segments:
            if not (segment.duration_s > 0 and segment.watts >= 0):
                raise ConfigError(f"schedule: segment {segment} needs duration_s > 0, watts >= 0")
        self.segments = tuple(segments)
        self._ends = list(itertools.accumulate(s.duration_s for s in self.segments))
        self.period_s = self._ends[-1]

    def watts_at(self, elapsed_s: float) -> float:
        """The power drawn ``elapsed_s`` virtual seconds after the schedule started."""
        position = math.fmod(elapsed_s, self.period_s)
        if position < 0:
            position += self.period_s
        index = bisect.bisect_right(self._ends, position)
        return self.segments[min(index, len(self.segments) - 1)].watts


@dataclass(frozen=True, slots=True)
class Readings:
    """What a meter shows at one moment, in SI units."""

    voltage_v: float
    current_a: float
    power_w: float


class ScheduledInstrument:
    """A virtual instrument that plays ``schedule`` over and over.

    Virtual time runs ``acceleration`` times faster than ``now`` (epoch
    seconds) from ``start``, shifted by ``offset_s`` so instruments sharing a
    schedule do not switch in lockstep.
    """

    __slots__ = ("acceleration", "offset_s", "schedule", "start")

    def __init__(
        self,
        schedule: Schedule | None = None,
        *,
        start: float = 0.0,
        acceleration: float = 1.0,
        offset_s: float = 0.0,
    ) -> None:
        if not acceleration > 0:
            raise ConfigError(f"acceleration must be > 0, got {acceleration}")
        self.schedule = schedule or Schedule()
        self.start = start
        self.acceleration = acceleration
        self.offset_s = offset_s

    def power_w(self, now: float) -> float:
        """The ground truth: what the instrument draws at ``now``."""
        return self.schedule.watts_at((now - self.start) * self.acceleration + self.offset_s)


class VirtualMeter:
    """A meter of model ``model`` on an instrument drawing ``power_w(now)`` watts.

    Any power function will do (a ``ScheduledInstrument``'s, or a simulated
    fleet's ground truth). The meter adds gaussian noise with a standard
    deviation of ``noise_w`` plus ``noise_ratio`` of the true power. A custom
    ``registers`` map replaces the model's. Set ``fail`` to make it misbehave.
    """

    __slots__ = ("_rng", "fail", "map", "noise_ratio", "noise_w", "power_w")

    def __init__(
        self,
        power_w: Callable[[float], float],
        *,
        model: str = "sdm120",
        registers: RegisterMap | None = None,
        noise_w: float = 0.5,
        noise_ratio: float = 0.02,
        seed: int | None = None,
    ) -> None:
        self.power_w = power_w
        self.map: RegisterMap = registers or register_map(model)
        self.noise_w = noise_w
        self.noise_ratio = noise_ratio
        self.fail: FailMode | None = None
        self._rng = random.Random(seed)

    def readings(self, now: float) -> Readings:
        """What the meter shows at ``now``: the true power plus measurement noise."""
        truth = self.power_w(now)
        power = max(0.0, self._rng.gauss(truth, self.noise_w + self.noise_ratio * truth))
        voltage = self._rng.gauss(MAINS_V, 1.0)
        return Readings(voltage_v=voltage, current_a=power / voltage, power_w=power)


def meter_bank(
    units: int,
    *,
    model: str = "sdm120",
    start: float = 0.0,
    acceleration: float = 1.0,
    seed: int = 1,
    schedule: Schedule | None = None,
) -> dict[int, VirtualMeter]:
    """``units`` meters keyed by unit id 1..N, each on its own instrument.

    The instruments share ``schedule`` but start at random points of it, and
    each meter has its own noise; everything follows from ``seed``.
    """
    schedule = schedule or Schedule()
    rng = random.Random(seed)
    return {
        unit: VirtualMeter(
            ScheduledInstrument(
                schedule,
                start=start,
                acceleration=acceleration,
                offset_s=rng.uniform(0, schedule.period_s),
            ).power_w,
            model=model,
            seed=rng.randrange(2**32),
        )
        for unit in range(1, units + 1)
    }
