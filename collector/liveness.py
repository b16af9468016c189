"""Recording when agents go silent and come back, and how far their clocks are off.

Offline periods are opened by an agent's ``offline`` status (its Last Will,
or its goodbye) inside the batch that carries it, and by ``sweep`` when an
agent has not been heard for longer than the heartbeat timeout; any later
live message closes them. The rules are ``instrumetry.domain.liveness``'s;
this module moves rows, under the batch's instrument row locks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector import rollups
from collector.ingest import EventRow, HeartbeatRow, Row, StatusRow
from collector.rebuild import rebuild_intervals
from instrumetry.domain import liveness
from instrumetry.domain.liveness import (
    Boot,
    Heard,
    Liveness,
    OfflinePeriod,
    OfflineReason,
    WentOffline,
)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one batch changed: periods opened, and each heartbeat's clock skew."""

    earliest: dict[str, datetime]
    """Per instrument, the earliest start of a period this batch touched: rebuild from there."""
    opened: int
    """Periods stored for the first time: a late Will's period that a heartbeat
    timeout already recorded from the same start only sets its end."""
    skews: tuple[tuple[str, timedelta], ...]
    """(instrument, receive time - device time) of each heartbeat.

    Only heartbeats measure skew: they are sent live, while a status may be a
    Will stamped at connect time or a retained copy from long ago."""
    moved: dict[str, datetime]
    """The previous ``last_seen`` of each instrument whose ``last_seen`` moved forward."""


def record(cur: psycopg.Cursor[TupleRow], rows: Sequence[Row]) -> Recorded:
    """Follow each instrument's liveness through ``rows`` (accepted, in arrival order).

    Events among ``rows`` must be authentic ones only: a forged event proves
    nothing about the agent being alive. Also moves each instrument's
    ``last_seen`` forward to the latest device time of its events and
    heartbeats (a status is no measurement).
    """
    signals: dict[str, list[liveness.Signal]] = {}
    for row in rows:
        signals.setdefault(row.instrument_id, []).append(_signal(row))
    if not signals:
        return Recorded({}, 0, (), {})
    boots = _boot_spans(rows)
    restarted = _record_boots(cur, boots)
    states = _load(cur, sorted(signals))
    ended = _ended_boots(cur, signals)
    periods = {
        instrument_id: liveness.follow(states[instrument_id], found, ended.get(instrument_id, ()))
        for instrument_id, found in signals.items()
    }
    changed = [(i, period) for i, found in periods.items() for period in found]
    opened = _write(cur, changed) if changed else 0
    seen: dict[str, datetime] = {}
    for (instrument_id, _), (_, last) in boots.items():
        seen[instrument_id] = max(last, seen.get(instrument_id, last))
    _update_heard(cur, rows, seen)
    earliest = {i: min(p.start for p in found) for i, found in periods.items() if found}
    for instrument_id, start in restarted.items():
        earliest[instrument_id] = min(start, earliest.get(instrument_id, start))
    return Recorded(
        earliest=earliest,
        opened=opened,
        skews=tuple(
            (row.instrument_id, row.source.received_at - row.device_time)
            for row in rows
            if isinstance(row, HeartbeatRow)
        ),
        moved={
            instrument_id: previous
            for instrument_id, latest in seen.items()
            if (previous := states[instrument_id].last_seen) is not None and previous < latest
        },
    )


