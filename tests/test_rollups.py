"""Daily rollups: kept by the collector as events arrive, read by the API, equal to intervals.

A small seeded fleet in Shanghai (with a holiday) and Berlin (across the
change to summer time on Sunday 29 March 2026, a 23-hour day) is stored
through the collector's ``store``, one batch per day, with one instrument's
day held back and replayed at the end, out of order.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg.rows import TupleRow

from api.annual import usage_by_instrument
from api.auth import Role
from api.registry import upsert_institutions, upsert_instruments
from collector.ingest import Parsed, parse_message
from collector.rollups import ALLOWANCES
from collector.store import store
from instrumetry.domain import topics, wire
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import StoredDay, days_of
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.states import State
from tests.api_support import issue_token, serve
from tests.conftest import run_cli

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

BOOT = "fedcba9876543210fedcba9876543210"
CALENDARS = {
    "sh": WorkingCalendar(holidays=frozenset({date(2026, 3, 25)})),
    "be": WorkingCalendar(tz="Europe/Berlin"),
}
INSTRUMENTS = {"sh-a": "sh", "sh-b": "sh", "be-a": "be", "be-b": "be"}
DAYS = [date(2026, 3, 23) + timedelta(days=n) for n in range(9)]  # Mon 23 to Tue 31 March
HELD_BACK = ("be-a", date(2026, 3, 26))
"""This instrument's events of this day arrive last, after its agent's outbox replay."""
SCRIPTED = {
    # Left in standby overnight, so the preparation time of the run just after
    # midnight, replayed late, makes the last 20 minutes of the 25th effective.
    ("be-a", date(2026, 3, 25)): [
        (7, 0, State.STANDBY),
        (9, 0, State.RUNNING),
        (10, 0, State.STANDBY),
    ],
    HELD_BACK: [
        (0, 10, State.RUNNING),
        (1, 0, State.STANDBY),
        (2, 0, State.OFF),
        (8, 0, State.STANDBY),
        (9, 0, State.RUNNING),
        (11, 0, State.OFF),
    ],
}
USAGE = "/api/v1/usage"
LATE_BEAT = "sh-b"
"""Heard once more late on the last day, within its open day: no row is written for it."""


def local(key: str, day: date, hour: int, minute: int = 0) -> datetime:
    """``hour`` o'clock local time, then ``minute`` minutes of elapsed time later, in UTC."""
    zone = ZoneInfo(CALENDARS[INSTRUMENTS[key]].tz)
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC) + timedelta(
        minutes=minute
    )


def day_of_changes(rng: random.Random, key: str, day: date) -> list[tuple[datetime, State]]:
    """A working day: on in the morning, a few runs, off at night; some runs across midnight."""
    moment = local(key, day, 7, rng.randrange(120))
    changes = [(moment, State.STANDBY)]
    for _ in range(rng.randrange(1, 4)):
        moment += timedelta(minutes=rng.randrange(5, 90))
        changes.append((moment, State.RUNNING))
        moment += timedelta(minutes=rng.randrange(20, 120))
        changes.append((moment, State.STANDBY))
    if rng.random() < 0.4:  # a late run over midnight: its post-processing is the next day's
        changes.append((local(key, day, 23, 40), State.RUNNING))
        changes.append((local(key, day, 23, 40) + timedelta(minutes=50), State.STANDBY))
        changes.append((local(key, day, 23, 40) + timedelta(minutes=70), State.OFF))
    else:
        changes.append((moment + timedelta(minutes=rng.randrange(5, 60)), State.OFF))
    if rng.random() < 0.2:  # an early run: its preparation reaches into the day before
        changes.insert(0, (local(key, day, 0, 10), State.RUNNING))
        changes.insert(1, (local(key, day, 1, 0), State.OFF))
    return changes


