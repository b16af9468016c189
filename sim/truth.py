"""The ground truth: what the metrics would be if measurement were perfect."""

from __future__ import annotations

from datetime import UTC, datetime

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.metrics import Allowances, Usage, measure
from instrumetry.domain.timeset import Span
from sim.scenario import VirtualInstrument

ALLOWANCES = Allowances()
"""DESIGN.md's default preparation and post-processing allowances, as the API uses them."""
_ANY_CALENDAR = WorkingCalendar()  # effective hours do not depend on the calendar


def true_intervals(instrument: VirtualInstrument) -> list[StateInterval]:
    """The instrument's true timeline as state intervals."""
    return [
        StateInterval(segment.state, _dt(segment.start_ms), _dt(segment.end_ms))
        for segment in instrument.truth
    ]


def true_effective_h(instrument: VirtualInstrument, window: Span) -> float:
    """|E ∩ window| of the true timeline, as reconciliation measures an order's window."""
    reach_ms = (_ms(window[0] - ALLOWANCES.post), _ms(window[1] + ALLOWANCES.prep))
    intervals = [
        StateInterval(s.state, _dt(s.start_ms), _dt(s.end_ms))
        for s in instrument.segments_between(*reach_ms)
    ]
    return measure(intervals, window, window[1], _ANY_CALENDAR, allowances=ALLOWANCES).effective_h


def true_usage(instrument: VirtualInstrument, period: Span, calendar: WorkingCalendar) -> Usage:
    """The metrics of ``period`` computed from the true timeline."""
    return measure(true_intervals(instrument), period, period[1], calendar)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
