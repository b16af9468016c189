"""The API against a real PostgreSQL + TimescaleDB: reports, problems, probes, registry.

The database is this module's own (created on the session stack, migrated
like production), so the figures asserted here are computed by hand from the
rows inserted here and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from api.auth import Role
from api.registry import upsert_agents, upsert_institutions, upsert_instruments
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.registry import Agent, Institution, Instrument
from tests.api_support import issue_token, public_key, serve

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
REPORT = "/api/v1/reports/startup-rate"
PROBLEM = "application/problem+json"

pytestmark = pytest.mark.anyio

INSTITUTIONS = [
    Institution(
        "sh-univ", "Shanghai University", WorkingCalendar(holidays=frozenset({date(2026, 3, 4)}))
    ),
    Institution("berlin-lab", "Berlin Lab", WorkingCalendar(tz="Europe/Berlin", day_start=time(8))),
    Institution("empty", "No instruments yet"),
]
INSTRUMENTS = [
    Instrument("nmr-1", "sh-univ", "NMR 600 MHz"),
    Instrument("xrd-2", "sh-univ", "XRD"),
    Instrument("sem-3", "sh-univ", "SEM"),
    Instrument("ms-4", "sh-univ", "Mass spectrometer"),
    Instrument("tem-5", "berlin-lab", "TEM"),
]


def sh(day: int, hour: int, minute: int = 0) -> datetime:
    """Local time in Shanghai, March 2026 (the 2nd is a Monday)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI)


def berlin(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=BERLIN)


# (instrument, state, start, end); end None = the open interval.
INTERVALS: list[tuple[str, str, datetime, datetime | None]] = [
    # A run across midnight, agent last heard from on Tuesday at 20:00.
    ("nmr-1", "off", sh(2, 0), sh(2, 17)),
    ("nmr-1", "standby", sh(2, 17), sh(2, 22)),
    ("nmr-1", "running", sh(2, 22), sh(3, 2)),
    ("nmr-1", "standby", sh(3, 2), sh(3, 3)),
    ("nmr-1", "off", sh(3, 3), None),
    # Never switched on, heard from all along.
    ("xrd-2", "off", sh(1, 0), None),
    # Standby since Monday 08:00, but the agent was never heard from after.
    ("sem-3", "standby", sh(2, 8), None),
    # Standby since Monday 08:00, last heard from at 12:00.
    ("ms-4", "standby", sh(2, 8), None),
    # One Berlin working day, exactly 08:00–18:00 CET.
    ("tem-5", "off", berlin(2, 0), berlin(2, 8)),
    ("tem-5", "standby", berlin(2, 8), berlin(2, 18)),
    ("tem-5", "off", berlin(2, 18), berlin(3, 0)),
]
LAST_SEEN = {"nmr-1": sh(3, 20), "xrd-2": sh(4, 0), "ms-4": sh(2, 12), "tem-5": berlin(3, 0)}


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_api") as url:
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
                    [(seen, instrument) for instrument, seen in LAST_SEEN.items()],
                )
            conn.commit()
        yield url


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(database, issue_token(database, Role.AUDITOR)) as api:
        yield api