def sweep(conn: psycopg.Connection[TupleRow], now: datetime, timeout: timedelta) -> list[str]:
    """Open a ``heartbeat_timeout`` period for each agent silent since ``now - timeout``.

    The period starts at the agent's last device time heard; returns the
    instruments it opened periods for. One transaction, under the same row
    locks as a batch, so a message arriving meanwhile is seen either before
    (no period) or after (it closes the period).
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            """SELECT i.id FROM instruments i
                WHERE i.last_heard_at < %s AND i.last_seen IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM offline_periods o
                                   WHERE o.instrument_id = i.id AND o.end_time IS NULL)
                ORDER BY i.id FOR NO KEY UPDATE""",
            (now - timeout,),
        )
        silent = [instrument_id for (instrument_id,) in cur.fetchall()]
        if not silent:
            return []
        cur.execute(
            """INSERT INTO offline_periods (instrument_id, start_time, reason, boot_id)
               SELECT id, last_seen, %s, last_boot_id FROM instruments WHERE id = ANY(%s)
               ON CONFLICT DO NOTHING
               RETURNING instrument_id, start_time""",
            (OfflineReason.HEARTBEAT_TIMEOUT.value, silent),
        )
        opened = {instrument_id: start for instrument_id, start in cur.fetchall()}
        rebuild_intervals(cur, opened)
        rollups.refresh(cur, {i: rollups.changed_from(t) for i, t in opened.items()}, {})
    return sorted(opened)


def _signal(row: Row) -> liveness.Signal:
    match row:
        case EventRow():
            return Heard(row.device_time, row.event.boot)
        case HeartbeatRow():
            return Heard(row.device_time, row.heartbeat.boot)
        case StatusRow() if row.status.status == "online":
            return Heard(row.device_time, row.status.boot)
        case StatusRow():
            return WentOffline(row.device_time, row.status.boot)


def _load(cur: psycopg.Cursor[TupleRow], ids: list[str]) -> dict[str, Liveness]:
    cur.execute(
        """SELECT i.id, i.last_seen, i.last_boot_id, o.start_time, o.reason, o.boot_id
             FROM instruments i
             LEFT JOIN offline_periods o ON o.instrument_id = i.id AND o.end_time IS NULL
            WHERE i.id = ANY(%s)""",
        (ids,),
    )
    states = {}
    for instrument_id, last_seen, last_boot, start, reason, boot in cur.fetchall():
        open_period = (
            None if start is None else OfflinePeriod(start, None, OfflineReason(reason), _hex(boot))
        )
        states[instrument_id] = Liveness(open_period, last_seen, _hex(last_boot))
    return states


def _write(cur: psycopg.Cursor[TupleRow], changed: list[tuple[str, OfflinePeriod]]) -> int:
    """Store ``changed`` (at most one per instrument and start); how many rows are new."""
    cur.execute(
        """WITH written AS (
               INSERT INTO offline_periods
                      (instrument_id, start_time, end_time, reason, boot_id, resumed_boot_id)
               SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[],
                                    %s::uuid[], %s::uuid[])
               ON CONFLICT (instrument_id, start_time) DO UPDATE
                  SET end_time = EXCLUDED.end_time, resumed_boot_id = EXCLUDED.resumed_boot_id
            RETURNING xmax = 0 AS inserted  -- else updated
           )
           SELECT count(*) FILTER (WHERE inserted) FROM written""",
        (
            [instrument_id for instrument_id, _ in changed],
            [period.start for _, period in changed],
            [period.end for _, period in changed],
            [period.reason.value for _, period in changed],
            [_uuid(period.boot) for _, period in changed],
            [_uuid(period.resumed_boot) for _, period in changed],
        ),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _boot_spans(rows: Sequence[Row]) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """By (instrument, boot), the first and last device time of ``rows``' events and heartbeats.

    A status is no measurement: a Will carries its connect time.
    """
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for row in rows:
        if isinstance(row, StatusRow):
            continue
        key = (row.instrument_id, _boot(row))
        first, last = spans.get(key, (row.device_time, row.device_time))
        spans[key] = (min(first, row.device_time), max(last, row.device_time))
    return spans


def _update_heard(
    cur: psycopg.Cursor[TupleRow], rows: Sequence[Row], seen: dict[str, datetime]
) -> None:
    """Move ``last_heard_at``, ``last_boot_id``, ``clock_skew_ms`` and ``last_seen`` forward.

    ``last_seen`` to ``seen``, each instrument's latest measurement, if later.
    One statement for all four: a second update of the same rows cost as much
    again, and its foreign-key checks too (a row version this transaction made
    is checked again).
    """
    latest: dict[str, Row] = {}
    heard_at: dict[str, datetime] = {}
    beats: dict[str, HeartbeatRow] = {}
    for row in rows:
        instrument_id = row.instrument_id
        if instrument_id not in latest or row.device_time >= latest[instrument_id].device_time:
            latest[instrument_id] = row
        heard_at[instrument_id] = max(
            row.source.received_at, heard_at.get(instrument_id, row.source.received_at)
        )
        if isinstance(row, HeartbeatRow):
            beats[instrument_id] = row
    ids = sorted(latest)
    cur.execute(
        """UPDATE instruments AS i SET
               last_heard_at = greatest(i.last_heard_at, u.heard_at),
               last_boot_id = CASE WHEN i.last_seen IS NULL OR u.device_time >= i.last_seen
                                   THEN u.boot ELSE i.last_boot_id END,
               clock_skew_ms = coalesce(u.skew_ms, i.clock_skew_ms),
               last_seen = greatest(i.last_seen, u.seen)
             FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::uuid[],
                         %s::bigint[], %s::timestamptz[])
                  AS u(id, heard_at, device_time, boot, skew_ms, seen)
            WHERE i.id = u.id""",
        (
            ids,
            [heard_at[i] for i in ids],
            [latest[i].device_time for i in ids],
            [_uuid(_boot(latest[i])) for i in ids],
            [_skew_ms(beats.get(i)) for i in ids],
            [seen.get(i) for i in ids],
        ),
    )


def _record_boots(
    cur: psycopg.Cursor[TupleRow], heard: dict[tuple[str, str], tuple[datetime, datetime]]
) -> dict[str, datetime]:
    """Widen each boot's stored first and last heard to ``heard`` (``_boot_spans``).

    Returns, for each instrument with a boot heard for the first time, where
    its timeline changes: the last message of the boot before (the restart
    starts there), else the new boot's first.
    """
    if not heard:
        return {}
    keys = sorted(heard)
    cur.execute(
        """WITH written AS (
               INSERT INTO agent_boots AS b (instrument_id, boot_id, first_seen, last_seen)
               SELECT * FROM unnest(%s::text[], %s::uuid[], %s::timestamptz[], %s::timestamptz[])
               ON CONFLICT (instrument_id, boot_id) DO UPDATE
                  SET first_seen = least(b.first_seen, EXCLUDED.first_seen),
                      last_seen = greatest(b.last_seen, EXCLUDED.last_seen)
                WHERE EXCLUDED.first_seen < b.first_seen OR EXCLUDED.last_seen > b.last_seen
            RETURNING instrument_id, first_seen, xmax = 0 AS inserted  -- else updated
           )
           SELECT instrument_id, first_seen FROM written WHERE inserted""",
        (
            [i for i, _ in keys],
            [uuid.UUID(hex=boot) for _, boot in keys],
            [heard[key][0] for key in keys],
            [heard[key][1] for key in keys],
        ),
    )
    new: list[tuple[str, datetime]] = cur.fetchall()
    if not new:
        return {}
    cur.execute(
        """SELECT u.id, coalesce(
                      (SELECT b.last_seen FROM agent_boots b
                        WHERE b.instrument_id = u.id AND b.first_seen < u.first
                        ORDER BY b.first_seen DESC LIMIT 1),
                      u.first)
             FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, first)""",
        ([i for i, _ in new], [first for _, first in new]),
    )
    starts: dict[str, datetime] = {}
    for instrument_id, start in cur.fetchall():
        starts[instrument_id] = min(start, starts.get(instrument_id, start))
    return starts


def _ended_boots(
    cur: psycopg.Cursor[TupleRow], signals: dict[str, list[liveness.Signal]]
) -> dict[str, list[Boot]]:
    """Per instrument, each boot an offline status among ``signals`` names, and the boot after it.

    What ``liveness.follow`` needs to place a Will that came after the next
    boot's first messages; statuses are rare, so this is rarely asked.
    """
    offline = sorted(
        {
            (instrument_id, signal.boot)
            for instrument_id, found in signals.items()
            for signal in found
            if isinstance(signal, WentOffline)
        }
    )
    if not offline:
        return {}
    cur.execute(
        """SELECT u.id, b.boot_id, b.first_seen, b.last_seen
             FROM unnest(%s::text[], %s::uuid[]) AS u(id, boot)
             JOIN agent_boots w ON w.instrument_id = u.id AND w.boot_id = u.boot
            CROSS JOIN LATERAL (
                  SELECT w.boot_id, w.first_seen, w.last_seen
                  UNION ALL
                  (SELECT n.boot_id, n.first_seen, n.last_seen FROM agent_boots n
                    WHERE n.instrument_id = u.id AND n.first_seen > w.first_seen
                    ORDER BY n.first_seen LIMIT 1)) AS b""",
        ([i for i, _ in offline], [uuid.UUID(hex=boot) for _, boot in offline]),
    )
    found: dict[str, list[Boot]] = {}
    for instrument_id, boot, first, last in cur.fetchall():
        found.setdefault(instrument_id, []).append(Boot(boot.hex, first, last))
    return found


def _boot(row: Row) -> str:
    match row:
        case EventRow():
            return row.event.boot
        case HeartbeatRow():
            return row.heartbeat.boot
        case StatusRow():
            return row.status.boot


def _skew_ms(row: HeartbeatRow | None) -> int | None:
    if row is None:
        return None
    return (row.source.received_at - row.device_time) // timedelta(milliseconds=1)


def _uuid(boot: str | None) -> uuid.UUID | None:
    return None if boot is None else uuid.UUID(hex=boot)


def _hex(boot: uuid.UUID | None) -> str | None:
    return None if boot is None else boot.hex


def online(conn: psycopg.Connection[TupleRow], now: datetime, timeout: timedelta) -> int:
    """How many agents were heard within ``timeout`` and are not in an offline period."""
    row = conn.execute(
        """SELECT count(*) FROM instruments i
            WHERE i.last_heard_at >= %s
              AND NOT EXISTS (SELECT 1 FROM offline_periods o
                               WHERE o.instrument_id = i.id AND o.end_time IS NULL)""",
        (now - timeout,),
    ).fetchone()
    return int(row[0]) if row else 0