class Agent:
    """Signs an instrument's events with its own key, in seq order."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.signer = Ed25519PrivateKey.generate()
        self.seq = 0

    def public(self) -> bytes:
        return self.signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def event(self, when: datetime, to: State) -> Parsed:
        self.seq += 1
        message = wire.Event(
            v=1,
            instrument=self.key,
            boot=BOOT,
            seq=self.seq,
            t=int(when.timestamp() * 1000),
            from_state=State.UNKNOWN,
            to_state=to,
            power_w=50.0,
            prev="ab" * 32,
        )
        signed = wire.sign(message, self.signer.sign)
        return parse_message(topics.topic(topics.Kind.EVENTS, self.key), wire.encode(signed), when)

    def heartbeat(self, when: datetime) -> Parsed:
        message = wire.Heartbeat(
            v=1,
            instrument=self.key,
            boot=BOOT,
            t=int(when.timestamp() * 1000),
            state=State.OFF,
            last_seq=self.seq,
            samples=60,
            power_min_w=0.0,
            power_mean_w=0.0,
            power_max_w=0.0,
        )
        encoded = wire.encode(message)
        return parse_message(topics.topic(topics.Kind.HEARTBEATS, self.key), encoded, when)


def stored(conn: psycopg.Connection[TupleRow], key: str) -> dict[date, StoredDay]:
    rows = conn.execute(
        """SELECT day, on_h, on_scheduled_h, running_h, running_scheduled_h, effective_h,
                  unknown_h, scheduled_h, working_day, day_on
             FROM daily_usage WHERE instrument_id = %s""",
        (key,),
    ).fetchall()
    return {day: StoredDay(*figures) for day, *figures in rows}


def recomputed(conn: psycopg.Connection[TupleRow], key: str) -> dict[date, StoredDay]:
    """The same days measured from the stored intervals now, with the domain's ``days_of``."""
    rows = conn.execute(
        "SELECT state, start_time, end_time FROM intervals WHERE instrument_id = %s "
        "ORDER BY start_time",
        (key,),
    ).fetchall()
    intervals = [StateInterval(State(state), start, end) for state, start, end in rows]
    row = conn.execute("SELECT last_seen FROM instruments WHERE id = %s", (key,)).fetchone()
    assert row is not None
    calendar = CALENDARS[INSTRUMENTS[key]]
    first = (intervals[0].start - ALLOWANCES.prep).astimezone(calendar.zone).date()
    last = row[0].astimezone(calendar.zone).date()
    span = (calendar.day_span(first)[0], calendar.day_span(last)[1])
    found = days_of(intervals, span, row[0], calendar, allowances=ALLOWANCES)
    return {day.day: StoredDay.of(day.usage) for day in found}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fleet(make_database: MakeDatabase) -> Iterator[tuple[str, dict[str, dict[date, StoredDay]]]]:
    """The fleet's database, and the held-back instrument's days just before the replay."""
    rng = random.Random(7)
    with make_database("test_rollups") as url, psycopg.connect(url, autocommit=True) as conn:
        upsert_institutions(conn, [Institution(i, i, c) for i, c in CALENDARS.items()])
        upsert_instruments(conn, [Instrument(k, i, k) for k, i in INSTRUMENTS.items()])
        agents = {key: Agent(key) for key in INSTRUMENTS}
        for agent in agents.values():
            conn.execute(
                "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
                (f"agent-{agent.key}", agent.key, agent.public()),
            )
        conn.execute(
            "INSERT INTO service_orders (order_id, instrument_id, customer_org, external, "
            "starts_at, ends_at, billed_hours, amount_yuan) "
            "VALUES ('ext-1', 'sh-a', 'a customer', true, %s, %s, 2, 200)",
            (local("sh-a", DAYS[1], 9), local("sh-a", DAYS[1], 12)),
        )
        held: list[Parsed] = []
        for day in DAYS:
            batch: list[Parsed] = []
            for key, agent in agents.items():
                script = SCRIPTED.get((key, day))
                changes = (
                    day_of_changes(rng, key, day)
                    if script is None
                    else [(local(key, day, h, m), state) for h, m, state in script]
                )
                messages = [agent.event(at, state) for at, state in changes]
                messages.append(agent.heartbeat(local(key, day, 23, 59)))
                if (key, day) == HELD_BACK:
                    held += messages[:-1]  # the heartbeat is live; the events wait in the outbox
                    batch.append(messages[-1])
                else:
                    batch += messages
            store(conn, batch)
        before = {key: stored(conn, key) for key in INSTRUMENTS}
        store(conn, held)
        late = agents[LATE_BEAT].heartbeat(
            local(LATE_BEAT, DAYS[-1], 23, 59) + timedelta(seconds=30)
        )
        store(conn, [late])
        yield url, before


