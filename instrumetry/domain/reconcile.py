"""Reconciliation: each billed service order against the usage measured in its window.

For an order booked over the window [s, e] (DESIGN.md, defaults shown; all
configurable in ``Tolerances``):

- ``inflated``: billed hours > |E ∩ [s, e]| × 1.10 + 0.25 h — more hours billed
  than the instrument did effective work in the window;
- ``phantom``: ON ∩ [s, e] is empty while coverage of [s, e] ≥ 90% — the
  instrument was measured and never even switched on;
- ``double_billed``: another order on the same instrument overlaps [s, e] by
  more than 15 min — the same hours sold twice;
- ``unverifiable``: coverage of [s, e] < 90% — too little was measured to
  confirm or refute the order.

Flags are independent, so an order can carry several; ``unverifiable`` next to
``inflated`` says the measured hours are a lower bound. Each result carries
its evidence (the measured intervals in the window, the effective hours, the
coverage), because a subsidy decision rests on it and must be checkable.
"""

from __future__ import annotations

import bisect
import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from instrumetry.domain.intervals import StateInterval, timeline
from instrumetry.domain.metrics import HOUR, Allowances, effective_time
from instrumetry.domain.orders import ServiceOrder
from instrumetry.domain.states import State
from instrumetry.domain.timeset import Span, clip, seconds, utc

NEVER = datetime.min.replace(tzinfo=UTC)
_OPEN_END = datetime.max.replace(tzinfo=UTC)
"""``known_until`` of an instrument never heard from: its open intervals are unknown."""


class Flag(enum.StrEnum):
    INFLATED = "inflated"
    PHANTOM = "phantom"
    DOUBLE_BILLED = "double_billed"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far billing may exceed measurement before an order is flagged."""

    inflation_factor: float = 1.10
    inflation_slack_h: float = 0.25
    min_coverage: float = 0.90
    max_overlap: timedelta = timedelta(minutes=15)


DEFAULT_TOLERANCES = Tolerances()
DEFAULT_ALLOWANCES = Allowances()


@dataclass(frozen=True, slots=True)
class Overlap:
    """Another order on the same instrument that overlaps this one's window."""

    order_id: str
    hours: float


@dataclass(frozen=True, slots=True)
class Measured:
    """A measured state inside an order's window (a stored interval, clipped)."""

    state: State
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was measured in an order's window [s, e]."""

    intervals: list[Measured]
    """The measured intervals clipped to the window; time they leave out is unknown."""
    window_h: float
    on_h: float
    effective_h: float
    unknown_h: float
    coverage: float
    overlaps: list[Overlap]
    """Every order on the same instrument overlapping the window (any length)."""


@dataclass(frozen=True, slots=True)
class Reconciliation:
    order: ServiceOrder
    flags: list[Flag]
    evidence: Evidence


def evidence(
    order: ServiceOrder,
    intervals: Iterable[StateInterval],
    known_until: datetime,
    overlaps: list[Overlap],
    allowances: Allowances = DEFAULT_ALLOWANCES,
) -> Evidence:
    """Measured usage in ``order``'s window, from its instrument's stored intervals.

    The timeline reaches beyond the window by the allowances, so a run just
    after the window makes its preparation inside the window effective
    (as ``metrics.measure`` does for report periods).
    """
    start, end = order.window
    listed = list(intervals)
    line = timeline(listed, (start - allowances.post, end + allowances.prep), known_until)
    effective = clip(effective_time(line, allowances), (start, end))
    window_h = (end - start).total_seconds() / HOUR
    unknown_h = seconds(clip(line.unknown, (start, end))) / HOUR
    return Evidence(
        intervals=_clipped(listed, (start, end), known_until),
        window_h=window_h,
        on_h=seconds(clip(line.on, (start, end))) / HOUR,
        effective_h=seconds(effective) / HOUR,
        unknown_h=unknown_h,
        coverage=1 - unknown_h / window_h,
        overlaps=overlaps,
    )


def _clipped(
    intervals: Iterable[StateInterval], window: Span, known_until: datetime
) -> list[Measured]:
    """The intervals inside ``window``; an open one ends when its agent was last heard from."""
    out = []
    for interval in intervals:
        end = utc(interval.end) if interval.end is not None else utc(known_until)
        start, stop = max(utc(interval.start), window[0]), min(end, window[1])
        if start < stop:
            out.append(Measured(interval.state, start, stop))
    return out


