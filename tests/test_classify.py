"""Properties of the classifier: no flapping, prompt steps, unknown is never off."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.classify import Classifier, Thresholds, Transition
from instrumetry.domain.states import State

LEVELS = {State.OFF: 0.0, State.STANDBY: 40.0, State.RUNNING: 900.0}
"""A power well inside each state's band, for the default-like thresholds below."""

thresholds_st = st.builds(
    Thresholds,
    standby_w=st.just(5.0),
    run_w=st.just(100.0),
    hysteresis_w=st.floats(0.5, 4.5),
    min_dwell_s=st.floats(0, 120, allow_subnormal=False),  # dwell is set in seconds
    unknown_after_s=st.floats(0, 300, allow_subnormal=False),
)
poll_ms_st = st.integers(200, 10_000)


def feed(classifier: Classifier, readings: list[tuple[int, float | None]]) -> list[Transition]:
    transitions = []
    for now_ms, power in readings:
        transition = classifier.step(now_ms, power)
        if transition is not None:
            transitions.append(transition)
    return transitions


@given(
    thresholds=thresholds_st,
    poll_ms=poll_ms_st,
    edge=st.sampled_from(["standby", "run"]),
    band=st.lists(st.floats(-1, 1), min_size=1, max_size=300),
)
def test_noise_within_the_hysteresis_band_never_flaps(
    thresholds: Thresholds, poll_ms: int, edge: str, band: list[float]
) -> None:
    threshold = thresholds.standby_w if edge == "standby" else thresholds.run_w
    powers = [threshold + noise * thresholds.hysteresis_w for noise in band]
    transitions = feed(Classifier(thresholds), [(i * poll_ms, p) for i, p in enumerate(powers)])

    # Leaving "unknown" is one transition; the band then allows at most one more,
    # since once above the threshold the power never falls below the lower edge.
    assert len(transitions) <= 2
    assert transitions[0].from_state is State.UNKNOWN
    for earlier, later in itertools.pairwise(transitions[1:]):
        assert later.at_ms - earlier.at_ms >= thresholds.min_dwell_s * 1000


@given(
    thresholds=thresholds_st,
    poll_ms=poll_ms_st,
    powers=st.lists(st.floats(0, 2000), min_size=1, max_size=300),
)
def test_any_noise_keeps_known_states_at_least_the_dwell_time(
    thresholds: Thresholds, poll_ms: int, powers: list[float]
) -> None:
    transitions = feed(Classifier(thresholds), [(i * poll_ms, p) for i, p in enumerate(powers)])

    known = [t for t in transitions if t.from_state is not State.UNKNOWN]
    for earlier, later in itertools.pairwise(known):
        assert later.at_ms - earlier.at_ms >= thresholds.min_dwell_s * 1000


@given(
    thresholds=thresholds_st,
    poll_ms=poll_ms_st,
    before=st.sampled_from(list(LEVELS)),
    after=st.sampled_from(list(LEVELS)),
    step_ms=st.integers(1, 600_000),  # the first reading, at 0, shows `before`
    noise=st.lists(st.floats(-1, 1), min_size=1, max_size=50),
)
def test_a_clean_step_is_seen_within_one_poll_plus_the_dwell(
    *,
    thresholds: Thresholds,
    poll_ms: int,
    before: State,
    after: State,
    step_ms: int,
    noise: list[float],
) -> None:
    def power(now_ms: int) -> float:
        return LEVELS[before if now_ms < step_ms else after]

    classifier = Classifier(thresholds)
    # Readings come once a poll, so the dwell is served in whole polls.
    dwell_polls = math.ceil(thresholds.min_dwell_s * 1000 / poll_ms)
    deadline_ms = step_ms + poll_ms + dwell_polls * poll_ms
    readings: list[tuple[int, float | None]] = []
    now_ms = 0
    while now_ms <= deadline_ms + poll_ms:
        jitter = noise[len(readings) % len(noise)] * 0.4  # stays inside every band
        readings.append((now_ms, max(0.0, power(now_ms) + jitter)))
        now_ms += poll_ms
    committed: list[tuple[int, Transition]] = []
    for at_ms, watts in readings:
        transition = classifier.step(at_ms, watts)
        if transition is not None:
            committed.append((at_ms, transition))

    assert classifier.state is after
    if before is not after:
        commit_ms, step = committed[-1]
        assert (step.from_state, step.to_state) == (before, after)
        assert step_ms <= step.at_ms < step_ms + poll_ms  # dated at the first reading showing it
        assert commit_ms < deadline_ms


@given(
    thresholds=thresholds_st,
    poll_ms=poll_ms_st,
    state=st.sampled_from(list(LEVELS)),
    good=st.integers(1, 20),
    missing=st.integers(1, 200),
)
def test_missing_readings_become_unknown_after_the_timeout_never_off(
    thresholds: Thresholds, poll_ms: int, state: State, good: int, missing: int
) -> None:
    classifier = Classifier(thresholds)
    feed(classifier, [(i * poll_ms, LEVELS[state]) for i in range(good)])
    first_missing_ms = good * poll_ms
    readings: list[tuple[int, float | None]] = [
        (first_missing_ms + i * poll_ms, None) for i in range(missing)
    ]
    transitions = feed(classifier, readings)

    assert all(t.to_state is State.UNKNOWN for t in transitions)
    last_ms = readings[-1][0]
    if last_ms - first_missing_ms >= thresholds.unknown_after_s * 1000:
        assert [(t.from_state, t.at_ms, t.power_w) for t in transitions] == [
            (state, first_missing_ms, None)
        ]
        assert classifier.state is State.UNKNOWN
    else:
        assert transitions == []
        assert classifier.state is state


def test_the_first_good_reading_ends_unknown_at_once() -> None:
    classifier = Classifier(Thresholds(min_dwell_s=30))
    transition = classifier.step(1_000, 0.2)
    assert transition == Transition(1_000, State.UNKNOWN, State.OFF, 0.2)


@given(
    state=st.sampled_from([State.OFF, State.STANDBY, State.RUNNING]),
    at_ms=st.integers(0, 10**12),
)
def test_suspend_commits_unknown_at_once_and_the_next_reading_resumes(
    state: State, at_ms: int
) -> None:
    classifier = Classifier(Thresholds(min_dwell_s=60), state)
    assert classifier.suspend(at_ms) == Transition(at_ms, state, State.UNKNOWN, None)
    assert classifier.suspend(at_ms + 1) is None  # already unknown: nothing to record
    resumed = classifier.step(at_ms + 2, LEVELS[state])
    assert resumed == Transition(at_ms + 2, State.UNKNOWN, state, LEVELS[state])  # no dwell