def test_the_collector_keeps_every_finished_day_equal_to_the_intervals(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
) -> None:
    url, _ = fleet
    with psycopg.connect(url) as conn:
        for key in INSTRUMENTS:
            rows, now = stored(conn, key), recomputed(conn, key)
            open_day = max(now)  # the day of last_seen: the API measures it from intervals
            assert open_day not in rows, key
            del now[open_day]
            assert set(DAYS[:-1]) <= set(rows), key
            assert rows == now, key


def test_an_out_of_order_replay_changes_past_days(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
) -> None:
    url, before = fleet
    key, day = HELD_BACK
    with psycopg.connect(url) as conn:
        after = stored(conn, key)
    assert before[key][day].running_h == 0  # in standby all day, as far as anyone knew
    assert after[day].running_h == pytest.approx(50 / 60 + 2)
    assert after[day].effective_h == pytest.approx(10 / 60 + 50 / 60 + 0.5 + 0.5 + 2)
    eve = day - timedelta(days=1)  # the run at 00:10 reached back into the day before
    assert before[key][eve].effective_h == pytest.approx(2)
    assert after[eve].effective_h == pytest.approx(2 + 20 / 60)


WHOLE = {"from": "2026-03-23", "to": "2026-03-31"}
REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/institutions/sh/series", WHOLE),
    ("/institutions/be/series", WHOLE),
    ("/institutions/be/series", {**WHOLE, "step": "month"}),
    ("/instruments/sh-a/series", WHOLE),  # with an external order on the 24th
    ("/instruments/be-b/series", {"from": "2026-03-24T05:30:00+01:00", "to": "2026-03-30T13:00Z"}),
    ("/instruments/sh-a", WHOLE),
    ("/instruments/be-a", {"from": "2026-03-25T22:00:00Z", "to": "2026-03-29"}),
    ("/institutions/be", WHOLE),
    ("/platform", WHOLE),
]


@pytest.fixture(scope="module")
async def client(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
) -> AsyncIterator[httpx.AsyncClient]:
    url, _ = fleet
    async with serve(url, issue_token(url, Role.AUDITOR)) as api:
        yield api


