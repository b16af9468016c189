"""Monthly rollups: always the sum of their days, and read by period totals only when valid.

Three instruments, two in Shanghai and one in Berlin (whose March has the
change to summer time, a 23-hour day), with a random timeline from late
January to early April 2026 written as intervals; the daily rollups are
built by ``collector.rollups.rebuild`` and the monthly ones follow by
trigger.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from psycopg.rows import TupleRow

from api.annual import usage_by_instrument
from api.auth import Role
from api.registry import upsert_institutions, upsert_instruments
from collector.rollups import rebuild
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.intervals import derive
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.states import State
from tests.api_support import issue_token, serve
from tests.test_rollups import close

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

CALENDARS = {
    "sh": WorkingCalendar(holidays=frozenset({date(2026, 2, 17), date(2026, 2, 18)})),
    "be": WorkingCalendar(tz="Europe/Berlin"),
}
INSTRUMENTS = {"sh-a": "sh", "sh-b": "sh", "be-a": "be"}
START = datetime(2026, 1, 25, tzinfo=UTC)
LAST_SEEN = datetime(2026, 4, 5, 12, tzinfo=UTC)
MONTHS = {"from": "2026-02-01", "to": "2026-03-31"}
"""Two whole months in every time zone: served from monthly rollups."""
PERIODS = [
    MONTHS,
    {"from": "2026-01-27", "to": "2026-04-03"},  # part of January and April, by day
    {"from": "2026-02-03T09:30:00+08:00", "to": "2026-03-31"},  # an instant cuts a day
]
SUMMED = (
    "on_h",
    "on_scheduled_h",
    "running_h",
    "running_scheduled_h",
    "effective_h",
    "unknown_h",
    "scheduled_h",
)


def timeline(rng: random.Random) -> list[tuple[datetime, State]]:
    """Random changes every 20 minutes to 7 hours, across midnights and the DST change."""
    changes = []
    moment = START
    while moment < LAST_SEEN:
        changes.append((moment, rng.choice([State.OFF, State.STANDBY, State.RUNNING])))
        moment += timedelta(minutes=rng.randrange(20, 420))
    return changes


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def url(make_database: MakeDatabase) -> Iterator[str]:
    rng = random.Random(11)
    with make_database("test_monthly") as url, psycopg.connect(url, autocommit=True) as conn:
        upsert_institutions(conn, [Institution(i, i, c) for i, c in CALENDARS.items()])
        upsert_instruments(conn, [Instrument(k, i, k) for k, i in INSTRUMENTS.items()])
        with conn.cursor() as cur:
            for key in INSTRUMENTS:
                cur.executemany(
                    "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
                    "VALUES (%s, %s, %s, %s)",
                    [(key, iv.state.value, iv.start, iv.end) for iv in derive(timeline(rng))],
                )
        conn.execute("UPDATE instruments SET last_seen = %s", (LAST_SEEN,))
        rebuild(conn)
        yield url


def months(conn: psycopg.Connection[TupleRow]) -> dict[tuple[str, date], tuple[Any, ...]]:
    rows = conn.execute(
        f"""SELECT instrument_id, month, days, {", ".join(SUMMED)}, working_days, days_on,
                   final_days, tz, basis
              FROM monthly_usage"""
    ).fetchall()
    return {(key, month): tuple(figures) for key, month, *figures in rows}


def sums_of_days(conn: psycopg.Connection[TupleRow]) -> dict[tuple[str, date], tuple[Any, ...]]:
    """What each month row must be: its days summed here, one by one."""
    rows = conn.execute(
        f"""SELECT d.instrument_id, d.day, {", ".join(SUMMED)}, working_day, day_on,
                   known_until, basis, s.tz
              FROM daily_usage d JOIN instruments i ON i.id = d.instrument_id
              JOIN institutions s ON s.id = i.institution_id
             ORDER BY d.instrument_id, d.day"""
    ).fetchall()
    found: dict[tuple[str, date], list[Any]] = {}
    for key, day, *figures, working_day, day_on, known_until, stamp, tz in rows:
        month = found.setdefault(
            (key, day.replace(day=1)), [0, *(0.0 for _ in SUMMED), 0, 0, 0, tz, {stamp}]
        )
        month[0] += 1
        for n, value in enumerate(figures, start=1):
            month[n] += value
        ends = CALENDARS[INSTRUMENTS[key]].day_span(day)[1]
        month[-5] += working_day
        month[-4] += day_on
        month[-3] += known_until >= ends
        month[-1].add(stamp)
    return {
        key: (*figures, stamps.pop() if len(stamps) == 1 else None)
        for key, (*figures, stamps) in found.items()
    }


def assert_months_are_their_days(conn: psycopg.Connection[TupleRow]) -> None:
    stored, expected = months(conn), sums_of_days(conn)
    assert stored.keys() == expected.keys()
    for key, row in stored.items():
        assert close(list(row), list(expected[key])), (key, row, expected[key])


def test_each_month_is_the_sum_of_its_days_whatever_writes_them(url: str) -> None:
    rng = random.Random(5)
    with psycopg.connect(url, autocommit=True) as conn:
        assert len(months(conn)) == 3 * 4  # January to April
        assert_months_are_their_days(conn)
        days = [row for row in conn.execute("SELECT instrument_id, day FROM daily_usage")]
        for step in range(12):
            key, day = rng.choice(days)
            if step % 4 == 0:  # a day deleted (and a whole month, once)
                conn.execute(
                    "DELETE FROM daily_usage WHERE instrument_id = %s AND day = %s", (key, day)
                )
            elif step % 4 == 1:  # figures, finality and basis changed
                conn.execute(
                    """UPDATE daily_usage SET effective_h = effective_h + 1.5,
                              known_until = day - 1, basis = 'other'
                        WHERE instrument_id = %s AND day BETWEEN %s AND %s""",
                    (key, day, day + timedelta(days=rng.randrange(3))),
                )
            elif step % 4 == 2:  # a day moved to another month and instrument
                conn.execute(
                    """UPDATE daily_usage SET day = day + 40, instrument_id = 'sh-b'
                        WHERE instrument_id = %s AND day = %s
                          AND NOT EXISTS (SELECT FROM daily_usage
                                           WHERE instrument_id = 'sh-b' AND day = %s)""",
                    (key, day, day + timedelta(days=40)),
                )
            else:  # the collector's refresh: delete from a day on, copy the days back
                rebuild(conn, key, day)
            assert_months_are_their_days(conn)
        conn.execute("DELETE FROM daily_usage WHERE instrument_id = 'be-a' AND day < '2026-03-01'")
        assert_months_are_their_days(conn)
        conn.execute("TRUNCATE daily_usage")
        assert months(conn) == {}
        rebuild(conn)
        assert_months_are_their_days(conn)


@pytest.fixture(scope="module")
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(url, issue_token(url, Role.AUDITOR)) as api:
        yield api


async def totals(client: httpx.AsyncClient, url: str) -> list[Any]:
    """The reports that sum periods, and each instrument's months with external hours."""
    found = []
    for params in PERIODS:
        response = await client.get("/api/v1/reports/startup-rate", params=params)
        assert response.status_code == 200, response.text
        found.append(response.json())
    async with await psycopg.AsyncConnection.connect(url) as conn:
        found.append(
            [
                (record.instrument.id, span, asdict(usage))
                for record, span, usage in await usage_by_instrument(
                    conn, date(2026, 2, 1), date(2026, 3, 31)
                )
            ]
        )
    return found


