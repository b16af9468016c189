"""Drive a fleet of virtual agents through simulated time, with the scenario's faults.

Each virtual agent runs the agent's own code (classification, outbox,
signing, publishing); the fleet replaces the clock and the meter, and makes
the scheduled faults happen: it stops an agent's publishing, kills and
restarts it, makes its meter fail, or sets its clock wrong.

Dense or sparse: a real agent reads its meter every poll. Most of those
readings cannot change anything: the classifier only moves when a reading
crosses a threshold, and the simulated meter's noise stays far from every
threshold (more than ten standard deviations). So in sparse mode an agent is
fed the readings of the same poll grid only around each true transition and
fault boundary (one poll before, until the dwell time and the unknown delay
have surely passed) and one every ``stride`` in between. The classifier then
produces exactly the transitions, at exactly the times, it would from the
dense stream (``tests/test_sim_fleet.py`` checks this); what changes is the
heartbeats' sample counts, and heartbeats come at most once per reading.
The noise is a pure function of (instrument, time), so a reading is the same
whichever mode asks for it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from sim.faults import Fault
from sim.scenario import Fleet, VirtualInstrument


class VirtualAgent(Protocol):
    """What the fleet needs of an agent: readings in, and the faults done to it."""

    def on_readings(self, readings: list[tuple[int, float | None]]) -> None:
        """Meter readings ``(now_ms, power_w)`` in time order, at the agent's clock times.

        One call is one step of the agent: the readings of a chunk of time up
        to the next fault action (the agent stores their events together).
        """

    def crash(self) -> None:
        """The process dies: whatever is not on disk is lost."""

    def restart(self) -> None:
        """The process starts again (new boot id, same outbox)."""

    def set_online(self, online: bool) -> None:
        """Whether the agent can reach the broker."""


Progress = Callable[[int, int], None]
"""Called with (simulated ms done, simulated ms in total)."""

Action = Literal["crash", "restart", "offline", "online", "unreachable", "reachable"]
_ACTIONS: dict[str, tuple[Action, Action]] = {
    "agent_crash": ("crash", "restart"),
    "agent_offline": ("offline", "online"),
    "meter_unreachable": ("unreachable", "reachable"),
}


@dataclass(frozen=True, slots=True)
class Pace:
    """How densely agents read: every poll, or sparsely with a reading every ``stride_ms``."""

    poll_ms: int = 60_000
    stride_ms: int | None = None  # None: dense, every poll

    def __post_init__(self) -> None:
        if self.poll_ms <= 0 or (self.stride_ms is not None and self.stride_ms < self.poll_ms):
            raise ValueError("poll_ms must be > 0 and stride_ms, if given, >= poll_ms")


DENSE = Pace()
"""A reading every minute, as a real agent polls."""


def run_fleet(
    fleet: Fleet,
    agents: Mapping[str, VirtualAgent],
    *,
    pace: Pace = DENSE,
    chunk_ms: int = 3_600_000,
    progress: Progress | None = None,
    between_chunks: Callable[[], None] | None = None,
    restart_broker: Callable[[], None] | None = None,
) -> int:
    """Feed every agent its readings and faults over the fleet's period; return readings fed.

    Time advances a chunk at a time for all agents (agents are independent,
    so their order inside a chunk does not matter); between chunks
    ``between_chunks`` runs (to serve the network) and due broker restarts
    happen, so their time is exact to a chunk. The last reading is taken at
    the very end of the period, so each agent has reported its state up to
    that instant.
    """
    start_ms, end_ms = fleet.period_ms
    restarts = list(fleet.faults.broker_restarts)
    if restarts and restart_broker is None:
        raise ValueError("the scenario restarts the broker, but no broker controller was given")
    drivers = [
        _Driver(vi, agents[vi.instrument.id], fleet.faults.of(vi.instrument.id), fleet, pace)
        for vi in fleet.instruments
    ]
    readings = 0
    until = start_ms
    while until <= end_ms:
        until = min(until + chunk_ms, end_ms + 1)
        readings += sum(driver.advance(until) for driver in drivers)
        while restarts and restarts[0] < until and restart_broker is not None:
            restarts.pop(0)
            restart_broker()
        if between_chunks is not None:
            between_chunks()
        if progress is not None:
            progress(min(until, end_ms) - start_ms, end_ms - start_ms)
        if until > end_ms:
            break
    return readings


class _Driver:
    """One agent's steps in time order: readings on the poll grid and fault actions."""

    def __init__(
        self,
        vi: VirtualInstrument,
        agent: VirtualAgent,
        faults: list[Fault],
        fleet: Fleet,
        pace: Pace,
    ) -> None:
        self.vi, self.agent = vi, agent
        self.end_ms = fleet.period_ms[1]
        self.skew_ms = sum(f.skew_ms for f in faults if f.kind == "clock_skew")
        actions = sorted(
            (t, 0, action)
            for f in faults
            if f.kind in _ACTIONS
            for t, action in zip((f.start_ms, f.end_ms), _ACTIONS[f.kind], strict=True)
        )
        reads = ((t, 1, None) for t in reading_times(vi, faults, fleet.period_ms, pace))
        self._steps: Iterator[tuple[int, int, Action | None]] = heapq.merge(actions, reads)
        self._next = next(self._steps, None)
        self._dead = False
        self._unreachable = False

    def advance(self, until_ms: int) -> int:
        """Run the steps before ``until_ms``; return the readings fed.

        Readings go to the agent together, up to each fault action and the end.
        """
        fed = 0
        readings: list[tuple[int, float | None]] = []
        while self._next is not None and self._next[0] < until_ms:
            t, _, action = self._next
            if action is not None:
                fed += self._feed(readings)
                readings = []
                self._act(action)
            elif not self._dead:
                power = None if self._unreachable else self.vi.power_at(min(t, self.end_ms - 1))
                readings.append((t + self.skew_ms, power))
            self._next = next(self._steps, None)
        return fed + self._feed(readings)

    def _feed(self, readings: list[tuple[int, float | None]]) -> int:
        if readings:
            self.agent.on_readings(readings)
        return len(readings)

    def _act(self, action: Action) -> None:
        if action == "crash":
            self._dead = True
            self.agent.crash()
        elif action == "restart":
            self._dead = False
            self.agent.restart()
        elif action in ("offline", "online"):
            self.agent.set_online(action == "online")
        else:
            self._unreachable = action == "unreachable"