async def get(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> Any:
    response = await client.get(USAGE + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def rebuild(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> int:
    return run_cli(monkeypatch, url, "db", "rollups", "--rebuild", *args)


async def test_the_api_gives_the_same_figures_from_rollups_and_from_intervals(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = fleet
    fast = [await get(client, path, params) for path, params in REQUESTS]
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM daily_usage")
    slow = [await get(client, path, params) for path, params in REQUESTS]
    assert fast == slow
    dst = next(b for b in fast[1]["buckets"] if b["label"] == "2026-03-29")
    assert dst["figures"]["period_h"] == 2 * 23  # two instruments, one 23-hour day each
    assert rebuild(monkeypatch, url) == 0
    with psycopg.connect(url) as conn:  # the rebuild brings the open day up to date too
        assert {key: stored(conn, key) for key in INSTRUMENTS} == {
            key: recomputed(conn, key) for key in INSTRUMENTS
        }


TOTALS: list[tuple[str, dict[str, str]]] = [
    ("/api/v1/reports/startup-rate", WHOLE),
    ("/api/v1/reports/startup-rate", {"from": "2026-03-24T05:30:00+01:00", "to": "2026-03-30"}),
    ("/api/v1/reports/capacity", WHOLE),
]


def close(fast: Any, slow: Any) -> bool:
    """Equal but for floats 1e-9 apart: PostgreSQL sums period totals in its own order.

    Addition of floats is not associative, so a total summed from rollups in
    the database may differ from the same days summed in Python in the last
    bits; series (day by day) have no sums and stay exactly equal.
    """
    if isinstance(fast, dict) and isinstance(slow, dict):
        return fast.keys() == slow.keys() and all(close(fast[k], slow[k]) for k in fast)
    if isinstance(fast, list | tuple) and isinstance(slow, list | tuple):
        return len(fast) == len(slow) and all(map(close, fast, slow))
    if isinstance(fast, float) and isinstance(slow, float | int):
        return fast == pytest.approx(slow, rel=0, abs=1e-9)
    return bool(fast == slow)


async def totals(client: httpx.AsyncClient, url: str) -> list[Any]:
    """The reports that sum periods, and each instrument's year with external hours."""
    found = [(await client.get(path, params=params)).json() for path, params in TOTALS]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        found.append(
            [
                (record.instrument.id, span, asdict(usage))
                for record, span, usage in await usage_by_instrument(
                    conn, date(2026, 3, 23), date(2026, 3, 31)
                )
            ]
        )
    return found


async def test_period_totals_summed_in_the_database_equal_the_intervals(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = fleet
    fast = await totals(client, url)
    assert fast[0]["instruments"][0]["working_days"] > 0
    with psycopg.connect(url) as conn:  # stale, missing and current days in one run
        conn.execute(
            "UPDATE daily_usage SET basis = 'stale' "
            "WHERE instrument_id = 'sh-b' AND day IN ('2026-03-24', '2026-03-28')"
        )
        conn.execute("DELETE FROM daily_usage WHERE instrument_id = 'be-a' AND day = '2026-03-27'")
    mixed = await totals(client, url)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM daily_usage")
    slow = await totals(client, url)
    assert close(fast, slow)
    assert close(mixed, slow)
    assert rebuild(monkeypatch, url) == 0


async def test_the_api_reads_whole_days_from_the_rollups_while_they_are_current(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = fleet
    path, params = "/instruments/be-b/series", {"from": "2026-03-27", "to": "2026-03-27"}
    (truth,) = (await get(client, path, params))["buckets"]
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE daily_usage SET effective_h = effective_h + 100 "
            "WHERE instrument_id = 'be-b' AND day = '2026-03-27'"
        )
    (read,) = (await get(client, path, params))["buckets"]
    assert read["figures"]["effective_h"] == pytest.approx(truth["figures"]["effective_h"] + 100)
    with psycopg.connect(url) as conn:  # computed under another calendar: measured instead
        conn.execute("UPDATE daily_usage SET basis = 'stale' WHERE instrument_id = 'be-b'")
    assert (await get(client, path, params))["buckets"] == [truth]
    assert rebuild(monkeypatch, url, "--instrument", "be-b", "--from", "2026-03-27") == 0
    with psycopg.connect(url) as conn:
        days = stored(conn, "be-b")
        assert days == recomputed(conn, "be-b")
        (stale,) = conn.execute(
            "SELECT count(*) FROM daily_usage WHERE instrument_id = 'be-b' AND basis = 'stale'"
        ).fetchone() or (None,)
    assert stale == 4  # the days before --from were left alone


def test_rebuild_names_bad_arguments(
    fleet: tuple[str, dict[str, dict[date, StoredDay]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = fleet
    assert rebuild(monkeypatch, url, "--instrument", "nope") == 1
    assert "no instrument has id 'nope'" in capsys.readouterr().err
    assert rebuild(monkeypatch, url, "--from", "March") == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
