"""State intervals: the timeline an instrument's ordered events describe."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from instrumetry.domain.states import ON_STATES, State
from instrumetry.domain.timeset import Span, TimeSet, normalize, subtract, utc, utc_span


@dataclass(frozen=True, slots=True)
class StateInterval:
    """``state`` held from ``start`` until ``end`` (``None``: still holding)."""

    state: State
    start: datetime
    end: datetime | None


def derive(changes: Sequence[tuple[datetime, State]]) -> list[StateInterval]:
    """Intervals from ``(time, new state)`` pairs in time order; the last is open.

    A change to the state already held (a restart re-announcing its state)
    extends the current interval rather than splitting it.
    """
    intervals: list[StateInterval] = []
    for at, state in changes:
        if intervals:
            last = intervals[-1]
            if last.state is state:
                continue
            intervals[-1] = StateInterval(last.state, last.start, at)
        intervals.append(StateInterval(state, at, None))
    return intervals


@dataclass(frozen=True, slots=True)
class Timeline:
    """An instrument's measured time, split into the sets the metrics need."""

    on: TimeSet
    running: TimeSet
    unknown: TimeSet


def timeline(intervals: Iterable[StateInterval], period: Span, known_until: datetime) -> Timeline:
    """ON, RUN and UNK inside ``period``.

    Open intervals count only until ``known_until`` (the last time the
    instrument's agent was heard from); everything in ``period`` that no
    known interval covers is unknown, never off.
    """
    on: list[Span] = []
    running: list[Span] = []
    known: list[Span] = []
    period = utc_span(period)
    start_p, end_p = period
    for interval in intervals:
        start = utc(interval.start)
        end = utc(interval.end) if interval.end is not None else max(utc(known_until), start)
        span = (max(start, start_p), min(end, end_p))
        if span[0] >= span[1] or interval.state is State.UNKNOWN:
            continue
        known.append(span)
        if interval.state in ON_STATES:
            on.append(span)
        if interval.state is State.RUNNING:
            running.append(span)
    return Timeline(
        on=normalize(on),
        running=normalize(running),
        unknown=subtract([period], normalize(known)),
    )
