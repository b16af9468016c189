"""Re-deriving stored state intervals after new events, wherever in time they land.

Agents resend from their outboxes after outages, so events arrive out of
order. Rather than patching intervals, the tail of an instrument's timeline
is rebuilt from its events: from the start of the interval that began
strictly before the earliest change (that interval's start, and so its
boundary with the one before, cannot change), to the end. Events whose
signature failed are left out, and offline periods nobody measured become
``unknown``, as do restarts (``agent_boots``). The math is
``instrumetry.domain.intervals.derive`` and ``instrumetry.domain.liveness.overlay``;
this module only moves rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector import db, rollups
from instrumetry.domain.audit import AUTHENTIC, Verification
from instrumetry.domain.intervals import derive
from instrumetry.domain.liveness import Boot, OfflinePeriod, OfflineReason, overlay, restarts
from instrumetry.domain.states import State

# One statement: find each instrument's anchor, delete its intervals from the
# anchor on, and return the anchors with the state that began there. The
# anchor is an interval start, so the intervals before it stay valid. The rows
# to delete are found per instrument, by a LATERAL the planner may not flatten
# (OFFSET 0), and deleted by their row ids (ctid, stable under the instruments'
# row locks): a TID scan, whatever the planner believes of the table. Deleted
# through a join, it hashed the whole intervals table whenever its statistics
# lagged (always, for a table rewritten at every batch): 35 to 71 ms a batch of
# 200 instruments with 80,000 intervals stored, a cost growing with all
# history, against 5 ms.
_ANCHOR_DELETE = """
WITH touched AS (
    SELECT u.id,
           coalesce(
               (SELECT max(iv.start_time) FROM intervals iv
                 WHERE iv.instrument_id = u.id AND iv.start_time < u.earliest),
               '-infinity'::timestamptz) AS anchor
      FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, earliest)
), removed AS (
    DELETE FROM intervals
     WHERE ctid = ANY(ARRAY(
           SELECT tail.ctid FROM touched
            CROSS JOIN LATERAL (SELECT t.ctid FROM intervals t
                                 WHERE t.instrument_id = touched.id
                                   AND t.start_time >= touched.anchor
                                OFFSET 0) AS tail))
 RETURNING instrument_id, start_time, state
)
SELECT t.id, nullif(t.anchor, '-infinity'), r.state  -- psycopg has no -infinity
  FROM touched t LEFT JOIN removed r ON r.instrument_id = t.id AND r.start_time = t.anchor
"""
# Where the state at an anchor changed (an unmeasured period now starting
# later, say), the rebuilt interval there may continue the one before it:
# the two become one, as if the rebuild had started earlier.
_MERGE = """
WITH merged AS (
    UPDATE intervals p SET end_time = f.end_time
      FROM unnest(%s::text[], %s::timestamptz[]) AS c(id, anchor)
      JOIN intervals f ON f.instrument_id = c.id AND f.start_time = c.anchor
     WHERE p.instrument_id = c.id AND p.end_time = c.anchor AND p.state = f.state
 RETURNING p.instrument_id, c.anchor
)
DELETE FROM intervals d USING merged m
 WHERE d.instrument_id = m.instrument_id AND d.start_time = m.anchor
"""
# The event in force at each anchor (an interval may start where an offline
# period ended, between events): looked for first from a month before the
# earliest anchor on, where it almost always is, and only if none is there at
# any time. With the scalar bound TimescaleDB excludes the older chunks once,
# at startup; without it each instrument's look-up weighed every chunk of
# history (0.16 ms at five years, for each instrument of each batch).
_FLOORS = """
SELECT u.id, coalesce(
           (SELECT p.device_time FROM events p
             WHERE p.instrument_id = u.id AND p.device_time <= u.anchor
               AND p.device_time > %(recent)s
               AND coalesce(p.verification, 'ok') <> ALL(%(excluded)s::text[])
             ORDER BY p.device_time DESC LIMIT 1),
           (SELECT p.device_time FROM events p
             WHERE p.instrument_id = u.id AND p.device_time <= u.anchor
               AND coalesce(p.verification, 'ok') <> ALL(%(excluded)s::text[])
             ORDER BY p.device_time DESC LIMIT 1),
           u.anchor)
  FROM unnest(%(ids)s::text[], %(anchors)s::timestamptz[]) AS u(id, anchor)
