"""The ground truth: what the metrics would be if measurement were perfect."""

from __future__ import annotations

from datetime import UTC, datetime

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval, timeline
from instrumetry.domain.metrics import Allowances, Usage, effective_time, measure
from instrumetry.domain.timeset import Span, clip, seconds
from sim.scenario import VirtualInstrument

ALLOWANCES = Allowances()
"""DESIGN.md's default preparation and post-processing allowances, as the API uses them."""


def true_intervals(instrument: VirtualInstrument) -> list[StateInterval]:
    """The instrument's true timeline as state intervals."""
    return [
        StateInterval(segment.state, _dt(segment.start_ms), _dt(segment.end_ms))
        for segment in instrument.truth
    ]


def true_effective_h(instrument: VirtualInstrument, window: Span) -> float:
    """|E ∩ window| of the true timeline, as reconciliation measures an order's window.

    Only E of the metrics ``measure`` computes: the orders of a year ask this
    hundreds of thousands of times, and the other metrics cost the most.
    """
    reach = (window[0] - ALLOWANCES.post, window[1] + ALLOWANCES.prep)
    intervals = [
        StateInterval(s.state, _dt(s.start_ms), _dt(s.end_ms))
        for s in instrument.segments_between(_ms(reach[0]), _ms(reach[1]))
    ]
    line = timeline(intervals, reach, window[1])
    return seconds(clip(effective_time(line, ALLOWANCES), window)) / 3600


def true_usage(instrument: VirtualInstrument, period: Span, calendar: WorkingCalendar) -> Usage:
    """The metrics of ``period`` computed from the true timeline."""
    return measure(true_intervals(instrument), period, period[1], calendar)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