async def report(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get(REPORT, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["instrument_id"]: row for row in body["instruments"]}


async def test_monday_and_tuesday_in_shanghai(client: httpx.AsyncClient) -> None:
    body = await report(
        client, **{"from": "2026-03-02", "to": "2026-03-03", "institution": "sh-univ"}
    )
    assert [row["instrument_id"] for row in body["instruments"]] == [
        "ms-4",
        "nmr-1",
        "sem-3",
        "xrd-2",
    ]
    rows = by_id(body)
    nmr = rows["nmr-1"]
    assert nmr["name"] == "NMR 600 MHz"
    assert nmr["institution_id"] == "sh-univ"
    assert nmr["period"] == {
        "start": "2026-03-01T16:00:00Z",
        "end": "2026-03-03T16:00:00Z",
        "time_zone": "Asia/Shanghai",
        "hours": 48.0,
    }
    assert (nmr["scheduled_h"], nmr["on_scheduled_h"], nmr["startup_rate"]) == (20, 1, 0.05)
    assert (nmr["working_days"], nmr["days_on"], nmr["days_on_share"]) == (2, 2, 1)
    assert nmr["utilisation"] == 0
    assert nmr["effective_h"] == 5  # 21:30–02:30
    assert nmr["unknown_h"] == 4  # Tuesday after 20:00
    assert nmr["coverage"] == pytest.approx(44 / 48)

    never_on = rows["xrd-2"]
    assert (never_on["startup_rate"], never_on["days_on_share"], never_on["effective_h"]) == (
        0,
        0,
        0,
    )
    assert never_on["coverage"] == 1

    never_heard = rows["sem-3"]  # an open interval without last_seen is unknown, not on
    assert (never_heard["startup_rate"], never_heard["coverage"]) == (0, 0)
    assert never_heard["unknown_h"] == 48

    silent = rows["ms-4"]  # on from 08:00 until last heard from at 12:00
    assert (silent["on_scheduled_h"], silent["startup_rate"]) == (4, 0.2)
    assert silent["coverage"] == pytest.approx(4 / 48)


async def test_report_carries_its_definitions_and_request(client: httpx.AsyncClient) -> None:
    body = await report(client, **{"from": "2026-03-02", "to": "2026-03-03"})
    assert (body["from"], body["to"], body["institution"]) == ("2026-03-02", "2026-03-03", None)
    definitions = {d["name"]: d["formula"] for d in body["definitions"]}
    assert definitions["startup_rate"] == "|ON ∩ W ∩ P| / |W ∩ P|"
    assert definitions["coverage"] == "1 − |UNK ∩ P| / |P|"
    assert any("never counted as off" in note for note in body["notes"])


async def test_dates_are_local_days_of_each_institution(client: httpx.AsyncClient) -> None:
    rows = by_id(await report(client, **{"from": "2026-03-02", "to": "2026-03-02"}))
    assert len(rows) == len(INSTRUMENTS)
    tem = rows["tem-5"]
    assert tem["period"]["start"] == "2026-03-01T23:00:00Z"  # local midnight in Berlin
    assert tem["period"]["time_zone"] == "Europe/Berlin"
    assert (tem["scheduled_h"], tem["startup_rate"], tem["coverage"]) == (10, 1, 1)
    assert rows["nmr-1"]["period"]["start"] == "2026-03-01T16:00:00Z"


async def test_datetimes_are_exact_instants(client: httpx.AsyncClient) -> None:
    period = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T08:00:00+08:00"}
    rows = by_id(await report(client, **period))
    nmr = rows["nmr-1"]  # Monday 08:00 to Tuesday 08:00 local: one working window
    assert nmr["period"]["start"] == "2026-03-02T00:00:00Z"
    assert nmr["period"]["hours"] == 24
    assert (nmr["scheduled_h"], nmr["startup_rate"]) == (10, 0.1)


async def test_a_holiday_has_no_scheduled_hours(client: httpx.AsyncClient) -> None:
    rows = by_id(
        await report(client, **{"from": "2026-03-04", "to": "2026-03-04", "institution": "sh-univ"})
    )
    for row in rows.values():
        assert (row["scheduled_h"], row["working_days"]) == (0, 0)
        assert row["startup_rate"] is row["utilisation"] is row["days_on_share"] is None


async def test_an_institution_without_instruments(client: httpx.AsyncClient) -> None:
    body = await report(
        client, **{"from": "2026-03-02", "to": "2026-03-03", "institution": "empty"}
    )
    assert body["instruments"] == []


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"to": "2026-03-03"}, "from", "Field required"),
        ({"from": "yesterday", "to": "2026-03-03"}, "from", "expected a date"),
        ({"from": "2026-03-02T08:00:00", "to": "2026-03-03"}, "from", "needs a UTC offset"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to", "must not be before 'from'"),
        ({"from": "2026-03-02T08:00Z", "to": "2026-03-02T08:00Z"}, "to", "must be after 'from'"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "to", "at most 5 years"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "from", "year 1 is outside"),
        (
            {"from": "2026-03-02", "to": "2026-03-03", "institution": "nope"},
            "institution",
            "no institution",
        ),
    ],
)
async def test_bad_parameters_are_problems_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str, message: str
) -> None:
    response = await client.get(REPORT, params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"] == "about:blank"
    assert problem["instance"] == REPORT
    assert problem["errors"][0]["parameter"] == parameter
    assert message in problem["errors"][0]["message"]
    assert f"'{parameter}'" in problem["detail"]
    assert "\n" not in problem["detail"]


async def test_probes_and_unknown_paths(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    missing = await client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM


async def test_openapi_documents_definitions_and_problems(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "|ON ∩ W ∩ P| / |W ∩ P|" in schema["info"]["description"]
    operation = schema["paths"][REPORT]["get"]
    assert "startup_rate" in operation["description"]
    assert [p["name"] for p in operation["parameters"]] == ["from", "to", "institution"]
    assert PROBLEM in operation["responses"]["422"]["content"]
    assert "StartupRateReport" in schema["components"]["schemas"]


async def test_an_unreachable_database_is_a_503_but_the_process_is_healthy(
    unused_ports: Callable[[int], list[int]],
) -> None:
    (port,) = unused_ports(1)
    async with serve(f"postgresql://nobody:x@127.0.0.1:{port}/nothing", "imt_any") as down:
        assert (await down.get("/healthz")).status_code == 200
        for path in ("/readyz", f"{REPORT}?from=2026-03-02&to=2026-03-03"):
            response = await down.get(path)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == PROBLEM
            assert "nobody" not in response.json()["detail"]


async def test_an_unmigrated_database_is_not_ready(make_database: MakeDatabase) -> None:
    with make_database("test_api", migrated=False) as url:
        async with serve(url, "imt_any") as unmigrated:
            ready = await unmigrated.get("/readyz")
            assert ready.status_code == 503
            assert "instrumetry db migrate" in ready.json()["detail"]
            reported = await unmigrated.get(
                REPORT, params={"from": "2026-03-02", "to": "2026-03-03"}
            )
            assert reported.status_code == 503
            assert "not migrated" in reported.json()["detail"]


def test_registry_upserts_are_idempotent(database: str) -> None:
    key, new_key = public_key(), public_key()
    renamed = Instrument("nmr-1", "sh-univ", "NMR 800 MHz", model="Avance")
    with psycopg.connect(database) as conn:
        for _ in range(2):
            assert upsert_institutions(conn, INSTITUTIONS) == len(INSTITUTIONS)
            assert upsert_instruments(conn, INSTRUMENTS) == len(INSTRUMENTS)
            assert upsert_agents(conn, [Agent("agent-1", "nmr-1", key)]) == 1
        upsert_agents(conn, [Agent("agent-1", "nmr-1", new_key)])
        upsert_instruments(conn, [renamed])
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM institutions), (SELECT count(*) FROM instruments), "
            "(SELECT count(*) FROM agents)"
        ).fetchone()
        assert counts == (len(INSTITUTIONS), len(INSTRUMENTS), 1)
        assert conn.execute("SELECT public_key FROM agents").fetchone() == (new_key,)
        stored = conn.execute(
            "SELECT name, model, last_seen FROM instruments WHERE id = 'nmr-1'"
        ).fetchone()
        assert stored == ("NMR 800 MHz", "Avance", LAST_SEEN["nmr-1"])  # last_seen untouched
        calendar = conn.execute(
            "SELECT tz, workdays, holidays FROM institutions WHERE id = 'sh-univ'"
        ).fetchone()
        assert calendar == ("Asia/Shanghai", [0, 1, 2, 3, 4], [date(2026, 3, 4)])
        upsert_instruments(conn, INSTRUMENTS[:1])  # put the name back for other tests


async def test_an_institution_token_sees_only_its_own_instruments(database: str) -> None:
    async with serve(database, issue_token(database, Role.INSTITUTION, "berlin-lab")) as berlin:
        rows = by_id(await report(berlin, **{"from": "2026-03-02", "to": "2026-03-02"}))
        assert list(rows) == ["tem-5"]
        other = await berlin.get(
            REPORT, params={"from": "2026-03-02", "to": "2026-03-02", "institution": "sh-univ"}
        )
        assert other.status_code == 403
        assert other.headers["content-type"] == PROBLEM
        assert "berlin-lab" in other.json()["detail"]


async def test_a_report_needs_a_live_token(database: str) -> None:
    params = {"from": "2026-03-02", "to": "2026-03-02"}
    async with serve(database) as anonymous:
        response = await anonymous.get(REPORT, params=params)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == PROBLEM
    async with serve(database, "imt_not-a-token") as forged:
        assert (await forged.get(REPORT, params=params)).status_code == 401
