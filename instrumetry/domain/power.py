"""Hourly power statistics folded from heartbeats.

Raw heartbeats are kept for a bounded window (a billion rows a year at 2,000
instruments); what outlasts them is one row per instrument and UTC hour,
additive so that each new heartbeat can be folded into its hour in any order:
the count of heartbeats, the samples behind their mean powers, the sum of
mean × samples (the hour's mean is that sum over the samples), and the
extremes. Each instrument's latest hour is kept apart while heartbeats still
arrive in it (``advance``), so the hours kept for good are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from instrumetry.domain import wire

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class HourPower:
    """One instrument's heartbeats of one UTC hour, folded."""

    instrument_id: str
    hour_ms: int
    """Epoch ms of the hour's start."""
    heartbeats: int
    samples: int
    """Samples behind the heartbeats that report a mean power."""
    power_sum_w: float
    """Sum of each such heartbeat's mean power times its samples."""
    power_min_w: float | None
    power_max_w: float | None

    def add(self, other: HourPower) -> HourPower:
        """Both folds as one; ``other`` must be of the same instrument and hour."""
        if (other.instrument_id, other.hour_ms) != (self.instrument_id, self.hour_ms):
            raise ValueError("only folds of the same instrument and hour add up")
        return HourPower(
            self.instrument_id,
            self.hour_ms,
            self.heartbeats + other.heartbeats,
            self.samples + other.samples,
            self.power_sum_w + other.power_sum_w,
            _extreme(min, self.power_min_w, other.power_min_w),
            _extreme(max, self.power_max_w, other.power_max_w),
        )

    @property
    def power_mean_w(self) -> float | None:
        """The samples' mean power; ``None`` without samples."""
        return self.power_sum_w / self.samples if self.samples else None


def hour_of(heartbeat: wire.Heartbeat) -> HourPower:
    """One heartbeat as the fold of its hour.

    A mean power counts with the heartbeat's samples; a heartbeat that reports
    a mean over no samples (a third-party agent) adds to the extremes only.
    """
    weighted = heartbeat.power_mean_w is not None
    samples = heartbeat.samples if weighted else 0
    return HourPower(
        heartbeat.instrument,
        heartbeat.t - heartbeat.t % HOUR_MS,
        1,
        samples,
        (heartbeat.power_mean_w or 0.0) * samples,
        heartbeat.power_min_w,
        heartbeat.power_max_w,
    )


def hourly(heartbeats: Iterable[wire.Heartbeat]) -> list[HourPower]:
    """The heartbeats folded by instrument and hour, in (instrument, hour) order."""
    folded: dict[tuple[str, int], HourPower] = {}
    for heartbeat in heartbeats:
        hour = hour_of(heartbeat)
        key = (hour.instrument_id, hour.hour_ms)
        folded[key] = folded[key].add(hour) if key in folded else hour
    return [folded[key] for key in sorted(folded)]


def advance(
    current: Mapping[str, HourPower], hours: Iterable[HourPower]
) -> tuple[list[HourPower], dict[str, HourPower]]:
    """Fold ``hours`` into the instruments' ``current`` hours; ``(settled, current)``.

    An instrument's current hour is the latest it has heartbeats of. A later
    hour replaces it, and it is settled; an earlier one (late heartbeats) is
    settled at once. Settled folds are for the kept hours, each (instrument,
    hour) once, in key order; the new current hours are those that changed.
    """
    kept: dict[str, HourPower] = {}
    settled: dict[tuple[str, int], HourPower] = {}

    def settle(hour: HourPower) -> None:
        key = (hour.instrument_id, hour.hour_ms)
        settled[key] = settled[key].add(hour) if key in settled else hour

    for hour in hours:
        now = kept.get(hour.instrument_id) or current.get(hour.instrument_id)
        if now is None or hour.hour_ms > now.hour_ms:
            if now is not None:
                settle(now)
            kept[hour.instrument_id] = hour
        elif hour.hour_ms == now.hour_ms:
            kept[hour.instrument_id] = now.add(hour)
        else:
            settle(hour)
    return [settled[key] for key in sorted(settled)], kept


def _extreme(
    pick: Callable[[float, float], float], a: float | None, b: float | None
) -> float | None:
    if a is None:
        return b
    return a if b is None else pick(a, b)
