"""Reconciliation of service orders: hand-computed flags, evidence, and overlap properties."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.orders import ServiceOrder
from instrumetry.domain.reconcile import (
    DEFAULT_TOLERANCES,
    Flag,
    Overlap,
    Tolerances,
    evidence,
    overlaps,
    reconcile,
)
from instrumetry.domain.states import State
from tests.test_metrics import chain, sh

OFF, STANDBY, RUNNING = State.OFF, State.STANDBY, State.RUNNING


def order(
    order_id: str,
    start: datetime,
    end: datetime,
    billed: str,
    instrument: str = "nmr-1",
) -> ServiceOrder:
    return ServiceOrder(
        order_id, instrument, "某大学化学系", True, "NMR", start, end, Decimal(billed), Decimal(0)
    )


# Monday 2 March in Shanghai: off until 09:00, standby 09:00–09:30, running
# 09:30–11:00, standby 11:00–13:00 (post-processing allowance ends at 11:30),
# off after; heard from until Tuesday. E = 09:00–11:30: 2.5 h.
MONDAY = chain(
    sh(2, 0),
    (OFF, sh(2, 9)),
    (STANDBY, sh(2, 9, 30)),
    (RUNNING, sh(2, 11)),
    (STANDBY, sh(2, 13)),
    (OFF, None),
)
HEARD = {"nmr-1": sh(3, 0)}


def one(
    o: ServiceOrder,
    intervals: list[StateInterval] = MONDAY,
    others: list[ServiceOrder] | None = None,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> tuple[list[Flag], float, float]:
    (result,) = reconcile(
        [o], {"nmr-1": intervals}, HEARD, others=others or [], tolerances=tolerances
    )
    return result.flags, result.evidence.effective_h, result.evidence.coverage


def test_an_honest_order_has_no_flag() -> None:
    assert one(order("a", sh(2, 9), sh(2, 12), "2.5")) == ([], 2.5, 1.0)


def test_inflated_beyond_ten_percent_and_a_quarter_hour() -> None:
    # Allowed: 2.5 × 1.10 + 0.25 = 3.0 h.
    assert one(order("a", sh(2, 8), sh(2, 14), "3.0"))[0] == []
    assert one(order("a", sh(2, 8), sh(2, 14), "3.01"))[0] == [Flag.INFLATED]


def test_only_effective_time_inside_the_window_counts() -> None:
    # Window 10:00–11:00 holds 1 h of the run; billing 2 h exceeds 1 × 1.1 + 0.25.
    flags, effective, _ = one(order("a", sh(2, 10), sh(2, 11), "2"))
    assert (flags, effective) == ([Flag.INFLATED], 1.0)


def test_preparation_before_a_run_just_after_the_window_is_effective() -> None:
    # Window 08:00–09:15: standby 09:00–09:15 serves the run at 09:30.
    _, effective, _ = one(order("a", sh(2, 8), sh(2, 9, 15), "0"))
    assert effective == 0.25


def test_a_phantom_order_on_a_measured_instrument_that_stayed_off() -> None:
    flags, effective, coverage = one(order("a", sh(2, 14), sh(2, 17), "3"))
    assert (flags, effective, coverage) == ([Flag.INFLATED, Flag.PHANTOM], 0.0, 1.0)


def test_standby_without_a_run_is_not_phantom_but_is_not_effective() -> None:
    idle = chain(sh(2, 0), (STANDBY, None))
    flags, effective, _ = one(order("a", sh(2, 14), sh(2, 16), "0.25"), idle)
    assert (flags, effective) == ([], 0.0)


def test_unverifiable_without_coverage_and_never_phantom() -> None:
    # Heard from until 13:00 only: a 14:00–16:00 window is entirely unknown.
    (result,) = reconcile(
        [order("a", sh(2, 14), sh(2, 16), "0")], {"nmr-1": MONDAY}, {"nmr-1": sh(2, 13)}
    )
    assert result.flags == [Flag.UNVERIFIABLE]
    assert (result.evidence.coverage, result.evidence.unknown_h) == (0.0, 2.0)


def test_coverage_threshold_is_ninety_percent_inclusive() -> None:
    # Standby since midnight, last heard at 12:54 in a 12:00–13:00 window: 90% known.
    o = order("a", sh(2, 12), sh(2, 13), "0")
    line = {"nmr-1": chain(sh(2, 0), (STANDBY, None))}
    (at_90,) = reconcile([o], line, {"nmr-1": sh(2, 12, 54)})
    (below,) = reconcile([o], line, {"nmr-1": sh(2, 12, 53)})
    assert Flag.UNVERIFIABLE not in at_90.flags
    assert Flag.UNVERIFIABLE in below.flags


def test_an_instrument_never_heard_from_is_unverifiable() -> None:
    (result,) = reconcile([order("a", sh(2, 9), sh(2, 12), "1")], {}, {})
    assert result.flags == [Flag.INFLATED, Flag.UNVERIFIABLE]
    assert result.evidence.intervals == []


def test_double_billing_needs_more_than_fifteen_minutes_of_overlap() -> None:
    first = order("a", sh(2, 9), sh(2, 10), "1")
    touching = order("b", sh(2, 9, 45), sh(2, 11), "1")  # overlaps 15 min: allowed
    deeper = order("c", sh(2, 9, 44), sh(2, 11), "1")  # overlaps 16 min
    flags, *_ = one(first, others=[touching])
    assert Flag.DOUBLE_BILLED not in flags
    results = reconcile([first, deeper], {"nmr-1": MONDAY}, HEARD)
    assert [Flag.DOUBLE_BILLED in r.flags for r in results] == [True, True]
    assert results[0].evidence.overlaps == [Overlap("c", 16 / 60)]


def test_orders_on_other_instruments_never_double_bill() -> None:
    mine = order("a", sh(2, 9), sh(2, 12), "2.5")
    theirs = order("b", sh(2, 9), sh(2, 12), "3", instrument="xrd-2")
    flags, *_ = one(mine, others=[theirs])
    assert flags == []


def test_tolerances_are_configurable() -> None:
    strict = Tolerances(inflation_factor=1.0, inflation_slack_h=0, max_overlap=timedelta(0))
    flags, *_ = one(order("a", sh(2, 9), sh(2, 12), "2.6"), tolerances=strict)
    assert flags == [Flag.INFLATED]


def test_evidence_lists_the_measured_intervals_clipped_to_the_window() -> None:
    (result,) = reconcile([order("a", sh(2, 10), sh(2, 12), "2")], {"nmr-1": MONDAY}, HEARD)
    spans = [(m.state, m.start, m.end) for m in result.evidence.intervals]
    assert spans == [(RUNNING, sh(2, 10), sh(2, 11)), (STANDBY, sh(2, 11), sh(2, 12))]
    assert (result.evidence.window_h, result.evidence.on_h) == (2.0, 2.0)


def test_an_open_interval_ends_where_the_agent_was_last_heard() -> None:
    line = chain(sh(2, 0), (RUNNING, None))
    (result,) = reconcile(
        [order("a", sh(2, 9), sh(2, 12), "1")], {"nmr-1": line}, {"nmr-1": sh(2, 10)}
    )
    assert [(m.start, m.end) for m in result.evidence.intervals] == [(sh(2, 9), sh(2, 10))]
    assert result.evidence.unknown_h == 2.0


windows = st.tuples(st.integers(0, 200), st.integers(1, 120)).map(
    lambda w: (sh(2, 0) + timedelta(minutes=w[0]), sh(2, 0) + timedelta(minutes=w[0] + w[1]))
)


@given(st.lists(windows, min_size=1, max_size=8))
def test_overlaps_match_the_pairwise_definition(spans: list[tuple[datetime, datetime]]) -> None:
    orders = [order(str(i), start, end, "0") for i, (start, end) in enumerate(spans)]
    found = overlaps(orders)
    for a, b in itertools.permutations(orders, 2):
        hours = (min(a.ends_at, b.ends_at) - max(a.starts_at, b.starts_at)) / timedelta(hours=1)
        listed = {o.order_id: o.hours for o in found.get(a.order_id, [])}
        if hours > 0:
            assert listed[b.order_id] == hours
        else:
            assert b.order_id not in listed


@given(st.lists(windows, min_size=1, max_size=6), st.integers(0, 600))
def test_effective_hours_never_exceed_the_window_and_coverage_is_a_share(
    spans: list[tuple[datetime, datetime]], heard_min: int
) -> None:
    orders = [order(str(i), start, end, "0") for i, (start, end) in enumerate(spans)]
    heard = {"nmr-1": sh(2, 0) + timedelta(minutes=heard_min)}
    for result in reconcile(orders, {"nmr-1": MONDAY}, heard):
        e = result.evidence
        assert 0 <= e.effective_h <= e.on_h <= e.window_h
        assert 0 <= e.coverage <= 1
        assert abs(e.unknown_h - (1 - e.coverage) * e.window_h) < 1e-9


steps = st.lists(
    st.tuples(st.sampled_from([OFF, STANDBY, RUNNING, State.UNKNOWN]), st.integers(1, 90)),
    min_size=1,
    max_size=12,
)


@given(steps, st.booleans(), st.lists(windows, min_size=1, max_size=6), st.integers(0, 900))
def test_each_order_is_judged_as_if_it_saw_every_interval(
    held: list[tuple[State, int]],
    open_end: bool,
    spans: list[tuple[datetime, datetime]],
    heard_min: int,
) -> None:
    """``reconcile`` reads only the intervals near each window: the evidence is the same."""
    start = sh(2, 0) - timedelta(minutes=45)
    ends = list(itertools.accumulate(minutes for _, minutes in held))
    timeline = chain(
        start,
        *(
            (state, None if open_end and i == len(held) - 1 else start + timedelta(minutes=end))
            for i, ((state, _), end) in enumerate(zip(held, ends, strict=True))
        ),
    )
    orders = [order(str(i), s, e, "1") for i, (s, e) in enumerate(spans)]
    heard = sh(2, 0) + timedelta(minutes=heard_min)
    found = overlaps(orders)
    for result in reconcile(orders, {"nmr-1": timeline[::-1]}, {"nmr-1": heard}):
        o = result.order
        assert result.evidence == evidence(o, timeline, heard, found.get(o.order_id, []))