"""
# The authentic events from each floor on (none: from the first). Events sharing
# a device time collapse to the one with the highest seq, so no interval has zero
# length. A LATERAL the planner may not flatten (OFFSET 0), bounded below by the
# lowest floor as well, so that TimescaleDB excludes the chunks before it once;
# as a join, a misestimate hashed all events.
_EVENTS = """
SELECT DISTINCT ON (f.id, e.device_time) f.id, e.device_time, e.to_state, e.boot_id
  FROM unnest(%(ids)s::text[], %(floors)s::timestamptz[]) AS f(id, floor)
 CROSS JOIN LATERAL (
       SELECT e.device_time, e.to_state, e.boot_id, e.seq FROM events e
        WHERE e.instrument_id = f.id
          AND e.device_time >= coalesce(f.floor, '-infinity')
          AND e.device_time >= coalesce(%(lowest)s::timestamptz, '-infinity')
          AND coalesce(e.verification, 'ok') <> ALL(%(excluded)s::text[])
       OFFSET 0) AS e
 ORDER BY f.id, e.device_time, e.seq DESC
"""
# The offline periods open or ending after each anchor: per instrument, through
# the indexes of open periods and of period ends (migration 0017), in a LATERAL
# the planner may not flatten; as a join, it hashed every period ever recorded.
_PERIODS = """
SELECT u.id, o.start_time, o.end_time, o.reason, o.boot_id, o.resumed_boot_id
  FROM unnest(%(ids)s::text[], %(anchors)s::timestamptz[]) AS u(id, anchor)
 CROSS JOIN LATERAL (
       SELECT o.start_time, o.end_time, o.reason, o.boot_id, o.resumed_boot_id
         FROM offline_periods o
        WHERE o.instrument_id = u.id
          AND (o.end_time IS NULL OR o.end_time > coalesce(u.anchor, '-infinity'))
       OFFSET 0) AS o
 ORDER BY u.id, o.start_time
"""
# Boots that began after each anchor, with the boot before each: the restarts
# the rebuilt stretch may hold. None begin after it while an agent keeps running.
_BOOTS = """
SELECT u.id, b.boot_id, b.first_seen, b.last_seen
  FROM unnest(%(ids)s::text[], %(anchors)s::timestamptz[]) AS u(id, anchor)
 CROSS JOIN LATERAL (
       SELECT n.first_seen FROM agent_boots n
        WHERE n.instrument_id = u.id AND n.first_seen > coalesce(u.anchor, '-infinity')) AS n
 CROSS JOIN LATERAL (
       (SELECT boot_id, first_seen, last_seen FROM agent_boots b
         WHERE b.instrument_id = u.id AND b.first_seen < n.first_seen
         ORDER BY b.first_seen DESC LIMIT 1)
       UNION ALL
       (SELECT boot_id, first_seen, last_seen FROM agent_boots b
         WHERE b.instrument_id = u.id AND b.first_seen = n.first_seen)) AS b
