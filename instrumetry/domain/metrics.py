"""Usage metrics of one instrument over one period, as DESIGN.md defines them.

With ON = standby ∪ running, RUN = running, UNK = unknown, W = working windows
and P = the period:

- scheduled hours = |W ∩ P|
- startup rate = |ON ∩ W ∩ P| / |W ∩ P|
- days-on share = working days in P with any ON time / working days in P
- utilisation = |RUN ∩ W ∩ P| / |W ∩ P|
- effective hours = |E ∩ P|, E = ON ∩ ⋃ [a − prep, b + post] over runs [a, b]
- external hours = |E ∩ P ∩ ⋃ external order windows|
- coverage = 1 − |UNK ∩ P| / |P|
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import StateInterval, Timeline, timeline
from instrumetry.domain.timeset import (
    Span,
    TimeSet,
    clip,
    intersect,
    normalize,
    overlaps,
    seconds,
    utc_span,
    widen,
)

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Allowances:
    """Powered-on time around a run that counts as preparation and post-processing."""

    prep: timedelta = timedelta(minutes=30)
    post: timedelta = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Usage:
    """The metrics of one instrument over one period; ratios are ``None`` when undefined."""

    period_h: float
    scheduled_h: float
    on_h: float
    on_scheduled_h: float
    running_h: float
    running_scheduled_h: float
    effective_h: float
    external_h: float
    unknown_h: float
    working_days: int
    days_on: int

    @property
    def startup_rate(self) -> float | None:
        return self.on_scheduled_h / self.scheduled_h if self.scheduled_h else None

    @property
    def utilisation(self) -> float | None:
        return self.running_scheduled_h / self.scheduled_h if self.scheduled_h else None

    @property
    def days_on_share(self) -> float | None:
        return self.days_on / self.working_days if self.working_days else None

    @property
    def coverage(self) -> float | None:
        return 1 - self.unknown_h / self.period_h if self.period_h else None

    @property
    def sharing_rate(self) -> float | None:
        return self.external_h / self.effective_h if self.effective_h else None


def effective_time(line: Timeline, allowances: Allowances) -> TimeSet:
    """E: running time plus the powered-on time within the allowances around each run."""
    return intersect(line.on, widen(line.running, allowances.prep, allowances.post))


def compute_usage(
    line: Timeline,
    period: Span,
    calendar: WorkingCalendar,
    allowances: Allowances = Allowances(),
    external_windows: Iterable[Span] = (),
) -> Usage:
    """Every metric of ``line`` over ``period``.

    ``line`` may reach beyond ``period``, and should by the allowances: a run
    just after the period makes its preparation inside the period effective
    (and a run just before, its post-processing), so only a line that sees
    those runs gives |E ∩ P| exactly. Everything is clipped to ``period``
    here, which keeps the additive quantities additive: a period's hours are
    the sum of its days' hours. ``measure`` builds such a line from intervals.
    """
    period = utc_span(period)
    effective = clip(effective_time(line, allowances), period)
    on = clip(line.on, period)
    running = clip(line.running, period)
    windows = calendar.windows(period)
    working_days = calendar.working_days(period)
    days_on = sum(1 for day in working_days if overlaps(on, calendar.day_span(day)))
    return Usage(
        period_h=(period[1] - period[0]).total_seconds() / HOUR,
        scheduled_h=seconds(windows) / HOUR,
        on_h=seconds(on) / HOUR,
        on_scheduled_h=seconds(intersect(on, windows)) / HOUR,
        running_h=seconds(running) / HOUR,
        running_scheduled_h=seconds(intersect(running, windows)) / HOUR,
        effective_h=seconds(effective) / HOUR,
        external_h=seconds(intersect(effective, normalize(external_windows))) / HOUR,
        unknown_h=seconds(clip(line.unknown, period)) / HOUR,
        working_days=len(working_days),
        days_on=days_on,
    )


def measure(
    intervals: Iterable[StateInterval],
    period: Span,
    known_until: datetime,
    calendar: WorkingCalendar,
    *,
    allowances: Allowances = Allowances(),
    external_windows: Iterable[Span] = (),
) -> Usage:
    """Every metric of an instrument's stored intervals over ``period``.

    The timeline is taken over ``period`` widened by the allowances, so runs
    just outside the period count their preparation or post-processing time
    inside it (see ``compute_usage``); open intervals end at ``known_until``.
    """
    start, end = utc_span(period)
    reach = (start - allowances.post, end + allowances.prep)
    line = timeline(intervals, reach, known_until)
    return compute_usage(line, period, calendar, allowances, external_windows)
