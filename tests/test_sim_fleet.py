"""The fleet driver: sparse readings give the agent's classifier exactly the dense transitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from instrumetry.domain.classify import Classifier, Transition
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.states import State
from sim.faults import FaultSpec
from sim.fleet import Pace, reading_times, run_fleet
from sim.scenario import Fleet, FleetSpec, build_fleet

AT = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
SPEC = FleetSpec(
    instruments=14,
    days=7,
    first_day=date(2026, 3, 2),
    seed=11,
    faults=(
        FaultSpec("meter_unreachable", at=AT, hours=5, instruments=("nmr-0001", "sem-0002")),
        FaultSpec("agent_crash", hours=0.5, count=3),
        FaultSpec("agent_offline", hours=20, count=2),
        FaultSpec("clock_skew", skew_s=90, instruments=("xrd-0004",)),
    ),
)


class Recorder:
    """A virtual agent that keeps what the agent's classifier decides, across restarts."""

    def __init__(self, thresholds: Classifier) -> None:
        self.thresholds = thresholds.thresholds
        self.classifier = Classifier(self.thresholds)
        self.transitions: list[Transition] = []
        self.emitted_at: list[int] = []  # when each transition left the classifier
        self.log: list[str] = []
        self.last_ms = 0

    def on_readings(self, readings: list[tuple[int, float | None]]) -> None:
        for now_ms, power_w in readings:
            assert now_ms > self.last_ms
            self.last_ms = now_ms
            transition = self.classifier.step(now_ms, power_w)
            if transition is not None:
                self.transitions.append(transition)
                self.emitted_at.append(now_ms)

    def crash(self) -> None:
        self.log.append("crash")

    def restart(self) -> None:
        self.log.append("restart")
        self.classifier = Classifier(self.thresholds)

    def set_online(self, online: bool) -> None:
        self.log.append("online" if online else "offline")


def _run(fleet: Fleet, pace: Pace) -> tuple[dict[str, Recorder], int]:
    agents = {
        vi.instrument.id: Recorder(Classifier(vi.instrument.thresholds)) for vi in fleet.instruments
    }
    return agents, run_fleet(fleet, agents, pace=pace)


def test_sparse_readings_give_the_dense_transitions() -> None:
    fleet = build_fleet(SPEC)
    dense, dense_count = _run(fleet, Pace(60_000))
    sparse, sparse_count = _run(fleet, Pace(60_000, stride_ms=3_600_000))
    assert sparse_count < dense_count / 4
    for instrument, agent in dense.items():
        assert agent.transitions, instrument
        assert sparse[instrument].transitions == agent.transitions, instrument
        assert sparse[instrument].emitted_at == agent.emitted_at, instrument
        assert sparse[instrument].log == agent.log, instrument


def test_faults_happen_to_the_agents() -> None:
    fleet = build_fleet(SPEC)
    agents, _ = _run(fleet, Pace(60_000, stride_ms=900_000))
    assert sum(agent.log.count("crash") for agent in agents.values()) == 3
    assert sum(agent.log.count("restart") for agent in agents.values()) == 3
    assert sum(agent.log.count("offline") for agent in agents.values()) == 2
    start_ms = int(AT.timestamp() * 1000)
    for instrument in ("nmr-0001", "sem-0002"):
        unknown = [t for t in agents[instrument].transitions if t.to_state is State.UNKNOWN]
        assert [t.at_ms for t in unknown] == [start_ms]  # dated at the first failed read
    skewed = agents["xrd-0004"].transitions
    truth = [s.start_ms for s in fleet.instruments[3].truth]
    assert skewed[0].at_ms == truth[0] + 90_000


def test_sparse_reading_times_are_a_subset_of_the_grid_with_the_end() -> None:
    fleet = build_fleet(SPEC)
    vi = fleet.instruments[0]
    start_ms, end_ms = fleet.period_ms
    dense = list(reading_times(vi, [], fleet.period_ms, Pace(60_000)))
    sparse = list(reading_times(vi, [], fleet.period_ms, Pace(60_000, stride_ms=3_600_000)))
    assert dense[0] == sparse[0] == start_ms
    assert dense[-1] == sparse[-1] == end_ms
    assert sparse == sorted(set(sparse))
    assert set(sparse) <= set(dense)


def test_a_broker_restart_needs_a_controller() -> None:
    fleet = build_fleet(FleetSpec(instruments=2, days=1, faults=(FaultSpec("broker_restart"),)))
    agents = {
        vi.instrument.id: Recorder(Classifier(vi.instrument.thresholds)) for vi in fleet.instruments
    }
    with pytest.raises(ValueError, match="broker controller"):
        run_fleet(fleet, agents)
    restarts: list[int] = []
    run_fleet(fleet, agents, restart_broker=lambda: restarts.append(1))
    assert restarts == [1]


def test_a_fault_on_an_unknown_instrument_is_named() -> None:
    spec = FleetSpec(
        instruments=2, days=1, faults=(FaultSpec("agent_crash", hours=1, instruments=("nope",)),)
    )
    with pytest.raises(ConfigError, match=r"faults\[0\] \(agent_crash\): instruments: .*'nope'"):
        build_fleet(spec)


def test_shards_of_a_fleet_decide_what_the_whole_fleet_decides() -> None:
    """What ``sim fleet --workers N`` relies on: agents are independent of who else runs."""
    fleet = build_fleet(SPEC)
    whole, _ = _run(fleet, Pace(60_000, stride_ms=3_600_000))
    for n in range(3):
        shard = replace(fleet, instruments=fleet.instruments[n::3])
        part, _ = _run(shard, Pace(60_000, stride_ms=3_600_000))
        for instrument, agent in part.items():
            assert agent.transitions == whole[instrument].transitions, instrument
            assert agent.log == whole[instrument].log, instrument
