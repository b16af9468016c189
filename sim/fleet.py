"""Drive a fleet of virtual agents through simulated time.

Each virtual agent runs the agent's own code (classification, outbox,
signing, publishing); the fleet only replaces the clock and the meter: at
every poll of simulated time it hands each agent the reading its virtual
meter would give. Time advances as fast as the agents keep up, which is how
a simulated week runs in about a minute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from sim.scenario import Fleet


class VirtualAgent(Protocol):
    """What the fleet needs of an agent: readings in, and a way to finish."""

    def on_reading(self, now_ms: int, power_w: float | None) -> None:
        """One meter reading at simulated time ``now_ms``."""


Progress = Callable[[int, int], None]
"""Called with (simulated ms done, simulated ms in total)."""


def run_fleet(
    fleet: Fleet,
    agents: Mapping[str, VirtualAgent],
    *,
    poll_ms: int = 60_000,
    progress: Progress | None = None,
) -> int:
    """Feed every agent one reading per poll over the fleet's period; return readings fed.

    The last reading is taken at the very end of the period, so each agent
    has reported its state up to that instant.
    """
    start_ms, end_ms = fleet.period_ms
    members = [(agents[vi.instrument.id], vi) for vi in fleet.instruments]
    readings = 0
    now_ms = start_ms
    while True:
        for agent, instrument in members:
            agent.on_reading(now_ms, instrument.power_at(min(now_ms, end_ms - 1)))
        readings += len(members)
        if progress is not None:
            progress(now_ms - start_ms, end_ms - start_ms)
        if now_ms >= end_ms:
            return readings
        now_ms = min(now_ms + poll_ms, end_ms)