async def test_period_totals_from_months_days_and_intervals_agree(
    url: str, client: httpx.AsyncClient
) -> None:
    fast = await totals(client, url)
    berlin = next(r for r in fast[0]["instruments"] if r["instrument_id"] == "be-a")
    assert berlin["period"]["hours"] == (28 + 31) * 24 - 1  # with the 23-hour day
    with psycopg.connect(url, autocommit=True) as conn:
        # A stale month, a month with a day not final, and a month with a day missing:
        # each is read from its days, or measured from intervals.
        conn.execute(
            "UPDATE monthly_usage SET basis = 'stale' "
            "WHERE instrument_id = 'sh-a' AND month = '2026-02-01'"
        )
        conn.execute(
            "UPDATE daily_usage SET known_until = day "
            "WHERE instrument_id = 'sh-b' AND day = '2026-03-10'"
        )
        conn.execute("DELETE FROM daily_usage WHERE instrument_id = 'be-a' AND day = '2026-02-14'")
        mixed = await totals(client, url)
        conn.execute("TRUNCATE monthly_usage")
        by_day = await totals(client, url)
        conn.execute("TRUNCATE daily_usage")
        slow = await totals(client, url)
        rebuild(conn)
    assert close(fast, slow)
    assert close(mixed, slow)
    assert close(by_day, slow)


async def test_a_valid_month_is_read_from_its_row(url: str, client: httpx.AsyncClient) -> None:
    async def effective() -> dict[str, float]:
        response = await client.get("/api/v1/reports/startup-rate", params=MONTHS)
        return {r["instrument_id"]: r["effective_h"] for r in response.json()["instruments"]}

    truth = await effective()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE monthly_usage SET effective_h = effective_h + 100 "
            "WHERE instrument_id = 'be-a' AND month = '2026-03-01'"
        )
        read = await effective()
        # A calendar change makes every stored month stale: measured again, as before.
        conn.execute("UPDATE institutions SET day_end = '17:00' WHERE id = 'be'")
        changed = await effective()
        conn.execute("UPDATE institutions SET day_end = '18:00' WHERE id = 'be'")
        rebuild(conn, "be-a")
    assert read == {**truth, "be-a": pytest.approx(truth["be-a"] + 100)}
    assert close(changed, truth)  # effective hours do not depend on the working window