def reading_times(
    vi: VirtualInstrument, faults: list[Fault], period_ms: tuple[int, int], pace: Pace
) -> Iterator[int]:
    """When ``vi``'s agent reads its meter (true time): the poll grid, or its sparse subset.

    Both include the end of the period, so the last reading reports the state
    up to that instant.
    """
    start_ms, end_ms = period_ms
    poll = pace.poll_ms
    last_k = (end_ms - start_ms - 1) // poll  # the last grid point before the end
    if pace.stride_ms is None:
        picked: Iterator[int] = iter(range(last_k + 1))
    else:
        thresholds = vi.instrument.thresholds
        settle = math.ceil(max(thresholds.min_dwell_s, thresholds.unknown_after_s) * 1000 / poll)
        boundaries = sorted(
            {s.start_ms for s in vi.truth[1:]}
            | {t for f in faults if f.kind in _ACTIONS for t in (f.start_ms, f.end_ms)}
        )
        windows = [
            ((b - start_ms) // poll - 1, -(-(b - start_ms) // poll) + settle + 1)
            for b in boundaries
        ]
        picked = _sparse(windows, last_k, pace.stride_ms // poll)
    for k in picked:
        yield start_ms + k * poll
    if start_ms + last_k * poll < end_ms:
        yield end_ms


def _sparse(windows: list[tuple[int, int]], last_k: int, stride_k: int) -> Iterator[int]:
    """Grid indices ``0..last_k``: every one inside a window, and every ``stride_k``-th."""
    emitted = -1
    for first, last in [*windows, (last_k + 1, last_k + 1)]:
        lo, hi = max(first, 0), min(last, last_k)
        stride = (emitted // stride_k + 1) * stride_k
        while stride < lo:
            yield stride
            emitted = stride
            stride += stride_k
        for k in range(max(lo, emitted + 1), hi + 1):
            yield k
            emitted = k
