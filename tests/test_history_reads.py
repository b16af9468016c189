"""Reads whose cost must not grow with history, checked by the plans PostgreSQL makes.

Each batch and each report reads a little of what years of measurement hold:
the intervals and offline periods near a moment. These tests store a long
history and require that the reads touch about what they return, planned
from the statistics a busy database really has (intervals are rewritten at
every batch, so theirs always lag behind).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from collector import db
from collector.rebuild import _ANCHOR_DELETE, _PERIODS, rebuild_intervals
from tests.conftest import MakeDatabase
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


def test_intervals_overlapping_returns_what_the_plain_overlap_test_returns(
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
        plain = conn.execute(_PLAIN, (nmr, minutes(b), minutes(a))).fetchall()
        assert conn.execute(_THROUGH, (nmr, minutes(a), minutes(b))).fetchall() == plain, (a, b)
    assert conn.execute(_THROUGH, ("no-such-instrument", minutes(0), minutes(30))).fetchall() == []


def test_a_day_of_years_of_intervals_reads_about_a_day(
    conn: psycopg.Connection[TupleRow],
) -> None:
    nmr = register(conn)
    count = 4 * 365 * 12  # four years of two-hour intervals
    conn.execute(
        "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
        "SELECT %(id)s, 'running', %(t0)s + n * interval '2 hours', "
        "       %(t0)s + (n + 1) * interval '2 hours' "
        "  FROM generate_series(0, %(last)s) AS n",
        {"id": nmr, "t0": T0, "last": count - 1},
    )
    conn.execute("ANALYZE intervals")
    end = T0 + timedelta(hours=2 * count)
    plan = explain(
        conn,
        "SELECT * FROM unnest(%s::text[]) AS r(id) "
        "CROSS JOIN LATERAL intervals_overlapping(r.id, %s, %s)",
        ([nmr], end - timedelta(days=1), end),
    )
    read = sum(rows for _, table, rows in scans(plan) if table == "intervals")
    assert read <= 20, f"{read} interval rows read for a day's 12"


def test_the_anchor_delete_finds_its_rows_by_index_whatever_the_statistics_say(
    make_database: MakeDatabase,
) -> None:
    """Deleted through a join, the tails were found by hashing every stored interval."""
    with make_database("anchor") as url, db.connect_ingest(url) as conn:
        conn.execute("ANALYZE intervals")  # statistics of an empty table, as after a TRUNCATE
        ids = [register(conn) for _ in range(40)]
        conn.execute(
            "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
            "SELECT i, 'running', %(t0)s + n * interval '1 minute', "
            "       CASE WHEN n < 499 THEN %(t0)s + (n + 1) * interval '1 minute' END "
            "  FROM unnest(%(ids)s::text[]) AS i, generate_series(0, 499) AS n",
            {"t0": T0, "ids": ids},
        )
        earliest = [minutes(499.5)] * len(ids)
        found = {
            (node, table)
            for node, table, _ in scans(
                explain(conn, _ANCHOR_DELETE, (ids, earliest), analyze=False)
            )
        }
        assert ("Tid Scan", "intervals") in found  # the delete, by row id
        by_index = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan"}
        assert {node for node, table in found if table == "intervals"} <= by_index, found
        with conn.transaction(), conn.cursor() as cur:
            rebuild_intervals(cur, dict(zip(ids, earliest, strict=True)))
        assert conn.execute("SELECT count(*) FROM intervals").fetchone() == (40 * 499,)


def test_a_rebuild_reads_only_the_offline_periods_after_its_anchor(
    conn: psycopg.Connection[TupleRow],
) -> None:
    ids = [register(conn) for _ in range(20)]
    conn.execute(
        "INSERT INTO offline_periods (instrument_id, start_time, end_time, reason) "
        "SELECT i, %(t0)s + n * interval '2 days', "
        "       %(t0)s + n * interval '2 days' + interval '1 hour', 'heartbeat_timeout' "
        "  FROM unnest(%(ids)s::text[]) AS i, generate_series(0, 499) AS n",
        {"t0": T0, "ids": ids},
    )
    conn.execute(
        "INSERT INTO offline_periods (instrument_id, start_time, reason) "
        "SELECT i, %s, 'offline_status' FROM unnest(%s::text[]) AS i",
        (T0 + timedelta(days=1000), ids),
    )
    conn.execute("ANALYZE offline_periods")
    anchors = [T0 + timedelta(days=997)] * len(ids)  # one closed period after it, and the open one
    params = {"ids": ids, "anchors": anchors}
    assert len(conn.execute(_PERIODS, params).fetchall()) == 2 * len(ids)
    read = sum(
        rows
        for _, table, rows in scans(explain(conn, _PERIODS, params))
        if table == "offline_periods"
    )
    assert read <= 4 * len(ids), f"{read} periods read for {2 * len(ids)}"


def explain(
    conn: psycopg.Connection[TupleRow], query: str, params: Any, *, analyze: bool = True
) -> dict[str, Any]:
    """The plan of ``query`` (EXPLAIN's JSON), executed unless ``analyze`` is false.

    Executed inside a transaction that is rolled back: a plan of a DELETE
    deletes nothing.
    """
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN ({options}) {query}", params).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str, float]]:
    """Every scan of a table in ``plan``: (node type, table, rows it read, kept or not).

    Rows are counted only in a plan that was executed (``explain(analyze=True)``).
    """
    if "Relation Name" in plan and plan["Node Type"].endswith("Scan"):
        read = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        read += plan.get("Rows Removed by Index Recheck", 0)
        yield plan["Node Type"], plan["Relation Name"], read * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", []):
        yield from scans(child)