"""
_INTERVAL_TYPES = {
    "instrument_id": "text",
    "state": "text",
    "start_time": "timestamptz",
    "end_time": "timestamptz",
}
_FIRST_EVENT = "SELECT min(device_time) FROM events WHERE instrument_id = %s"
FLOOR_WINDOW = timedelta(days=31)
"""How far before the earliest anchor the event in force there is looked for first."""
_EXCLUDED = sorted(set(Verification) - AUTHENTIC)
"""Verdicts of events that may not come from the agent: never merged into usage."""


def rebuild_intervals(cur: psycopg.Cursor[TupleRow], earliest: Mapping[str, datetime]) -> int:
    """Rebuild the intervals of each instrument from ``earliest`` (its earliest change) on.

    Changes are new events and offline periods opened or closed. Runs inside
    the caller's transaction, which must hold the instruments' row locks so
    that concurrent collectors rebuild one instrument in turn. Returns how
    many interval rows were written.
    """
    if not earliest:
        return 0
    ids = sorted(earliest)
    cur.execute(_ANCHOR_DELETE, (ids, [earliest[i] for i in ids]))
    anchors: dict[str, datetime | None] = {}
    replaced: dict[str, str | None] = {}
    for instrument_id, anchor, state in cur.fetchall():
        anchors[instrument_id], replaced[instrument_id] = anchor, state
    params = {"ids": list(anchors), "anchors": list(anchors.values()), "excluded": _EXCLUDED}
    known = [anchor for anchor in anchors.values() if anchor is not None]
    recent = min(known) - FLOOR_WINDOW if known else None
    cur.execute(_FLOORS, params | {"recent": recent})
    floors: dict[str, datetime | None] = dict(cur.fetchall())
    found = [floor for floor in floors.values() if floor is not None]
    lowest = min(found) if found and len(found) == len(floors) else None  # None: from the first
    cur.execute(_EVENTS, params | {"floors": [floors[i] for i in anchors], "lowest": lowest})
    changes: dict[str, list[tuple[datetime, State, str]]] = {}
    for instrument_id, device_time, to_state, boot in cur.fetchall():
        changes.setdefault(instrument_id, []).append((device_time, State(to_state), boot.hex))
    cur.execute(_PERIODS, params)
    periods: dict[str, list[OfflinePeriod]] = {}
    for instrument_id, start, end, reason, boot, resumed in cur.fetchall():
        periods.setdefault(instrument_id, []).append(
            OfflinePeriod(start, end, OfflineReason(reason), _hex(boot), _hex(resumed))
        )
    cur.execute(_BOOTS, params)
    boots: dict[str, set[Boot]] = {}
    for instrument_id, boot, first, last in cur.fetchall():
        boots.setdefault(instrument_id, set()).add(Boot(boot.hex, first, last))
    for instrument_id, runs in boots.items():
        periods.setdefault(instrument_id, []).extend(restarts(runs))
    written = 0
    changed_at_anchor: dict[str, datetime] = {}
    with db.copy_in(cur, "intervals", _INTERVAL_TYPES) as copy:
        for instrument_id, anchor in anchors.items():
            timeline = overlay(changes.get(instrument_id, []), periods.get(instrument_id, []))
            for interval in derive(timeline):
                start = interval.start if anchor is None else max(interval.start, anchor)
                if interval.end is not None and interval.end <= start:
                    continue  # before the anchor: kept, not deleted
                if start == anchor and interval.state.value != replaced[instrument_id]:
                    changed_at_anchor[instrument_id] = anchor
                copy.write_row((instrument_id, interval.state.value, start, interval.end))
                written += 1
    if changed_at_anchor:
        cur.execute(_MERGE, (list(changed_at_anchor), list(changed_at_anchor.values())))
    return written


def rederive(
    conn: psycopg.Connection[TupleRow],
    instrument_id: str | None = None,
    since: datetime | None = None,
) -> tuple[int, int, int]:
    """Derive the intervals of every instrument (or one) again, and the daily rollups after them.

    For intervals derived by an older collector: before ``agent_boots``
    (migration 0014), a restart whose Will was stored after the new boot's
    first messages was not made unknown. From ``since`` on (as if the
    earliest change were there), by default from the instrument's first
    event; the rollups from the day it reaches back to, the open day
    included. One transaction per instrument, under its row lock, so a
    running collector waits for it rather than racing it. Returns
    (instruments, interval rows written, days written).
    """
    ids = rollups.instrument_ids(conn, instrument_id)
    written = days = 0
    for found in ids:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT 1 FROM instruments WHERE id = %s FOR NO KEY UPDATE", (found,))
            start = since
            if start is None:
                cur.execute(_FIRST_EVENT, (found,))
                row = cur.fetchone()
                start = None if row is None else row[0]
            if start is None:
                continue  # nothing measured, nothing derived
            written += rebuild_intervals(cur, {found: start})
            changed = {found: rollups.changed_from(start)}
            days += rollups.refresh(cur, changed, {}, open_day=True)
    return len(ids), written, days


def _hex(boot: uuid.UUID | None) -> str | None:
    return None if boot is None else boot.hex
