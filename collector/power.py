"""Keeping the hourly power statistics and the raw heartbeats' retention window.

A batch folds its new heartbeats into their hours in its own transaction, so
a redelivered heartbeat (no new row) adds nothing. That rests on the
heartbeat's unique key, which is gone once its chunk is dropped: a heartbeat
dated more than the retention window before it was received therefore counts
in no hour. The fold is ``instrumetry.domain.power``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import TupleRow

from collector.ingest import HeartbeatRow
from instrumetry.domain import power
from instrumetry.domain.audit import epoch_ms, utc_time

_COLUMNS = "instrument_id, hour, heartbeats, samples, power_sum_w, power_min_w, power_max_w"
_ROWS = """SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::int4[], %s::int8[],
                                %s::float8[], %s::float4[], %s::float4[])"""
_CURRENT = f"SELECT {_COLUMNS} FROM power_current WHERE instrument_id = ANY(%s)"
_SETTLE = f"""
INSERT INTO power_hourly AS p ({_COLUMNS}) {_ROWS}
    ON CONFLICT (instrument_id, hour) DO UPDATE
   SET heartbeats = p.heartbeats + EXCLUDED.heartbeats,
       samples = p.samples + EXCLUDED.samples,
       power_sum_w = p.power_sum_w + EXCLUDED.power_sum_w,
       power_min_w = least(p.power_min_w, EXCLUDED.power_min_w),
       power_max_w = greatest(p.power_max_w, EXCLUDED.power_max_w)
"""
_REPLACE = f"""
INSERT INTO power_current ({_COLUMNS}) {_ROWS}
    ON CONFLICT (instrument_id) DO UPDATE
   SET hour = EXCLUDED.hour, heartbeats = EXCLUDED.heartbeats, samples = EXCLUDED.samples,
       power_sum_w = EXCLUDED.power_sum_w, power_min_w = EXCLUDED.power_min_w,
       power_max_w = EXCLUDED.power_max_w
"""


def fold(
    cur: psycopg.Cursor[TupleRow],
    heartbeats: Sequence[HeartbeatRow],
    retention: timedelta | None = None,
) -> int:
    """Fold the newly stored ``heartbeats`` into their hours; return how many rows changed.

    Each instrument's current hour (``power_current``) takes its heartbeats;
    a later hour moves it into ``power_hourly``, and late heartbeats are
    added there (``instrumetry.domain.power.advance``). With a ``retention``
    window, heartbeats dated further back than it before their receipt are
    left out (see the module). Runs under the instruments' row locks, and
    writes in key order.
    """
    kept = [
        row.heartbeat
        for row in heartbeats
        if retention is None or row.device_time >= row.source.received_at - retention
    ]
    hours = power.hourly(kept)
    if not hours:
        return 0
    cur.execute(_CURRENT, (sorted({hour.instrument_id for hour in hours}),))
    current = {
        instrument_id: power.HourPower(instrument_id, epoch_ms(hour), *figures)
        for instrument_id, hour, *figures in cur.fetchall()
    }
    settled, latest = power.advance(current, hours)
    if settled:
        cur.execute(_SETTLE, _columns(settled))
    cur.execute(_REPLACE, _columns([latest[key] for key in sorted(latest)]))
    return len(settled) + len(latest)


def _columns(hours: Sequence[power.HourPower]) -> tuple[list[object], ...]:
    return (
        [hour.instrument_id for hour in hours],
        [utc_time(hour.hour_ms) for hour in hours],
        [hour.heartbeats for hour in hours],
        [hour.samples for hour in hours],
        [hour.power_sum_w for hour in hours],
        [hour.power_min_w for hour in hours],
        [hour.power_max_w for hour in hours],
    )


def drop_heartbeats(conn: psycopg.Connection[TupleRow], before: datetime) -> list[str]:
    """Drop the heartbeat chunks that hold nothing dated from ``before`` on; their names.

    Whole chunks (a day each) go, so up to a day older than ``before`` stays.
    """
    rows = conn.execute("SELECT drop_chunks('heartbeats', older_than => %s)", (before,))
    return [name for (name,) in rows.fetchall()]
