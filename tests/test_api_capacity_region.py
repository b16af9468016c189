"""Institutions' regions in the registry, and capacity grouped by category and region.

A reviewer approving a purchase compares instruments of one kind in one
region, so the capacity report must keep regions apart, and keep institutions
that record none in a group of their own rather than mixing them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from api.auth import Role
from tests.api_support import issue_token, serve

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio
SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY = {"from": "2026-03-02", "to": "2026-03-02"}
DAY = 24 / (365 * 24)
"""One day's share of a year: the pro-rating of quota and fully-booked hours."""

INSTITUTIONS = [
    {"id": "pd-univ", "name": "浦东大学", "region": "浦东新区"},
    {"id": "pd-lab", "name": "张江实验室", "region": "浦东新区"},
    {"id": "mh-univ", "name": "闵行大学", "region": "闵行区"},
    {"id": "elsewhere", "name": "No region"},
]
INSTRUMENTS = [
    ("nmr-1", "pd-univ", "general"),
    ("sem-2", "pd-lab", "general"),
    ("ms-3", "pd-lab", "specialised"),
    ("xrd-4", "mh-univ", "general"),
    ("tem-5", "elsewhere", "general"),
]


def at(hour: int) -> datetime:
    return datetime(2026, 3, 2, hour, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_capacity_region") as url:
        yield url


@pytest.fixture(scope="module")
async def admin(database: str) -> AsyncIterator[httpx.AsyncClient]:
    """The registry made through the API; one measured Monday for nmr-1 and xrd-4."""
    async with serve(database, issue_token(database, Role.ADMIN)) as client:
        for body in INSTITUTIONS:
            await ok(await client.post("/api/v1/institutions", json=body), 201)
        for instrument_id, owner, category in INSTRUMENTS:
            body = {"id": instrument_id, "institution_id": owner, "name": instrument_id}
            await ok(
                await client.post("/api/v1/instruments", json={**body, "category": category}), 201
            )
        with psycopg.connect(database) as conn, conn.cursor() as cur:
            for instrument_id in ("nmr-1", "xrd-4"):
                cur.executemany(
                    "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
                    "VALUES (%s, %s, %s, %s)",
                    [
                        (instrument_id, "off", at(0), at(8)),
                        (instrument_id, "standby", at(8), at(9)),
                        (instrument_id, "running", at(9), at(11)),
                        (instrument_id, "off", at(11), at(0) + timedelta(days=1)),
                    ],
                )
            conn.execute("UPDATE instruments SET last_seen = %s", (at(0) + timedelta(days=1),))
        yield client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def test_a_region_round_trips_and_is_replaced_with_the_institution(
    admin: httpx.AsyncClient,
) -> None:
    assert (await ok(await admin.get("/api/v1/institutions/pd-univ")))["region"] == "浦东新区"
    assert (await ok(await admin.get("/api/v1/institutions/elsewhere")))["region"] is None
    listed = await ok(await admin.get("/api/v1/institutions", params={"q": "大学"}))
    assert {i["id"]: i["region"] for i in listed["items"]} == {
        "pd-univ": "浦东新区",
        "mh-univ": "闵行区",
    }
    moved = {"name": "No region", "region": "徐汇区"}
    assert (await ok(await admin.put("/api/v1/institutions/elsewhere", json=moved)))[
        "region"
    ] == "徐汇区"
    cleared = await ok(
        await admin.put("/api/v1/institutions/elsewhere", json={"name": "No region"})
    )
    assert cleared["region"] is None  # PUT replaces: a region left out is no region


@pytest.mark.parametrize("region", ["", "a\x00b", "x" * 201])
async def test_a_bad_region_is_named(admin: httpx.AsyncClient, region: str) -> None:
    body = {"id": "bad", "name": "Bad", "region": region}
    response = await admin.post("/api/v1/institutions", json=body)
    assert response.status_code == 422, response.text
    assert "region" in response.text


async def test_capacity_is_grouped_by_category_and_region(admin: httpx.AsyncClient) -> None:
    groups = (await ok(await admin.get("/api/v1/reports/capacity", params=MONDAY)))["groups"]
    assert [(g["category"], g["region"], g["instruments"]) for g in groups] == [
        ("general", "浦东新区", 2),
        ("general", "闵行区", 1),
        ("general", None, 1),
        ("specialised", "浦东新区", 1),
    ]
    pudong, minhang, unrecorded, special = groups
    # nmr-1 and xrd-4: standby 08–09, running 09–11; effective = [08:30, 11:00].
    assert (pudong["effective_h"], minhang["effective_h"], unrecorded["effective_h"]) == (
        2.5,
        2.5,
        0,
    )
    assert pudong["quota_h"] == pytest.approx(2 * 1400 * DAY)
    assert special["quota_h"] == pytest.approx(800 * DAY)
    assert pudong["spare_h"] == pytest.approx(2 * 1200 * DAY - 2.5)
    assert pudong["idle_scheduled_h"] == pytest.approx(10 - 3 + 10)  # sem-2 never switched on
    assert minhang["idle_scheduled_h"] == pytest.approx(10 - 3)


async def test_an_institution_sees_only_its_own_region_group(database: str) -> None:
    token = issue_token(database, Role.INSTITUTION, "mh-univ")
    async with serve(database, token) as client:
        groups = (await ok(await client.get("/api/v1/reports/capacity", params=MONDAY)))["groups"]
    assert [(g["category"], g["region"], g["instruments"]) for g in groups] == [
        ("general", "闵行区", 1)
    ]
