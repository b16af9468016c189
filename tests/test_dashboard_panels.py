"""What the detail panels show, on a few rows written by hand so every figure is known.

The simulated fleet (``test_dashboard_queries``) proves that every query runs
and that the panels with an API counterpart equal it; here the edge cases a
fleet may not show are checked value by value: the state timeline at holes,
at the last message and at a range starting on an interval's boundary, the
gaps, local days and months across time zones, the pro-rated quota, sequence
gaps, reconciliation flags, offline periods and chain verdicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from dashboards import audit, fleet, institution, instrument
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


def test_current_state_is_the_open_interval_of_each_online_agent(
    conn: psycopg.Connection[Any],
) -> None:
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        for instrument_id in ("afm", "sem", "xrd"):
            cur.execute(
                "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'sh', %s)",
                (instrument_id, instrument_id.upper()),
            )
        cur.executemany(
            "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
            "VALUES (%s, %s, %s, %s)",
            [
                ("afm", "standby", utc(2, 10), utc(2, 11)),
                ("afm", "running", utc(2, 11), None),  # the latest, open: running
                ("sem", "running", utc(2, 10), utc(2, 11)),  # the latest is closed: unknown
            ],
        )
        statuses = [("nmr", "online"), ("tem", "offline"), ("afm", "online"), ("sem", "online")]
        cur.executemany(  # xrd: online, but nothing measured yet
            "INSERT INTO agent_status (instrument_id, status, boot_id, changed_at, received_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(i, status, uuid.uuid4(), utc(2, 9), utc(2, 9)) for i, status in statuses]
            + [("xrd", "online", uuid.uuid4(), utc(2, 9), utc(2, 9))],
        )
        # nmr: open off; tem: its agent is offline; sem, xrd: no open interval.
        assert run(conn, fleet.CURRENT_STATE) == [(1, 0, 1, 3)]


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


def test_a_range_starting_where_an_interval_ends_has_one_state_there(
    conn: psycopg.Connection[Any],
) -> None:
    """The off interval ends at 15:00 as the run starts: only the run is drawn from there."""
    assert run(conn, instrument.STATES, TimeRange(utc(2, 15), utc(3, 14))) == [
        (utc(2, 15), "nmr", 2),
        (utc(2, 17), "nmr", 1),
        (utc(2, 20), "nmr", 3),
        (utc(2, 22), "nmr", 0),
        (utc(3, 12), "nmr", 3),
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


def test_daily_quota_is_the_instruments_own_when_set(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE instruments SET annual_quota_h = 1000 WHERE id = 'nmr'")
    try:
        rows = run(conn, instrument.DAILY)
    finally:
        conn.execute("UPDATE instruments SET annual_quota_h = NULL WHERE id = 'nmr'")
    quotas = {r[0]: r[4] for r in rows}
    # The NMR's first local day (7 h of it in the range) at its own 1,000 h a year; the
    # specialised TEM's first New York day (09:00 to 05:00 UTC) still at its category's 800 h.
    assert quotas[utc(1, 16)] == pytest.approx(1000 * 7 / (365 * 24))
    assert quotas[datetime(2026, 3, 2, 5, tzinfo=UTC)] == pytest.approx(800 * 20 / (365 * 24))


ORDERS = [
    # order, window, billed hours
    ("A", utc(2, 15), utc(2, 17), 2.0),  # the run, billed exactly: overlapped by B
    ("B", utc(2, 15), utc(2, 17), 2.5),  # the same hours again, and more than measured
    ("C", utc(2, 22), utc(3, 1), 1.0),  # off throughout, every minute measured
    ("D", utc(2, 19), utc(2, 22), 0.0),  # one hour standby, then the two-hour hole
]


@pytest.fixture(scope="module")
def orders(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO service_orders (order_id, instrument_id, customer_org, external, "
            "starts_at, ends_at, billed_hours, amount_yuan) "
            "VALUES (%s, 'nmr', 'lab', false, %s, %s, %s, 0)",
            ORDERS,
        )


@pytest.mark.usefixtures("orders")
def test_reconciliation_flags_each_order_on_its_evidence(conn: psycopg.Connection[Any]) -> None:
    rows = {r[0]: r for r in run(conn, audit.ORDERS)}
    # order_id → (window_h, on_h, effective_h, coverage, overlapping orders, max overlap, flags)
    assert {k: (r[7:10], r[10:]) for k, r in rows.items()} == {
        "A": ((2.0, 2.0, 2.0), (1.0, "B", 2.0, "double_billed")),
        "B": ((2.0, 2.0, 2.0), (1.0, "A", 2.0, "inflated, double_billed")),
        "C": ((3.0, 0.0, 0.0), (1.0, None, None, "inflated, phantom")),
        "D": ((3.0, 1.0, 0.0), (pytest.approx(1 / 3), None, None, "unverifiable")),
    }
    (counts,) = run(conn, audit.FLAG_COUNTS)
    assert counts == (4, 2, 1, 2, 1)  # orders, then the flags in the order of ``Flag``
    assert [tuple(r[:6]) for r in run(conn, audit.EVIDENCE)] == [
        ("A", "nmr", "double_billed", "running", utc(2, 15), utc(2, 17)),
        ("B", "nmr", "inflated, double_billed", "running", utc(2, 15), utc(2, 17)),
        ("C", "nmr", "inflated, phantom", "off", utc(2, 22), utc(3, 1)),
        ("D", "nmr", "unverifiable", "standby", utc(2, 19), utc(2, 20)),
    ]


def test_offline_periods_say_how_they_ended(conn: psycopg.Connection[Any]) -> None:
    boot, other = uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO offline_periods (instrument_id, start_time, end_time, reason, boot_id, "
        "resumed_boot_id) VALUES ('nmr', %s, %s, 'heartbeat_timeout', %s, %s), "
        "('nmr', %s, %s, 'offline_status', %s, %s), ('tem', %s, NULL, 'offline_status', %s, NULL)",
        [utc(2, 10), utc(2, 11), boot, boot, utc(2, 20), utc(2, 22), boot, other, utc(3, 2), other],
    )
    rows = run(conn, audit.OFFLINE)
    assert [(r[0], r[4], r[5]) for r in rows] == [
        ("nmr", "reconnected: replayed", pytest.approx(1.0)),
        ("nmr", "restarted: unmeasured", pytest.approx(2.0)),
        ("tem", "still offline", pytest.approx(12.0)),  # counted to the end of the range
    ]
    clocks = {r[0]: r[5] for r in run(conn, audit.CLOCKS)}
    assert clocks == {"nmr": 2, "tem": 1}


def test_chain_verification_counts_verdicts_and_lists_the_bad(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("UPDATE events SET verification = 'ok' WHERE instrument_id = 'nmr'")
    conn.execute("UPDATE events SET verification = 'gap' WHERE seq IN (4, 9)")
    try:
        (row,) = run(conn, audit.VERIFICATION)
        failed = run(conn, audit.FAILED_VERIFICATION)
    finally:
        conn.execute("UPDATE events SET verification = NULL")
    # instrument, name, events, ok, gap, chain_break, bad_signature, unknown_key, unverified
    assert row == ("nmr", "NMR", 5, 3, 2, 0, 0, 0, 0)
    assert [(r[3], r[4]) for r in failed] == [(9, "gap"), (4, "gap")]


def test_quota_of_a_range_across_new_year_takes_each_years_length(
    conn: psycopg.Connection[Any],
) -> None:
    """Ten Shanghai days of 2027 and ten of leap 2028: each part at its own year's length."""
    new_year = datetime(2027, 12, 31, 16, tzinfo=UTC)  # 1 Jan 2028 00:00 +08:00
    across = TimeRange(new_year - timedelta(days=10), new_year + timedelta(days=10))
    summary = {r[0]: r for r in run(conn, institution.SUMMARY, across)}
    assert summary["Shanghai"][3] == pytest.approx(1400 * 10 / 365 + 1400 * 10 / 366, rel=1e-12)
