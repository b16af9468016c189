"""Re-deriving stored state intervals after new events, wherever in time they land.

Agents resend from their outboxes after outages, so events arrive out of
order. Rather than patching intervals, the tail of an instrument's timeline
is rebuilt from its events: from the start of the interval that began
strictly before the earliest new event (that interval's start, and so its
boundary with the one before, cannot change), to the end. The math is
``instrumetry.domain.intervals.derive``; this module only moves rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

from instrumetry.domain.intervals import derive
from instrumetry.domain.states import State

# One statement: find each instrument's anchor, delete its intervals from the
# anchor on, and read its events from the anchor on (the SELECT sees the
# snapshot before the DELETE, which is fine: it reads events, not intervals).
# Events sharing a device time collapse to the one with the highest seq, so no
# interval has zero length.
_ANCHOR_DELETE_READ = """
WITH touched AS (
    SELECT u.id,
           coalesce(
               (SELECT max(iv.start_time) FROM intervals iv
                 WHERE iv.instrument_id = u.id AND iv.start_time < u.earliest),
               '-infinity'::timestamptz) AS anchor
      FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, earliest)
), removed AS (
    DELETE FROM intervals iv USING touched
     WHERE iv.instrument_id = touched.id AND iv.start_time >= touched.anchor
)
SELECT DISTINCT ON (e.instrument_id, e.device_time) e.instrument_id, e.device_time, e.to_state
  FROM events e JOIN touched ON e.instrument_id = touched.id AND e.device_time >= touched.anchor
 ORDER BY e.instrument_id, e.device_time, e.seq DESC
"""


def rebuild_intervals(cur: psycopg.Cursor[TupleRow], earliest: Mapping[str, datetime]) -> int:
    """Rebuild the intervals of each instrument from its earliest new event time on.

    Runs inside the caller's transaction, which must hold the instruments'
    row locks so that concurrent collectors rebuild one instrument in turn.
    Returns how many interval rows were written.
    """
    if not earliest:
        return 0
    ids = sorted(earliest)
    cur.execute(_ANCHOR_DELETE_READ, (ids, [earliest[i] for i in ids]))
    changes: dict[str, list[tuple[datetime, State]]] = {}
    for instrument_id, device_time, to_state in cur.fetchall():
        changes.setdefault(instrument_id, []).append((device_time, State(to_state)))
    written = 0
    with cur.copy("COPY intervals (instrument_id, state, start_time, end_time) FROM STDIN") as copy:
        for instrument_id, timeline in changes.items():
            for interval in derive(timeline):
                copy.write_row((instrument_id, interval.state.value, interval.start, interval.end))
                written += 1
    return written
