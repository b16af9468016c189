"""Agent liveness: offline periods from what was heard, and what they mean for the timeline.

"Agent offline" and "instrument off" are different facts. An agent that is
not heard opens an offline period; hearing it again closes it. A period
closed by the same boot was a lost connection: the agent kept measuring and
its outbox replays every transition, so the events stand. A period closed by
another boot (or still open) is time nobody measured: ``overlay`` makes it
``unknown`` in the derived timeline, so coverage reports it exactly.
Pure: the collector feeds in stored values and what a batch heard.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from instrumetry.domain.states import State


class OfflineReason(enum.StrEnum):
    """What opened an offline period; stored in ``offline_periods.reason``."""

    OFFLINE_STATUS = "offline_status"  # the agent's Last Will, or its goodbye on shutdown
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # nothing heard for longer than the timeout
    RESTART = "restart"  # between two boots' measurements (``restarts``; never stored)


@dataclass(frozen=True, slots=True)
class OfflinePeriod:
    """``[start, end)`` in device time; ``end`` is None while the agent is still not heard."""

    start: datetime
    end: datetime | None
    reason: OfflineReason
    boot: str | None
    resumed_boot: str | None = None

    @property
    def unmeasured(self) -> bool:
        """Whether nobody measured it: still open, or the agent came back as another boot."""
        return self.end is None or self.resumed_boot != self.boot


@dataclass(frozen=True, slots=True)
class Heard:
    """A live message from the agent: a heartbeat, an event, or its ``online`` status."""

    at: datetime
    boot: str


@dataclass(frozen=True, slots=True)
class WentOffline:
    """The agent's ``offline`` status; ``at`` is its device time (a Will's is its connect time)."""

    at: datetime
    boot: str


Signal = Heard | WentOffline


@dataclass(frozen=True, slots=True)
class Liveness:
    """An instrument's liveness as stored: the open period, and its latest message heard."""

    open_period: OfflinePeriod | None
    last_seen: datetime | None
    last_boot: str | None


@dataclass(frozen=True, slots=True)
class Boot:
    """One run of an agent, as far as its events and heartbeats tell: first and last heard."""

    boot: str
    first: datetime
    last: datetime


def follow(
    state: Liveness, signals: Iterable[Signal], boots: Iterable[Boot] = ()
) -> list[OfflinePeriod]:
    """The periods ``signals`` (in arrival order) open or close, as they are to be stored.

    An offline status starts a period at the agent's last known device time
    (a Will carries its connect time, older than what was heard since). One
    from another boot than the latest heard came late: two collectors may
    store a boot's Will after the next boot's first messages. If ``boots``
    (those of the instrument) show that boot followed by another, it records
    the period it would have opened in order, closed by the next boot's
    first message; else it is ignored. A message closes the open period only
    if its device time is past the period's start: a replayed old event
    proves nothing about now.
    """
    current, last_seen, last_boot = state.open_period, state.last_seen, state.last_boot
    touched: dict[datetime, OfflinePeriod] = {}
    ended = {gap.boot: gap for gap in restarts(boots)}
    for signal in signals:
        if isinstance(signal, Heard):
            if current is not None and signal.at > current.start:
                closed = replace(current, end=signal.at, resumed_boot=signal.boot)
                touched[closed.start] = closed
                current = None
            if last_seen is None or signal.at >= last_seen:
                last_seen, last_boot = signal.at, signal.boot
        elif last_boot is None or signal.boot == last_boot:
            if current is None:
                start = signal.at if last_seen is None else max(last_seen, signal.at)
                current = touched[start] = OfflinePeriod(
                    start, None, OfflineReason.OFFLINE_STATUS, signal.boot
                )
        elif (gap := ended.get(signal.boot)) is not None and gap.end is not None:
            start = max(gap.start, signal.at)
            if start < gap.end and (current is None or current.start != start):
                touched[start] = replace(gap, start=start, reason=OfflineReason.OFFLINE_STATUS)
    return list(touched.values())


def restarts(boots: Iterable[Boot]) -> list[OfflinePeriod]:
    """The unmeasured time between consecutive boots (by first heard), as closed periods.

    Whatever the order its messages were stored in, and whether or not a Will
    or a timeout recorded an offline period for it, an agent that came back as
    another boot measured nothing from its old boot's last message to its new
    boot's first: first and last heard are a minimum and a maximum, the same
    for any order of arrival. ``overlay`` treats these like stored periods.
    """
    ordered = sorted(boots, key=lambda boot: boot.first)
    return [
        OfflinePeriod(old.last, new.first, OfflineReason.RESTART, old.boot, new.boot)
        for old, new in itertools.pairwise(ordered)
        if old.last < new.first and old.boot != new.boot
    ]


Change = tuple[datetime, State]


def overlay(
    changes: Sequence[tuple[datetime, State, str]], periods: Iterable[OfflinePeriod]
) -> list[Change]:
    """Events' ``(time, new state, boot)`` in time order, with unmeasured periods made unknown.

    Inside an unmeasured period events are hidden, except that the period
    starts late at the old boot's last event inside it (its outbox, replayed
    after the restart, proves it measured until then), and ends early at the
    first event of the boot that closed it (a restarted agent measures before
    it reconnects). At its end the state is that of the latest event if the
    new boot made it; otherwise the old boot's state is not carried over and
    ``unknown`` lasts until the next event.
    """
    hidden: list[tuple[datetime, datetime | None]] = []
    result: list[Change] = []
    for period in periods:
        if not period.unmeasured:
            continue
        end = period.end
        if end is not None:
            firsts = (
                t for t, _, boot in changes if boot == period.resumed_boot and t >= period.start
            )
            end = min(end, next(firsts, end))
        start = max(
            (
                t
                for t, _, boot in changes
                if boot == period.boot and t >= period.start and (end is None or t < end)
            ),
            default=period.start,
        )
        hidden.append((start, end))
        result.append((start, State.UNKNOWN))
        if end is not None and end > start:
            latest = [(state, boot) for t, state, boot in changes if t <= end]
            if latest and latest[-1][1] == period.resumed_boot:
                result.append((end, latest[-1][0]))
    result += [
        (t, state)
        for t, state, _ in changes
        if not any(start <= t and (end is None or t < end) for start, end in hidden)
    ]
    result.sort(key=lambda change: change[0])
    # At one instant the last change wins: an event over the period boundary it falls on.
    last_at: dict[datetime, State] = {}
    for at, state in result:
        last_at[at] = state
    return list(last_at.items())
