"""Usage through the API against hand-computed cases, on a real database.

Shanghai, March 2026 (the 2nd is a Monday, the 4th a holiday), and Berlin
across the change to summer time on Sunday 29 March 2026 (a 23-hour day).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.auth import Role
from api.registry import upsert_institutions, upsert_instruments
from api.usage import Totals, quota_hours, segments
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import LineSlicer, days_of
from instrumetry.domain.intervals import StateInterval, timeline
from instrumetry.domain.metrics import Allowances, compute_usage, measure
from instrumetry.domain.registry import Category, Institution, Instrument
from instrumetry.domain.states import State
from tests.api_support import issue_token, serve

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
USAGE = "/api/v1/usage"
YEAR_H = 365 * 24


def sh(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI)


def be(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=BERLIN)


INSTITUTIONS = [
    Institution("sh", "上海大学", WorkingCalendar(holidays=frozenset({date(2026, 3, 4)}))),
    Institution("be", "Berlin Lab", WorkingCalendar(tz="Europe/Berlin")),
]
INSTRUMENTS = [
    Instrument("nmr", "sh", "核磁共振波谱仪"),
    Instrument("ms", "sh", "Mass spectrometer"),
    Instrument("xrd", "sh", "XRD", category=Category.SPECIALISED),
    Instrument("tem", "be", "TEM"),
]
INTERVALS: list[tuple[str, str, datetime, datetime | None]] = [
    ("nmr", "off", sh(1, 0), sh(2, 9)),
    ("nmr", "standby", sh(2, 9), sh(2, 10)),
    ("nmr", "running", sh(2, 10), sh(2, 12)),
    ("nmr", "standby", sh(2, 12), sh(2, 13)),
    ("nmr", "off", sh(2, 13), sh(3, 21)),
    ("nmr", "standby", sh(3, 21), sh(3, 22)),
    ("nmr", "running", sh(3, 22), sh(4, 1)),  # across midnight
    ("nmr", "standby", sh(4, 1), sh(4, 2)),
    ("nmr", "off", sh(4, 2), None),
    ("ms", "off", sh(1, 0), sh(2, 10)),
    ("ms", "running", sh(2, 10), sh(2, 11)),  # no preparation: off right before
    ("ms", "off", sh(2, 11), None),
    ("xrd", "off", sh(1, 0), None),  # never switched on
    ("tem", "standby", be(28, 0), be(29, 1)),
    ("tem", "running", be(29, 1), be(29, 4)),  # 01:00 CET to 04:00 CEST: two hours
    ("tem", "standby", be(29, 4), be(30, 0)),
    ("tem", "off", be(30, 0), None),
]
LAST_SEEN = {"nmr": sh(5, 12), "ms": sh(6, 0), "xrd": sh(6, 0), "tem": be(31, 0)}
# (order, instrument, external, start, end); the columns of migration 0005's service_orders.
ORDERS = [
    ("o-ext", "nmr", True, sh(2, 11), sh(2, 15)),
    ("o-int", "nmr", False, sh(2, 9), sh(2, 10)),
]
SERVICE_ORDERS = """CREATE TABLE IF NOT EXISTS service_orders (
    order_id text PRIMARY KEY, instrument_id text NOT NULL REFERENCES instruments (id),
    customer_org text NOT NULL, external boolean NOT NULL, purpose text NOT NULL DEFAULT '',
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    billed_hours numeric(12, 3) NOT NULL, amount_yuan numeric(14, 2) NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now())"""


def load(url: str) -> None:
    """The cases above; ``service_orders`` as migration 0005 (orders API) creates it."""
    with psycopg.connect(url) as conn:
        upsert_institutions(conn, INSTITUTIONS)
        upsert_instruments(conn, INSTRUMENTS)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
                "VALUES (%s, %s, %s, %s)",
                INTERVALS,
            )
            cur.executemany(
                "UPDATE instruments SET last_seen = %s WHERE id = %s",
                [(seen, key) for key, seen in LAST_SEEN.items()],
            )
            cur.execute(SERVICE_ORDERS)
            cur.executemany(
                "INSERT INTO service_orders (order_id, instrument_id, customer_org, external, "
                "starts_at, ends_at, billed_hours, amount_yuan) "
                "VALUES (%s, %s, 'a customer', %s, %s, %s, 4, 400)",
                ORDERS,
            )
        conn.commit()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_usage") as url:
        load(url)
        yield url


@pytest.fixture(scope="module")
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(database, issue_token(database, Role.AUDITOR)) as api:
        yield api


async def get(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await client.get(USAGE + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def figures(client: httpx.AsyncClient, path: str, first: str, last: str) -> Any:
    return (await get(client, path, **{"from": first, "to": last}))["figures"]


async def test_a_monday_with_a_run_and_an_external_order(client: httpx.AsyncClient) -> None:
    body = await get(client, "/instruments/nmr", **{"from": "2026-03-02", "to": "2026-03-02"})
    assert (body["name"], body["institution_id"]) == ("核磁共振波谱仪", "sh")
    assert body["period"]["start"] == "2026-03-01T16:00:00Z"
    f = body["figures"]
    assert (f["scheduled_h"], f["on_scheduled_h"], f["startup_rate"]) == (10, 4, 0.4)
    assert (f["running_scheduled_h"], f["utilisation"]) == (2, 0.2)
    assert f["effective_h"] == 3  # 09:30-12:30: runs 10-12 plus half an hour each side
    assert (f["external_h"], f["sharing_rate"]) == (1.5, 0.5)  # 11:00-12:30; internal ignored
    assert (f["unknown_h"], f["coverage"]) == (0, 1)
    assert (f["working_days"], f["days_on"], f["days_on_share"]) == (1, 1, 1)
    assert f["quota_h"] == pytest.approx(1400 * 24 / YEAR_H)
    assert f["quota_share"] == pytest.approx(3 / (1400 * 24 / YEAR_H))


async def test_a_run_across_midnight_a_holiday_and_a_gap(client: httpx.AsyncClient) -> None:
    tuesday = await figures(client, "/instruments/nmr", "2026-03-03", "2026-03-03")
    assert (tuesday["startup_rate"], tuesday["days_on_share"]) == (0, 1)  # on at night only
    assert tuesday["effective_h"] == 2.5  # 21:30-24:00
    holiday = await figures(client, "/instruments/nmr", "2026-03-04", "2026-03-04")
    assert (holiday["scheduled_h"], holiday["working_days"], holiday["startup_rate"]) == (
        0,
        0,
        None,
    )
    assert holiday["effective_h"] == 1.5  # 00:00-01:30, day and night count alike
    thursday = await figures(client, "/instruments/nmr", "2026-03-05", "2026-03-05")
    assert (thursday["unknown_h"], thursday["coverage"]) == (12, 0.5)  # silent after 12:00


async def test_a_run_without_preparation_and_an_instrument_never_on(
    client: httpx.AsyncClient,
) -> None:
    ms = await figures(client, "/instruments/ms", "2026-03-02", "2026-03-02")
    assert (ms["effective_h"], ms["utilisation"], ms["external_h"]) == (1, 0.1, 0)
    assert ms["sharing_rate"] == 0
    xrd = await figures(client, "/instruments/xrd", "2026-03-02", "2026-03-05")
    assert (xrd["startup_rate"], xrd["days_on_share"], xrd["effective_h"]) == (0, 0, 0)
    assert (xrd["coverage"], xrd["quota_h"]) == (1, pytest.approx(800 * 4 * 24 / YEAR_H))


async def test_the_dst_day_has_23_hours_and_runs_count_elapsed_time(
    client: httpx.AsyncClient,
) -> None:
    body = await get(client, "/instruments/tem", **{"from": "2026-03-29", "to": "2026-03-29"})
    assert body["period"]["hours"] == 23
    f = body["figures"]
    assert (f["period_h"], f["scheduled_h"], f["coverage"]) == (23, 0, 1)  # a Sunday
    assert f["effective_h"] == 3  # 00:30 CET to 04:30 CEST
    month = await get(
        client,
        "/instruments/tem/series",
        **{"from": "2026-03-01", "to": "2026-03-31"},
        step="month",
    )
    (march,) = month["buckets"]
    assert (march["label"], march["start"], march["end"]) == (
        "2026-03",
        "2026-02-28T23:00:00Z",
        "2026-03-31T22:00:00Z",
    )
    assert march["figures"]["period_h"] == 31 * 24 - 1
    days = await get(
        client, "/instruments/tem/series", **{"from": "2026-03-28", "to": "2026-03-30"}
    )
    assert [(b["label"], b["figures"]["period_h"]) for b in days["buckets"]] == [
        ("2026-03-28", 24),
        ("2026-03-29", 23),
        ("2026-03-30", 24),
    ]


ADDITIVE = (
    "period_h",
    "scheduled_h",
    "on_scheduled_h",
    "running_scheduled_h",
    "effective_h",
    "external_h",
    "unknown_h",
    "quota_h",
    "working_days",
    "days_on",
)


@pytest.mark.parametrize("path", ["/instruments/nmr", "/instruments/tem", "/institutions/sh"])
@pytest.mark.parametrize(
    ("first", "last"), [("2026-03-01", "2026-03-06"), ("2026-03-27", "2026-03-31")]
)
async def test_a_period_is_the_sum_of_its_days(
    client: httpx.AsyncClient, path: str, first: str, last: str
) -> None:
    whole = await figures(client, path, first, last)
    days = await get(client, path + "/series", **{"from": first, "to": last})
    month = await get(client, path + "/series", **{"from": first, "to": last}, step="month")
    assert len(days["buckets"]) == (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
    for name in ADDITIVE:
        total = sum(b["figures"][name] for b in days["buckets"])
        assert total == pytest.approx(whole[name], abs=1e-9), name
        assert month["buckets"][0]["figures"][name] == pytest.approx(whole[name], abs=1e-9)
    assert month["buckets"][0]["figures"]["startup_rate"] == pytest.approx(whole["startup_rate"])


async def test_institution_and_platform_sums_recompute_ratios(client: httpx.AsyncClient) -> None:
    body = await get(client, "/institutions/sh", **{"from": "2026-03-02", "to": "2026-03-02"})
    assert body["instruments"] == 3
    f = body["figures"]
    assert (f["scheduled_h"], f["on_scheduled_h"]) == (30, 5)
    assert f["startup_rate"] == pytest.approx(5 / 30)
    assert (f["effective_h"], f["external_h"], f["sharing_rate"]) == (4, 1.5, 0.375)
    assert (f["working_days"], f["days_on"]) == (3, 2)
    assert f["quota_h"] == pytest.approx((1400 + 1400 + 800) * 24 / YEAR_H)
    platform = await get(client, "/platform", **{"from": "2026-03-02", "to": "2026-03-02"})
    assert (platform["institution_id"], platform["instruments"]) == (None, 4)
    assert platform["figures"]["scheduled_h"] == 40


async def test_the_timeline_shows_every_state_and_the_gap(client: httpx.AsyncClient) -> None:
    body = await get(
        client, "/instruments/nmr/timeline", **{"from": "2026-03-05", "to": "2026-03-05"}
    )
    assert body["known_until"] == "2026-03-05T04:00:00Z"
    assert [(s["state"], s["start"], s["hours"]) for s in body["segments"]] == [
        ("off", "2026-03-04T16:00:00Z", 12),
        ("unknown", "2026-03-05T04:00:00Z", 12),
    ]
    monday = await get(
        client, "/instruments/nmr/timeline", **{"from": "2026-03-02", "to": "2026-03-02"}
    )
    assert [(s["state"], s["hours"]) for s in monday["segments"]] == [
        ("off", 9),
        ("standby", 1),
        ("running", 2),
        ("standby", 1),
        ("off", 11),
    ]


async def test_a_daily_series_spans_at_most_two_years(client: httpx.AsyncClient) -> None:
    params = {"from": "2024-01-01", "to": "2026-06-30"}
    response = await client.get(f"{USAGE}/instruments/nmr/series", params=params)
    assert response.status_code == 422
    assert "step=month" in response.json()["detail"]
    monthly = await get(client, "/instruments/nmr/series", **params, step="month")
    assert len(monthly["buckets"]) == 30


async def test_scope_and_missing_resources(database: str, client: httpx.AsyncClient) -> None:
    period = {"from": "2026-03-02", "to": "2026-03-02"}
    assert (await client.get(f"{USAGE}/instruments/nope", params=period)).status_code == 404
    assert (await client.get(f"{USAGE}/institutions/nope", params=period)).status_code == 404
    async with serve(database, issue_token(database, Role.INSTITUTION, "be")) as berlin:
        assert (await berlin.get(f"{USAGE}/instruments/tem", params=period)).status_code == 200
        for path in (
            "/instruments/nmr",
            "/institutions/sh",
            "/platform",
            "/instruments/nmr/series",
        ):
            assert (await berlin.get(USAGE + path, params=period)).status_code == 403, path


def test_a_calendar_year_gets_exactly_its_quota() -> None:
    calendar = WorkingCalendar()
    for year in (2026, 2028):  # 2028 is a leap year
        span = (calendar.day_span(date(year, 1, 1))[0], calendar.day_span(date(year, 12, 31))[1])
        assert quota_hours(800, span, calendar) == pytest.approx(800)


MOMENTS = st.integers(min_value=0, max_value=6 * 24 * 4).map(
    lambda quarter: datetime(2026, 3, 27, tzinfo=UTC) + timedelta(minutes=15 * quarter)
)


@given(
    changes=st.lists(st.tuples(MOMENTS, st.sampled_from(list(State))), max_size=12),
    cut=MOMENTS,
)
def test_sliced_lines_give_the_same_figures(
    changes: list[tuple[datetime, State]], cut: datetime
) -> None:
    """The series' shortcut (``LineSlicer``) changes no figure, across the DST change."""
    calendar = WorkingCalendar(tz="Europe/Berlin")
    allowances = Allowances()
    ordered = sorted(dict(changes).items())
    intervals = [
        StateInterval(state, at, ordered[n + 1][0] if n + 1 < len(ordered) else None)
        for n, (at, state) in enumerate(ordered)
    ]
    reach = (datetime(2026, 3, 26, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC))
    line = timeline(intervals, reach, datetime(2026, 4, 1, tzinfo=UTC))
    day = (cut, cut + timedelta(hours=5))
    around = (day[0] - allowances.post, day[1] + allowances.prep)
    assert compute_usage(LineSlicer(line)(around), day, calendar) == compute_usage(
        line, day, calendar
    )
    covered = segments(intervals, day, datetime(2026, 4, 1, tzinfo=UTC))
    assert sum((b - a for _, a, b in covered), timedelta()) == day[1] - day[0]


