"""What the detail panels show, on a few rows written by hand so every figure is known.

The simulated fleet (``test_dashboard_queries``) proves that every query runs
and that the usage table equals the API; here the panels the API has no
counterpart for are checked value by value: the state timeline, the gaps,
local days and months across time zones, the pro-rated quota, sequence gaps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from dashboards import audit, institution, instrument
from dashboards.common import INSTITUTIONS, INSTRUMENTS
from tests.grafana import TimeRange, Variable, expand

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


# Shanghai is UTC+8: its local days start at 16:00 UTC.
INSTITUTION = "INSERT INTO institutions (id, name, tz) VALUES (%s, %s, %s)"
ROWS: list[tuple[str, tuple[Any, ...]]] = [
    (INSTITUTION, ("sh", "Shanghai", "Asia/Shanghai")),
    (INSTITUTION, ("ny", "New York", "America/New_York")),
    (
        "INSERT INTO instruments (id, institution_id, name, last_seen) VALUES (%s, %s, %s, %s)",
        ("nmr", "sh", "NMR", utc(3, 12)),
    ),
    (
        "INSERT INTO instruments (id, institution_id, name, category) VALUES (%s, %s, %s, %s)",
        ("tem", "ny", "TEM", "specialised"),
    ),
]
INTERVALS = [
    ("nmr", "off", utc(2, 10), utc(2, 15)),
    ("nmr", "running", utc(2, 15), utc(2, 17)),  # 23:00–01:00 in Shanghai: two local days
    ("nmr", "standby", utc(2, 17), utc(2, 20)),
    # Nothing from 20:00 to 22:00: a hole between intervals.
    ("nmr", "off", utc(2, 22), None),  # open; last heard from on the 3rd at 12:00
    ("tem", "standby", utc(2, 12), None),  # open, and its agent never heard from since
]
RANGE = TimeRange(utc(2, 9), utc(3, 14), timedelta(minutes=1))


@pytest.fixture(scope="module")
def conn(make_database: MakeDatabase) -> Iterator[psycopg.Connection[Any]]:
    with make_database("test_panels") as url, psycopg.connect(url, autocommit=True) as conn:
        for statement, values in ROWS:
            conn.execute(statement, values)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
                "VALUES (%s, %s, %s, %s)",
                INTERVALS,
            )
            boot = uuid.uuid4()
            cur.executemany(
                "INSERT INTO events (instrument_id, boot_id, seq, device_time, received_at, "
                "from_state, to_state, prev_hash, signature) "
                "VALUES ('nmr', %s, %s, %s, %s, 'off', 'running', %s, %s)",
                [
                    (boot, seq, utc(2, 15) + timedelta(minutes=seq), utc(2, 16), bytes(32), b"s")
                    for seq in (1, 2, 4, 5, 9)
                ],
            )
        yield conn


def run(conn: psycopg.Connection[Any], sql: str, time_range: TimeRange = RANGE) -> list[Any]:
    institutions = Variable([r[0] for r in conn.execute(INSTITUTIONS).fetchall()])
    instruments = Variable(
        [r[0] for r in conn.execute(expand(INSTRUMENTS, time_range, {"institution": institutions}))]
    )
    variables = {"institution": institutions, "instrument": instruments}
    return conn.execute(expand(sql, time_range, variables)).fetchall()


def test_state_timeline_marks_unknown_where_known_time_stops(
    conn: psycopg.Connection[Any],
) -> None:
    assert run(conn, instrument.STATES) == [
        (utc(2, 10), "nmr", 0),
        (utc(2, 12), "tem", 3),  # never heard from after it started: unknown at once
        (utc(2, 15), "nmr", 2),
        (utc(2, 17), "nmr", 1),
        (utc(2, 20), "nmr", 3),  # the hole
        (utc(2, 22), "nmr", 0),
        (utc(3, 12), "nmr", 3),  # the last message
    ]


def test_gaps_are_the_range_minus_known_time(conn: psycopg.Connection[Any]) -> None:
    rows = run(conn, instrument.GAPS)
    assert [tuple(r[:3]) for r in rows] == [
        ("nmr", utc(2, 9), utc(2, 10)),
        ("nmr", utc(2, 20), utc(2, 22)),
        ("nmr", utc(3, 12), utc(3, 14)),
        ("tem", utc(2, 9), utc(3, 14)),
    ]
    assert [r[3] for r in rows] == pytest.approx([1.0, 2.0, 2.0, 29.0])


def test_daily_hours_split_at_local_midnight_with_the_prorated_quota(
    conn: psycopg.Connection[Any],
) -> None:
    only_nmr = "i.institution_id IN ($institution) AND i.id IN ($instrument) AND i.id = 'nmr'"
    sql = instrument.DAILY.replace(
        "i.institution_id IN ($institution) AND i.id IN ($instrument)", only_nmr
    )
    rows = run(conn, sql)
    # Local days of Shanghai, cut to the range: 2 Mar 17:00–24:00 and 3 Mar 00:00–22:00.
    assert [r[0] for r in rows] == [utc(1, 16), utc(2, 16)]
    day_1, day_2 = rows
    # 2 Mar local: running 23:00–24:00 (1 h), nothing else on; effective adds 30 min before.
    assert day_1[1:4] == pytest.approx((1.0, 1.0, 1.0))
    # 3 Mar local: running 00:00–01:00, standby 01:00–04:00; effective: run + 30 min after.
    assert day_2[1:4] == pytest.approx((4.0, 1.0, 1.5))
    hours_in_2026 = 365 * 24
    assert day_1[4] == pytest.approx(1400 * 7 / hours_in_2026)
    assert day_2[4] == pytest.approx(1400 * 22 / hours_in_2026)


def test_months_are_local_months_of_each_institution(conn: psycopg.Connection[Any]) -> None:
    march = TimeRange(datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))
    rows = run(conn, institution.MONTHLY_BY_INSTITUTION, march)
    starts = {(r[1], r[0]) for r in rows}
    assert starts == {
        ("Shanghai", datetime(2026, 1, 31, 16, tzinfo=UTC)),  # 1 Feb 00:00 +08:00
        ("Shanghai", datetime(2026, 2, 28, 16, tzinfo=UTC)),  # 1 Mar 00:00 +08:00
        ("New York", datetime(2026, 2, 1, 5, tzinfo=UTC)),  # 1 Feb 00:00 -05:00
        ("New York", datetime(2026, 3, 1, 5, tzinfo=UTC)),
    }
    summary = {r[0]: r for r in run(conn, institution.SUMMARY, march)}
    # The specialised TEM's quota is 800 h a year, pro-rated to the 18 days of the range.
    assert summary["New York"][3] == pytest.approx(800 * 18 * 24 / (365 * 24))


def test_audit_counts_sequence_gaps(conn: psycopg.Connection[Any]) -> None:
    (row,) = run(conn, audit.EVENTS_PER_INSTRUMENT)
    assert row[0] == "nmr"
    assert row[3:5] == (5, 1)  # events, boots
    assert row[7:] == (1, 9, 2)  # first and last seq, and the two places they skip
