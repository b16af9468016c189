"""The simulated fleet is reproducible, and the agent's classifier recovers its truth."""

from __future__ import annotations

from datetime import UTC, date, datetime

from instrumetry.domain.classify import Classifier
from instrumetry.domain.intervals import derive, timeline
from instrumetry.domain.metrics import compute_usage
from instrumetry.domain.states import State
from sim.scenario import FleetSpec, build_fleet
from sim.truth import true_usage

SPEC = FleetSpec(instruments=14, days=7, first_day=date(2026, 3, 2), seed=7)
POLL_MS = 60_000


def test_same_seed_same_fleet() -> None:
    first, second = build_fleet(SPEC), build_fleet(SPEC)
    assert [vi.instrument for vi in first.instruments] == [
        vi.instrument for vi in second.instruments
    ]
    assert [vi.truth for vi in first.instruments] == [vi.truth for vi in second.instruments]


def test_truth_covers_the_period_without_gaps() -> None:
    fleet = build_fleet(SPEC)
    start_ms, end_ms = fleet.period_ms
    for vi in fleet.instruments:
        assert vi.truth[0].start_ms == start_ms
        assert vi.truth[-1].end_ms == end_ms
        for before, after in zip(vi.truth, vi.truth[1:], strict=False):
            assert before.end_ms == after.start_ms
            assert before.state is not after.state
        assert all(s.state is not State.UNKNOWN for s in vi.truth)


def test_nmr_is_never_switched_off() -> None:
    fleet = build_fleet(SPEC)
    nmr = [vi for vi in fleet.instruments if vi.archetype.kind == "nmr"]
    assert nmr
    for vi in nmr:
        assert all(s.state is not State.OFF for s in vi.truth)


def test_classifier_recovers_the_truth_within_a_poll_per_transition() -> None:
    """Measured on/running hours differ from the truth by at most one poll per transition."""
    fleet = build_fleet(SPEC)
    start_ms, end_ms = fleet.period_ms
    calendar = fleet.institutions[0].calendar
    for vi in fleet.instruments:
        classifier = Classifier(vi.instrument.thresholds)
        changes: list[tuple[datetime, State]] = []
        for now_ms in range(start_ms, end_ms, POLL_MS):
            transition = classifier.step(now_ms, vi.power_at(now_ms))
            if transition is not None:
                at = datetime.fromtimestamp(transition.at_ms / 1000, tz=UTC)
                changes.append((at, transition.to_state))
        measured = compute_usage(
            timeline(derive(changes), fleet.period, known_until=fleet.period[1]),
            fleet.period,
            calendar,
        )
        truth = true_usage(vi, fleet.period, calendar)
        slack_h = len(vi.truth) * POLL_MS / 3_600_000
        assert abs(measured.on_h - truth.on_h) <= slack_h, vi.instrument.id
        assert abs(measured.running_h - truth.running_h) <= slack_h, vi.instrument.id
        assert measured.unknown_h == 0
