"""The ground truth: what the metrics would be if measurement were perfect."""

from __future__ import annotations

from datetime import UTC, datetime

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.metrics import Usage, measure
from instrumetry.domain.timeset import Span
from sim.scenario import VirtualInstrument


def true_intervals(instrument: VirtualInstrument) -> list[StateInterval]:
    """The instrument's true timeline as state intervals."""
    return [
        StateInterval(segment.state, _dt(segment.start_ms), _dt(segment.end_ms))
        for segment in instrument.truth
    ]


def true_usage(instrument: VirtualInstrument, period: Span, calendar: WorkingCalendar) -> Usage:
    """The metrics of ``period`` computed from the true timeline."""
    return measure(true_intervals(instrument), period, period[1], calendar)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
