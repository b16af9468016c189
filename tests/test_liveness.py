"""The pure liveness rules: offline periods from signals, and their mark on the timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.intervals import StateInterval, derive
from instrumetry.domain.liveness import (
    Boot,
    Heard,
    Liveness,
    OfflinePeriod,
    OfflineReason,
    Signal,
    WentOffline,
    follow,
    overlay,
    restarts,
)
from instrumetry.domain.states import State

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
OLD, NEW = "a" * 32, "b" * 32


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def period(
    start: float, end: float | None, boot: str = OLD, resumed: str | None = None
) -> OfflinePeriod:
    return OfflinePeriod(
        at(start), None if end is None else at(end), OfflineReason.OFFLINE_STATUS, boot, resumed
    )


def test_a_will_opens_a_period_at_the_last_time_heard_and_a_later_message_closes_it() -> None:
    state = Liveness(None, at(30), OLD)
    opened = follow(state, [WentOffline(at(1), OLD)])  # a Will carries its connect time
    assert opened == [period(30, None)]

    reopened = Liveness(opened[0], at(30), OLD)
    assert follow(reopened, [Heard(at(20), OLD)]) == []  # a replayed old event proves nothing
    assert follow(reopened, [Heard(at(50), NEW)]) == [period(30, 50, OLD, NEW)]


def test_one_batch_can_open_and_close_a_period() -> None:
    signals: list[Signal] = [Heard(at(10), OLD), WentOffline(at(12), OLD), Heard(at(40), NEW)]
    assert follow(Liveness(None, None, None), signals) == [period(12, 40, OLD, NEW)]


def test_a_stale_offline_status_of_another_boot_is_ignored() -> None:
    assert follow(Liveness(None, at(30), NEW), [WentOffline(at(5), OLD)]) == []
    open_period = period(30, None)
    assert follow(Liveness(open_period, at(30), OLD), [WentOffline(at(31), OLD)]) == []


def test_a_will_stored_after_the_next_boot_records_what_it_would_have_in_order() -> None:
    # Two collectors: the old boot's Will may commit after the new boot's first messages.
    in_order = follow(Liveness(None, at(30), OLD), [WentOffline(at(1), OLD), Heard(at(50), NEW)])
    boots = [Boot(NEW, at(50), at(60)), Boot(OLD, at(0), at(30))]
    late = follow(Liveness(None, at(60), NEW), [WentOffline(at(1), OLD)], boots)
    assert late == in_order == [period(30, 50, OLD, NEW)]
    assert follow(Liveness(None, at(60), NEW), [WentOffline(at(1), OLD)], boots[:1]) == []
    overlapping = [Boot(OLD, at(0), at(55)), Boot(NEW, at(50), at(60))]
    assert follow(Liveness(None, at(60), NEW), [WentOffline(at(1), OLD)], overlapping) == []


def test_only_periods_nobody_measured_are_unmeasured() -> None:
    assert period(0, None).unmeasured
    assert period(0, 10, OLD, NEW).unmeasured
    assert not period(0, 10, OLD, OLD).unmeasured


def test_consecutive_boots_bound_a_restart_whatever_order_they_come_in() -> None:
    third = "c" * 32
    boots = [Boot(NEW, at(90), at(200)), Boot(OLD, at(0), at(30)), Boot(third, at(200), at(300))]
    gap = OfflinePeriod(at(30), at(90), OfflineReason.RESTART, OLD, NEW)
    assert restarts(boots) == [gap]  # NEW's last is third's first: no gap there
    assert restarts(reversed(boots)) == [gap]
    assert gap.unmeasured
    assert restarts([Boot(OLD, at(0), at(30))]) == []
    assert restarts([Boot(OLD, at(0), at(95)), Boot(NEW, at(90), at(99))]) == []  # overlapping


def test_a_restart_is_unknown_like_a_period_closed_by_another_boot() -> None:
    changes = [(at(0), State.STANDBY, OLD), (at(20), State.RUNNING, OLD), (at(95), State.OFF, NEW)]
    (gap,) = restarts([Boot(OLD, at(0), at(30)), Boot(NEW, at(90), at(99))])
    assert derive(overlay(changes, [gap])) == [
        StateInterval(State.STANDBY, at(0), at(20)),
        StateInterval(State.RUNNING, at(20), at(30)),
        StateInterval(State.UNKNOWN, at(30), at(95)),  # until the new boot's first event
        StateInterval(State.OFF, at(95), None),
    ]
    # Recorded as well by a Will, the same time is unknown once.
    assert overlay(changes, [gap, period(30, 90, OLD, NEW)]) == overlay(changes, [gap])


def test_an_agent_restart_makes_the_gap_unknown_until_the_new_boot_measures() -> None:
    changes = [(at(0), State.STANDBY, OLD), (at(60), State.RUNNING, NEW)]
    timeline = overlay(changes, [period(30, 50, OLD, NEW)])
    assert derive(timeline) == [
        StateInterval(State.STANDBY, at(0), at(30)),
        StateInterval(State.UNKNOWN, at(30), at(60)),
        StateInterval(State.RUNNING, at(60), None),
    ]


def test_a_new_boot_that_measured_before_reconnecting_ends_the_gap_early() -> None:
    changes = [(at(0), State.STANDBY, OLD), (at(40), State.OFF, NEW)]
    timeline = overlay(changes, [period(30, 50, OLD, NEW)])
    assert derive(timeline) == [
        StateInterval(State.STANDBY, at(0), at(30)),
        StateInterval(State.UNKNOWN, at(30), at(40)),
        StateInterval(State.OFF, at(40), None),
    ]


def test_a_lost_connection_of_a_measuring_agent_leaves_the_events_standing() -> None:
    changes = [(at(0), State.STANDBY, OLD), (at(40), State.RUNNING, OLD)]
    assert overlay(changes, [period(30, 50, OLD, OLD)]) == [(t, s) for t, s, _ in changes]


def test_an_open_period_hides_everything_after_the_agents_last_event() -> None:
    changes = [(at(0), State.STANDBY, OLD), (at(60), State.RUNNING, NEW)]
    assert overlay(changes, [period(30, None)]) == [(at(0), State.STANDBY), (at(30), State.UNKNOWN)]


def test_a_restarted_agent_replaying_its_old_outbox_shows_what_the_old_boot_measured() -> None:
    """Cut off at 30, the old boot still measured a change at 40, then died; back at 90."""
    changes = [
        (at(0), State.STANDBY, OLD),
        (at(40), State.RUNNING, OLD),
        (at(95), State.OFF, NEW),
    ]
    assert derive(overlay(changes, [period(30, 90, OLD, NEW)])) == [
        StateInterval(State.STANDBY, at(0), at(40)),
        StateInterval(State.UNKNOWN, at(40), at(95)),
        StateInterval(State.OFF, at(95), None),
    ]


def _state_at(intervals: list[StateInterval], moment: datetime) -> State | None:
    for interval in intervals:
        if interval.start <= moment and (interval.end is None or moment < interval.end):
            return interval.state
    return None


@given(
    steps=st.lists(
        st.tuples(st.integers(1, 30), st.sampled_from(list(State)), st.sampled_from([OLD, NEW])),
        max_size=12,
    ),
    gap=st.tuples(st.integers(0, 200), st.integers(1, 100)),
    resumed=st.sampled_from([OLD, NEW, None]),
)
def test_overlay_hides_unmeasured_time_and_nothing_else(
    steps: list[tuple[int, State, str]], gap: tuple[int, int], resumed: str | None
) -> None:
    minute = 0
    changes = []
    for delta, state, boot in steps:
        minute += delta
        changes.append((at(minute), state, boot))
    start, length = gap
    offline = period(start, None if resumed is None else start + length, OLD, resumed)

    if not offline.unmeasured:
        assert overlay(changes, [offline]) == overlay(changes, [])
        return
    timeline = derive(overlay(changes, [offline]))
    plain = derive(overlay(changes, []))
    resumed_at = [t for t, _, boot in changes if boot == resumed and t >= offline.start]
    end = offline.end if offline.end is None or not resumed_at else min(offline.end, resumed_at[0])
    old_boot_at = [
        t
        for t, _, boot in changes
        if boot == OLD and t >= offline.start and (end is None or t < end)
    ]
    hidden_from = max(old_boot_at, default=offline.start)  # the old boot measured until then
    for minute_ in range(0, minute + 250):
        moment = at(minute_)
        if moment >= hidden_from and (end is None or moment < end):
            assert _state_at(timeline, moment) is State.UNKNOWN
        elif moment < hidden_from or (
            end is not None and any(end <= t <= moment for t, _, _ in changes)
        ):
            # before the period, and from the first event after it on, the events rule
            assert _state_at(timeline, moment) == _state_at(plain, moment)