@given(
    changes=st.lists(st.tuples(MOMENTS, st.sampled_from(list(State))), max_size=16),
    bounds=st.tuples(MOMENTS, MOMENTS).filter(lambda b: b[0] != b[1]).map(sorted),
    orders=st.lists(st.tuples(MOMENTS, st.integers(1, 40)), max_size=3),
)
def test_the_days_of_a_series_sum_to_the_period(
    changes: list[tuple[datetime, State]],
    bounds: list[datetime],
    orders: list[tuple[datetime, int]],
) -> None:
    """What the series routes sum equals what the usage routes measure, for any period."""
    calendar = WorkingCalendar(tz="Europe/Berlin", holidays=frozenset({date(2026, 3, 30)}))
    ordered = sorted(dict(changes).items())
    intervals = [
        StateInterval(state, at, ordered[n + 1][0] if n + 1 < len(ordered) else None)
        for n, (at, state) in enumerate(ordered)
    ]
    period = (bounds[0], bounds[1])
    known = datetime(2026, 4, 1, 12, tzinfo=UTC)
    windows = [(at, at + timedelta(minutes=15 * n)) for at, n in orders]
    allowances = Allowances()
    days = days_of(
        intervals, period, known, calendar, allowances=allowances, external_windows=windows
    )
    whole = measure(
        intervals, period, known, calendar, allowances=allowances, external_windows=windows
    )
    summed = Totals.sum(Totals.of(d.usage, quota_hours(1400, d.span, calendar)) for d in days)
    expected = Totals.of(whole, quota_hours(1400, period, calendar))
    for name in ADDITIVE:
        assert getattr(summed, name) == pytest.approx(getattr(expected, name), abs=1e-9), name
