"""Registry CRUD through the API against a real database: validation, scoping, CSV import."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from api.auth import Role
from tests.api_support import issue_token, public_key, serve

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"
KEY, NEW_KEY = (base64.b64encode(public_key()).decode() for _ in "ab")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_registry") as url:
        yield url


@pytest.fixture(scope="module")
async def admin(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(database, issue_token(database, Role.ADMIN)) as client:
        for body in (
            {"id": "fudan", "name": "复旦大学", "holidays": ["2026-10-01"]},
            {"id": "tum", "name": "TU München", "time_zone": "Europe/Berlin", "day_start": "07:30"},
        ):
            assert (await client.post("/api/v1/institutions", json=body)).status_code == 201
        yield client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


async def test_institution_calendar_round_trips(admin: httpx.AsyncClient) -> None:
    fudan = await ok(await admin.get("/api/v1/institutions/fudan"))
    assert fudan["name"] == "复旦大学"
    assert fudan["time_zone"] == "Asia/Shanghai"
    assert (fudan["workdays"], fudan["day_start"], fudan["day_end"]) == (
        [0, 1, 2, 3, 4],
        "08:00:00",
        "18:00:00",
    )
    assert fudan["holidays"] == ["2026-10-01"]
    replaced = await ok(
        await admin.put(
            "/api/v1/institutions/tum",
            json={"name": "TUM", "time_zone": "Europe/Berlin", "extra_workdays": ["2026-10-10"]},
        )
    )
    assert (replaced["name"], replaced["day_start"], replaced["extra_workdays"]) == (
        "TUM",
        "08:00:00",
        ["2026-10-10"],
    )


@pytest.mark.parametrize(
    ("body", "parameter", "message"),
    [
        ({"id": "x", "name": "X", "time_zone": "Mars/Olympus"}, "body", "unknown time zone"),
        (
            {"id": "x", "name": "X", "day_start": "18:00", "day_end": "08:00"},
            "body",
            "start before",
        ),
        ({"id": "x", "name": "X", "workdays": [7]}, "workdays.0", "less than or equal to 6"),
        ({"id": "bad id", "name": "X"}, "id", "should match pattern"),
        ({"id": "x", "name": ""}, "name", "at least 1 character"),
        ({"id": "x", "name": "X", "colour": "red"}, "colour", "Extra inputs"),
    ],
)
async def test_bad_institutions_are_named(
    admin: httpx.AsyncClient, body: dict[str, Any], parameter: str, message: str
) -> None:
    error = problem(await admin.post("/api/v1/institutions", json=body), 422)["errors"][0]
    assert (error["location"], error["parameter"]) == ("body", parameter)
    assert message in error["message"]


async def test_instrument_crud_with_chinese_names_and_quota(admin: httpx.AsyncClient) -> None:
    body = {
        "id": "nmr-600",
        "institution_id": "fudan",
        "name": "核磁共振波谱仪（600 兆赫）",
        "model": "Bruker Avance NEO",
        "category": "specialised",
        "original_value_yuan": "5230000.50",
        "purchase_date": "2019-06-30",
        "location": "化学楼 B102",
    }
    created = await ok(await admin.post("/api/v1/instruments", json=body), 201)
    assert created["name"] == "核磁共振波谱仪（600 兆赫）"
    assert (created["annual_quota_h"], created["quota_from_category"]) == (800, True)
    assert created["original_value_yuan"] == "5230000.50"
    fetched = await ok(await admin.get("/api/v1/instruments/nmr-600"))
    assert fetched == created
    problem(await admin.post("/api/v1/instruments", json=body), 409)
    changed = await ok(
        await admin.put(
            "/api/v1/instruments/nmr-600",
            json={**{k: v for k, v in body.items() if k != "id"}, "annual_quota_h": 1000},
        )
    )
    assert (changed["annual_quota_h"], changed["quota_from_category"]) == (1000, False)
    found = await ok(await admin.get("/api/v1/instruments", params={"q": "核磁"}))
    assert [i["id"] for i in found["items"]] == ["nmr-600"]
    assert (await admin.delete("/api/v1/instruments/nmr-600")).status_code == 204
    problem(await admin.get("/api/v1/instruments/nmr-600"), 404)


async def test_an_instrument_with_measured_history_is_never_deleted_or_renamed(
    database: str, admin: httpx.AsyncClient
) -> None:
    body = {"id": "uv-1", "institution_id": "fudan", "name": "UV-Vis"}
    await ok(await admin.post("/api/v1/instruments", json=body), 201)
    history = {
        "intervals": "INSERT INTO intervals VALUES ('uv-1', 'off', '2026-11-02 08:00Z', NULL)",
        "events": "INSERT INTO events VALUES ('uv-1', gen_random_uuid(), 1, '2026-11-02 08:00Z', "
        "now(), 'off', 'standby', NULL, decode(repeat('00', 32), 'hex'), '')",
    }
    for table, insert in history.items():
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(insert)
            error = problem(await admin.delete("/api/v1/instruments/uv-1"), 409)
            assert "measured data" in error["detail"]
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match="measured history"):
                conn.execute("UPDATE instruments SET id = 'uv-2' WHERE id = 'uv-1'")
            conn.execute(f"DELETE FROM {table} WHERE instrument_id = 'uv-1'")
    assert (await admin.delete("/api/v1/instruments/uv-1")).status_code == 204


@pytest.mark.parametrize(
    ("change", "parameter", "message"),
    [
        ({"institution_id": "nowhere"}, "institution_id", "no institution has id 'nowhere'"),
        ({"standby_w": 200}, "body", "standby_w < run_w"),
        ({"original_value_yuan": -1}, "original_value_yuan", "greater than or equal to 0"),
        ({"annual_quota_h": 9000}, "annual_quota_h", "less than or equal to 8784"),
        ({"name": "a\x00b"}, "name", "should match pattern"),
        ({"category": "exotic"}, "category", "'general' or 'specialised'"),
    ],
)
async def test_bad_instruments_are_named(
    admin: httpx.AsyncClient, change: dict[str, Any], parameter: str, message: str
) -> None:
    body = {"id": "bad-1", "institution_id": "fudan", "name": "X", **change}
    error = problem(await admin.post("/api/v1/instruments", json=body), 422)["errors"][0]
    assert error["parameter"] == parameter
    assert message in error["message"]


async def test_lists_paginate_and_filter(admin: httpx.AsyncClient) -> None:
    for n in range(5):
        body = {"id": f"page-{n}", "institution_id": "tum" if n % 2 else "fudan", "name": f"P{n}"}
        await ok(await admin.post("/api/v1/instruments", json=body), 201)
    first = await ok(await admin.get("/api/v1/instruments", params={"q": "page-", "limit": 2}))
    second = await ok(
        await admin.get("/api/v1/instruments", params={"q": "page-", "limit": 2, "offset": 2})
    )
    assert first["total"] == second["total"] == 5
    assert [i["id"] for i in first["items"] + second["items"]] == [f"page-{n}" for n in range(4)]
    tum = await ok(await admin.get("/api/v1/instruments", params={"institution": "tum"}))
    assert {i["id"] for i in tum["items"]} == {"page-1", "page-3"}
    general = await ok(await admin.get("/api/v1/instruments", params={"category": "specialised"}))
    assert all(i["category"] == "specialised" for i in general["items"])
    problem(await admin.get("/api/v1/instruments", params={"limit": 0}), 422)


async def test_agents_enrol_re_enrol_and_show_their_instrument(admin: httpx.AsyncClient) -> None:
    await ok(
        await admin.post(
            "/api/v1/instruments", json={"id": "sem-1", "institution_id": "tum", "name": "SEM"}
        ),
        201,
    )
    agent = {"id": "agent-sem-1", "instrument_id": "sem-1", "public_key": KEY}
    created = await ok(await admin.post("/api/v1/agents", json=agent), 201)
    assert (created["institution_id"], created["last_seen"], created["status"]) == (
        "tum",
        None,
        None,
    )
    moved = await ok(
        await admin.put(
            "/api/v1/agents/agent-sem-1", json={"instrument_id": "sem-1", "public_key": NEW_KEY}
        )
    )
    assert (moved["public_key"], moved["enrolled_at"]) == (NEW_KEY, created["enrolled_at"])
    listed = await ok(await admin.get("/api/v1/agents", params={"instrument": "sem-1"}))
    assert [a["id"] for a in listed["items"]] == ["agent-sem-1"]
    short = base64.b64encode(b"short").decode()
    error = problem(await admin.post("/api/v1/agents", json={**agent, "public_key": short}), 422)
    assert "32 bytes" in error["errors"][0]["message"]
    identity = base64.b64encode(bytes([1]) + bytes(31)).decode()  # verifies forgeries: refused
    error = problem(await admin.post("/api/v1/agents", json={**agent, "public_key": identity}), 422)
    assert "prime-order subgroup" in error["errors"][0]["message"]
    problem(await admin.delete("/api/v1/instruments/sem-1"), 409)  # it has an agent


async def test_roles_narrow_reads_and_forbid_writes(
    database: str, admin: httpx.AsyncClient
) -> None:
    await ok(
        await admin.post(
            "/api/v1/instruments", json={"id": "xrd-9", "institution_id": "fudan", "name": "XRD"}
        ),
        201,
    )
    async with serve(database, issue_token(database, Role.INSTITUTION, "tum")) as tum:
        listed = await ok(await tum.get("/api/v1/instruments"))
        assert {i["institution_id"] for i in listed["items"]} == {"tum"}
        assert [i["id"] for i in (await ok(await tum.get("/api/v1/institutions")))["items"]] == [
            "tum"
        ]
        assert "tum" in problem(await tum.get("/api/v1/instruments/xrd-9"), 403)["detail"]
        problem(await tum.get("/api/v1/instruments", params={"institution": "fudan"}), 403)
        problem(await tum.post("/api/v1/institutions", json={"id": "y", "name": "Y"}), 403)
    async with serve(database, issue_token(database, Role.AUDITOR)) as auditor:
        assert (await auditor.get("/api/v1/instruments/xrd-9")).status_code == 200
        denied = problem(await auditor.delete("/api/v1/instruments/xrd-9"), 403)
        assert "auditor" in denied["detail"]


CSV = (
    "\ufeffid,institution_id,name,category,original_value_yuan,location,standby_w\n"
    "ms-1,fudan,液相色谱-质谱联用仪,general,1200000,药学楼,\n"
    'tem-2,tum,"TEM, 300 kV",specialised,,,8\n'
)


async def test_csv_import_is_idempotent(admin: httpx.AsyncClient) -> None:
    url = "/api/v1/instruments/import"
    headers = {"content-type": "text/csv"}
    first = await ok(await admin.post(url, content=CSV.encode(), headers=headers))
    assert first == {"rows": 2, "created": 2, "updated": 0, "unchanged": 0}
    again = await ok(await admin.post(url, content=CSV.encode(), headers=headers))
    assert again == {"rows": 2, "created": 0, "updated": 0, "unchanged": 2}
    edited = CSV.replace("TEM, 300 kV", "TEM, 200 kV")
    assert (await ok(await admin.post(url, content=edited.encode(), headers=headers)))[
        "updated"
    ] == 1
    ms = await ok(await admin.get("/api/v1/instruments/ms-1"))
    assert (ms["name"], ms["location"], ms["standby_w"]) == ("液相色谱-质谱联用仪", "药学楼", 5)
    tem = await ok(await admin.get("/api/v1/instruments/tem-2"))
    assert (tem["name"], tem["annual_quota_h"], tem["standby_w"]) == ("TEM, 200 kV", 800, 8)


async def test_a_bad_csv_row_rejects_the_whole_file(admin: httpx.AsyncClient) -> None:
    bad = (
        "id,institution_id,name,run_w\n"
        "csv-ok,fudan,Fine,100\n"
        "csv-bad,nowhere,Lost,100\n"
        "csv-ok,fudan,Again,100\n"
        "csv-nan,fudan,Watts,lots\n"
        "short,fudan\n"
    )
    response = await admin.post("/api/v1/instruments/import", content=bad.encode())
    body = problem(response, 422)
    assert [(r["row"], r["column"]) for r in body["rows"]] == [
        (3, "institution_id"),
        (4, "id"),
        (5, "run_w"),
        (6, None),
    ]
    assert body["detail"].startswith("row 3, column institution_id: no institution has id")
    assert "nothing was imported" in body["detail"]
    problem(await admin.get("/api/v1/instruments/csv-ok"), 404)
    header = problem(await admin.post("/api/v1/instruments/import", content=b"id,colour\n"), 422)
    assert {(r["column"], r["message"]) for r in header["rows"]} >= {
        ("institution_id", "required column missing"),
    }
    latin = problem(await admin.post("/api/v1/instruments/import", content=b"id\n\xe9\n"), 422)
    assert "UTF-8" in latin["rows"][0]["message"]
    huge = b"id,institution_id,name\n" + b"x" * 6_000_000
    too_big = problem(await admin.post("/api/v1/instruments/import", content=huge), 422)
    assert "over 5 MB" in too_big["detail"]
