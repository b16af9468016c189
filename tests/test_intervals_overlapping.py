"""``intervals_overlapping`` (migration 0016): the intervals of one instrument overlapping a range.

Everything that reads intervals over a range (the collector's daily rollups,
the API, the dashboards) goes through it, so it must return exactly what the
plain overlap test returns, and read a range of an instrument with years of
history without reading the years.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from tests.test_collector_store import register

T0 = datetime(2022, 1, 1, tzinfo=UTC)
_PLAIN = """
SELECT state::text, start_time, end_time FROM intervals
 WHERE instrument_id = %s AND start_time < %s AND (end_time IS NULL OR end_time > %s)
 ORDER BY start_time
"""
_THROUGH = """
SELECT state::text, start_time, end_time FROM intervals_overlapping(%s, %s, %s)
 ORDER BY start_time
"""


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def test_it_returns_what_the_plain_overlap_test_returns(
    conn: psycopg.Connection[TupleRow],
) -> None:
    nmr = register(conn)
    # Back to back, a gap (10..15 unmeasured, no row), then an open interval.
    timeline = [(0, 5, "standby"), (5, 10, "running"), (15, 20, "off"), (20, None, "running")]
    for start, end, state in timeline:
        conn.execute(
            "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
            "VALUES (%s, %s, %s, %s)",
            (nmr, state, minutes(start), None if end is None else minutes(end)),
        )
    bounds = sorted({m + d for m in (0, 5, 10, 15, 20, 30) for d in (-0.5, 0, 0.5)})
    for a, b in itertools.combinations(bounds, 2):
        params = (minutes(a), minutes(b))
        plain = conn.execute(_PLAIN, (nmr, params[1], params[0])).fetchall()
        assert conn.execute(_THROUGH, (nmr, *params)).fetchall() == plain, (a, b)
    assert conn.execute(_THROUGH, ("no-such-instrument", minutes(0), minutes(30))).fetchall() == []


def test_a_day_of_years_of_history_reads_about_a_day(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    hours = 4 * 365 * 12  # four years of two-hour intervals
    conn.execute(
        "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
        "SELECT %(id)s, 'running', %(t0)s + n * interval '2 hours', "
        "       %(t0)s + (n + 1) * interval '2 hours' "
        "  FROM generate_series(0, %(last)s) AS n",
        {"id": nmr, "t0": T0, "last": hours - 1},
    )
    conn.execute("ANALYZE intervals")
    end = T0 + timedelta(hours=2 * hours)
    explained = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM unnest(%s::text[]) AS r(id) "
        "CROSS JOIN LATERAL intervals_overlapping(r.id, %s, %s)",
        ([nmr], end - timedelta(days=1), end),
    ).fetchone()
    assert explained is not None
    read = sum(_rows_read(explained[0][0]["Plan"], "intervals"))
    assert read <= 20, f"{read} interval rows read for a day's 12"


def _rows_read(plan: dict[str, Any], table: str) -> Iterator[float]:
    """Rows each scan of ``table`` in ``plan`` (EXPLAIN ANALYZE's JSON) read, kept or not."""
    if plan.get("Relation Name") == table:
        kept = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        yield kept * plan["Actual Loops"]
    for child in plan.get("Plans", []):
        yield from _rows_read(child, table)