def flags(order: ServiceOrder, measured: Evidence, tolerances: Tolerances) -> list[Flag]:
    """The flags ``order`` earns, in the order of ``Flag``."""
    found = []
    allowed_h = measured.effective_h * tolerances.inflation_factor + tolerances.inflation_slack_h
    if float(order.billed_hours) > allowed_h:
        found.append(Flag.INFLATED)
    covered = measured.coverage >= tolerances.min_coverage
    if covered and measured.on_h == 0:
        found.append(Flag.PHANTOM)
    limit_h = tolerances.max_overlap.total_seconds() / HOUR
    if any(overlap.hours > limit_h for overlap in measured.overlaps):
        found.append(Flag.DOUBLE_BILLED)
    if not covered:
        found.append(Flag.UNVERIFIABLE)
    return found


def overlaps(orders: Sequence[ServiceOrder]) -> dict[str, list[Overlap]]:
    """For each order, the other orders on the same instrument whose windows overlap it.

    A sweep over the orders of each instrument sorted by start: only orders
    still open when one starts can overlap it, so this is fast for a year of
    orders rather than quadratic in them.
    """
    found: defaultdict[str, list[Overlap]] = defaultdict(list)
    by_instrument: defaultdict[str, list[ServiceOrder]] = defaultdict(list)
    for order in orders:
        by_instrument[order.instrument_id].append(order)
    for group in by_instrument.values():
        group.sort(key=lambda o: (o.window, o.order_id))
        active: list[ServiceOrder] = []
        for order in group:
            start, end = order.window
            active = [other for other in active if other.window[1] > start]
            for other in active:
                hours = (min(end, other.window[1]) - start).total_seconds() / HOUR
                found[order.order_id].append(Overlap(other.order_id, hours))
                found[other.order_id].append(Overlap(order.order_id, hours))
            active.append(order)
    return {order_id: sorted(items, key=lambda o: o.order_id) for order_id, items in found.items()}


def reconcile(
    orders: Sequence[ServiceOrder],
    intervals: Mapping[str, Sequence[StateInterval]],
    known_until: Mapping[str, datetime],
    *,
    others: Sequence[ServiceOrder] = (),
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    allowances: Allowances = DEFAULT_ALLOWANCES,
) -> list[Reconciliation]:
    """Reconcile each of ``orders`` with its instrument's measured intervals.

    ``others`` are further orders that may overlap ``orders`` (on the same
    instruments) but are not reconciled themselves: a page of results still
    sees every order it could be double-billed against. An instrument missing
    from ``known_until`` was never heard from, so its open intervals are unknown.
    """
    distinct = {o.order_id: o for o in [*others, *orders]}
    overlapping = overlaps(list(distinct.values()))
    indexed = {instrument_id: _Indexed(listed) for instrument_id, listed in intervals.items()}
    results = []
    for order in orders:
        start, end = order.window
        index = indexed.get(order.instrument_id)
        measured = evidence(
            order,
            index.meeting((start - allowances.post, end + allowances.prep)) if index else (),
            known_until.get(order.instrument_id, NEVER),
            overlapping.get(order.order_id, []),
            allowances,
        )
        results.append(Reconciliation(order, flags(order, measured, tolerances), measured))
    return results


class _Indexed:
    """An instrument's intervals, sorted, so each order reads only those near its window.

    A year of intervals against a year of orders would otherwise be scanned
    once per order.
    """

    def __init__(self, intervals: Iterable[StateInterval]) -> None:
        self._sorted = sorted(intervals, key=lambda interval: utc(interval.start))
        self._starts = [utc(interval.start) for interval in self._sorted]
        self._reach: list[datetime] = []  # the latest end so far: sorted, even if spans overlap
        latest = NEVER
        for interval in self._sorted:
            end = _OPEN_END if interval.end is None else utc(interval.end)
            latest = max(latest, end)
            self._reach.append(latest)

    def meeting(self, span: Span) -> list[StateInterval]:
        """The intervals that may meet ``span`` (a superset of those that do), in start order."""
        first = bisect.bisect_right(self._reach, utc(span[0]))
        return self._sorted[first : bisect.bisect_left(self._starts, utc(span[1]))]
