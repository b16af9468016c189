"""Service orders, reconciliation and chain audits through the API, on a real database.

The fixtures store one measured Monday of an NMR (the intervals of
tests/test_reconcile.py) and its signed events; orders are imported through
the API, so the import, the stored rows and the flags are checked end to end.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from api import audit as audit_store
from api import orders as order_store
from api import reconciliation as reconciling
from api.auth import Role
from api.registry import upsert_agents, upsert_institutions, upsert_instruments
from instrumetry.cli.main import app as cli
from instrumetry.domain import wire
from instrumetry.domain.audit import AgentKey
from instrumetry.domain.chain_audit import verify_chain
from instrumetry.domain.chain_export import read_export
from instrumetry.domain.orders import parse_json
from instrumetry.domain.reconcile import DEFAULT_TOLERANCES
from instrumetry.domain.registry import Agent, Institution, Instrument
from tests.api_support import issue_token, serve
from tests.test_api_reports import PROBLEM
from tests.test_chain_audit import KEY, OTHER, events, raw
from tests.test_metrics import sh
from tests.test_reconcile import HEARD, MONDAY

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

IMPORT = "/api/v1/orders/import"
RECONCILE = "/api/v1/reconciliation"
CHAIN = "/api/v1/audit/instruments/nmr-1/chain"
EXPORT = "/api/v1/audit/instruments/nmr-1/export"
MONDAY_UTC = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def order(
    order_id: str, start: datetime, end: datetime, billed: float, **more: Any
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "instrument_id": "nmr-1",
        "customer_org": "华东理工大学",
        "external": True,
        "purpose": "13C NMR",
        "starts_at": iso(start),
        "ends_at": iso(end),
        "billed_hours": billed,
        "amount_yuan": 300 * billed,
        **more,
    }


ORDERS = [
    order("honest", sh(2, 9), sh(2, 10), 1),
    order("inflated", sh(2, 10), sh(2, 11), 2),
    order("phantom", sh(2, 14), sh(2, 17), 3),
    order("twin", sh(2, 14, 30), sh(2, 16), 1.5),
    order("blind", sh(2, 14), sh(2, 16), 1, instrument_id="xrd-2"),
]

SIGNED = events(6)


def store_events(conn: psycopg.Connection[Any], signed: list[wire.Event]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events (instrument_id, boot_id, seq, device_time, received_at, "
            "from_state, to_state, power_w, prev_hash, signature) "
            "VALUES (%s, %s, %s, %s, now(), %s, %s, %s, %s, %s)",
            [
                (
                    e.instrument,
                    uuid.UUID(hex=e.boot),
                    e.seq,
                    datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=e.t),
                    e.from_state.value,
                    e.to_state.value,
                    e.power_w,
                    bytes.fromhex(e.prev),
                    wire.signature_bytes(e),
                )
                for e in signed
            ],
        )


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_orders") as url:
        with psycopg.connect(url) as conn:
            upsert_institutions(
                conn, [Institution("sh-univ", "上海大学"), Institution("other", "Other")]
            )
            upsert_instruments(
                conn,
                [
                    Instrument("nmr-1", "sh-univ", "核磁共振波谱仪"),
                    Instrument("xrd-2", "other", "XRD"),
                ],
            )
            upsert_agents(
                conn,
                [Agent("agent-nmr", "nmr-1", raw(KEY)), Agent("agent-xrd", "xrd-2", raw(OTHER))],
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO intervals (instrument_id, state, start_time, end_time) "
                    "VALUES ('nmr-1', %s, %s, %s)",
                    [(i.state.value, i.start, i.end) for i in MONDAY],
                )
                cur.execute(
                    "UPDATE instruments SET last_seen = %s WHERE id = 'nmr-1'", (HEARD["nmr-1"],)
                )
            store_events(conn, SIGNED)
            conn.commit()
        yield url


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(database, issue_token(database, Role.ADMIN)) as api:
        response = await api.post(IMPORT, json=ORDERS)
        assert response.status_code == 200, response.text
        yield api


async def test_an_import_reports_what_it_stored(client: httpx.AsyncClient) -> None:
    again = (await client.post(IMPORT, json=ORDERS)).json()
    assert again == {
        "received": 5,
        "inserted": 0,
        "updated": 0,
        "unchanged": 5,
        "rejected_rows": 0,
        "errors": [],
    }
    stored = (await client.get("/api/v1/orders/honest")).json()
    assert stored["customer_org"] == "华东理工大学"
    assert stored["institution_id"] == "sh-univ"
    assert stored["starts_at"] == "2026-03-02T01:00:00Z"
    assert (stored["billed_hours"], stored["amount_yuan"]) == (1, 300)


async def test_bad_rows_are_named_and_good_rows_stored(client: httpx.AsyncClient) -> None:
    rows = [
        order("new-1", sh(3, 9), sh(3, 10), 1),
        order("bad-time", sh(3, 10), sh(3, 9), 1),
        order("ghost", sh(3, 9), sh(3, 10), 1, instrument_id="no-such"),
    ]
    body = (await client.post(IMPORT, json=rows)).json()
    assert (body["inserted"], body["rejected_rows"]) == (1, 2)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (2, "ends_at"),
        (3, "instrument_id"),
    ]
    assert "no instrument has id 'no-such'" in body["errors"][1]["message"]
    assert (await client.get("/api/v1/orders/new-1")).status_code == 200
    assert (await client.get("/api/v1/orders/ghost")).status_code == 404


async def test_a_csv_import_updates_a_changed_order(client: httpx.AsyncClient) -> None:
    header = (
        "order_id,instrument_id,customer_org,external,starts_at,ends_at,billed_hours,amount_yuan"
    )
    line = f"csv-1,nmr-1,复旦大学,internal,{iso(sh(4, 9))},{iso(sh(4, 10))},1,100"
    first = await client.post(
        IMPORT, content=f"{header}\n{line}\n".encode(), headers={"content-type": "text/csv"}
    )
    assert first.json()["inserted"] == 1
    changed = line.replace(",1,100", ",1.5,150")
    second = await client.post(
        IMPORT,
        content=f"{header}\n{changed}\n".encode(),
        headers={"content-type": "text/csv; charset=utf-8"},
    )
    assert (second.json()["updated"], second.json()["inserted"]) == (1, 0)
    stored = (await client.get("/api/v1/orders/csv-1")).json()
    assert (stored["external"], stored["billed_hours"], stored["customer_org"]) == (
        False,
        1.5,
        "复旦大学",
    )


@pytest.mark.parametrize(
    ("content", "content_type", "status", "detail"),
    [
        (b"[{", "application/json", 422, "malformed JSON"),
        (b"\xff\xfe", "text/csv", 422, "not UTF-8"),
        (b"order_id\nA\n", "text/csv", 422, "missing column(s)"),
        (b"{}", "text/plain", 415, "send application/json or text/csv"),
    ],
)
async def test_an_unreadable_body_is_a_problem(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, detail: str
) -> None:
    response = await client.post(IMPORT, content=content, headers={"content-type": content_type})
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]


async def test_one_order_reconciled_with_its_evidence(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{RECONCILE}/orders/inflated")).json()
    assert body["flags"] == ["inflated"]
    evidence = body["evidence"]
    assert (evidence["effective_h"], evidence["coverage"], evidence["window_h"]) == (1, 1, 1)
    assert evidence["intervals"] == [
        {"state": "running", "start": "2026-03-02T02:00:00Z", "end": "2026-03-02T03:00:00Z"}
    ]
    honest = (await client.get(f"{RECONCILE}/orders/honest")).json()
    assert (honest["flags"], honest["evidence"]["effective_h"]) == ([], 1)
    missing = await client.get(f"{RECONCILE}/orders/nothing")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)


async def test_an_institutions_orders_with_flags_and_pages(client: httpx.AsyncClient) -> None:
    params = {"institution": "sh-univ", "from": "2026-03-02", "to": "2026-03-02"}
    body = (await client.get(RECONCILE, params=params)).json()
    flags = {item["order"]["order_id"]: item["flags"] for item in body["items"]}
    assert flags == {
        "honest": [],
        "inflated": ["inflated"],
        "phantom": ["inflated", "phantom", "double_billed"],
        "twin": ["inflated", "phantom", "double_billed"],
    }
    assert body["flag_counts"] == {
        "inflated": 3,
        "phantom": 2,
        "double_billed": 2,
        "unverifiable": 0,
    }
    assert body["tolerances"] == {
        "inflation_factor": 1.1,
        "inflation_slack_h": 0.25,
        "min_coverage": 0.9,
        "max_overlap_min": 15,
    }
    page = (
        await client.get(RECONCILE, params={**params, "flag": "phantom", "limit": 1, "offset": 1})
    ).json()
    assert (page["total"], [i["order"]["order_id"] for i in page["items"]]) == (2, ["twin"])
    blind = (await client.get(RECONCILE, params={"institution": "other"})).json()
    assert [i["flags"] for i in blind["items"]] == [["inflated", "unverifiable"]]
    looser = (await client.get(RECONCILE, params={**params, "max_overlap_min": 120})).json()
    assert looser["flag_counts"]["double_billed"] == 0


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"institution": "nope"}, "institution"),
        ({"flag": "suspicious"}, "flag"),
        ({"from": "2026-03-03", "to": "2026-03-02"}, "to"),
        ({"min_coverage": "2"}, "min_coverage"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_reconciliation_parameters_are_named(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get(RECONCILE, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["parameter"] == parameter


async def test_an_intact_chain(client: httpx.AsyncClient) -> None:
    body = (await client.get(CHAIN, params=MONDAY_UTC)).json()
    assert body["ok"] and body["anchored"]
    assert (body["events"], body["first_seq"], body["last_seq"]) == (6, 1, 6)
    assert body["head"] == wire.event_hash(SIGNED[-1])
    assert [k["agent_id"] for k in body["keys"]] == ["agent-nmr"]
    later = (
        await client.get(
            CHAIN, params={"from": "2026-03-02T00:03:00Z", "to": "2026-03-03T00:00:00Z"}
        )
    ).json()
    assert (later["first_seq"], later["anchored"], later["ok"]) == (4, True, True)


async def test_an_export_verifies_offline_with_the_cli(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await client.get(EXPORT, params=MONDAY_UTC)
    assert response.headers["content-type"] == "application/x-ndjson"
    export = read_export(response.text)
    assert export.events == SIGNED
    assert verify_chain("nmr-1", export.events, export.keys).ok
    path = tmp_path / "nmr-1.jsonl"
    path.write_bytes(response.content)
    result = CliRunner().invoke(cli, ["audit", "verify-export", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK: the chain is intact" in result.output
    lines = response.text.splitlines()
    altered = json.loads(lines[3])  # seq 3
    altered["power_w"] += 100
    lines[3] = json.dumps(altered)
    path.write_text("\n".join(lines))
    tampered = CliRunner().invoke(cli, ["audit", "verify-export", str(path)])
    assert tampered.exit_code == 1
    assert "BAD SIGNATURE: seq 3" in tampered.output
    wrong_key = CliRunner().invoke(
        cli, ["audit", "verify-export", str(tmp_path / "nmr-1.jsonl"), "--key", "AAAA"]
    )
    assert wrong_key.exit_code != 0


async def test_unknown_instrument_and_bad_period(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/audit/instruments/nope/chain", params=MONDAY_UTC)
    assert missing.status_code == 404
    backwards = await client.get(CHAIN, params={"from": "2026-03-03", "to": "2026-03-02"})
    assert backwards.status_code == 422


def test_tampering_in_the_database_is_found(database: str, make_database: MakeDatabase) -> None:
    """Altering, deleting and copying stored events, each caught by the CLI's verify."""
    with psycopg.connect(database) as conn:
        foreign = wire.sign(events(7)[6], OTHER.sign)
        store_events(conn, [foreign])
        conn.execute("UPDATE events SET power_w = 1 WHERE instrument_id = 'nmr-1' AND seq = 2")
        conn.execute("DELETE FROM events WHERE instrument_id = 'nmr-1' AND seq = 5")
        conn.commit()
    args = [
        "audit",
        "verify",
        "--instrument",
        "nmr-1",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-02",
    ]
    result = CliRunner().invoke(cli, [*args, "--database-url", database])
    assert result.exit_code == 1, result.output
    assert "BAD SIGNATURE: seq 2" in result.output
    assert "BREAK: seq 3" in result.output
    assert "GAP: seq 5..5 missing" in result.output
    assert "FOREIGN: seq 7 signed by agent agent-xrd" in result.output


def test_the_cli_imports_a_file_and_names_its_bad_rows(database: str, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,instrument_id,customer_org,external,starts_at,ends_at,billed_hours,amount_yuan\n"
        f"cli-1,nmr-1,同济大学,external,{iso(sh(5, 9))},{iso(sh(5, 10))},1,100\n"
        f"cli-2,nmr-1,同济大学,sometimes,{iso(sh(5, 9))},{iso(sh(5, 10))},1,100\n",
        encoding="utf-8",
    )
    args = ["orders", "import", str(path), "--database-url", database]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1
    assert "2 rows: 1 new, 0 updated, 0 unchanged, 1 rejected" in first.output
    assert f"{path}:3: external: must be true/false" in first.output
    again = CliRunner().invoke(cli, args)
    assert "0 new, 0 updated, 1 unchanged, 1 rejected" in again.output
    unknown = CliRunner().invoke(cli, [*args, "--format", "xml"])
    assert "cannot tell JSON from CSV" in str(unknown.exception)


ANNUAL = "/api/v1/reports/institutions/sh-univ/annual"


async def test_the_annual_csv_report(client: httpx.AsyncClient) -> None:
    response = await client.get(ANNUAL, params={"year": 2026, "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    (nmr,) = rows
    assert (nmr["instrument_id"], nmr["name"], nmr["category"]) == (
        "nmr-1",
        "核磁共振波谱仪",
        "general",
    )
    assert (nmr["effective_h"], nmr["quota_h"], nmr["fully_booked_h"]) == (
        "2.50",
        "1400.00",
        "1200.00",
    )
    assert nmr["external_h"] == "2.00"  # the honest and inflated orders: 09:00–11:00
    assert nmr["sharing_rate"] == "0.8000"
    assert nmr["flag_phantom"] == "2"
    assert float(nmr["coverage"]) < 0.01  # one measured day in a year


async def test_the_annual_pdf_report_embeds_a_cjk_font(client: httpx.AsyncClient) -> None:
    response = await client.get(ANNUAL, params={"year": 2026, "format": "pdf"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert b"/FontFile" in response.content  # embedded, so Chinese renders without the font


async def test_annual_report_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/reports/institutions/nope/annual", params={"year": 2026})
    assert (missing.status_code, missing.json()["errors"][0]["parameter"]) == (422, "institution")
    bad = await client.get(ANNUAL, params={"year": 2026, "format": "docx"})
    assert bad.json()["errors"][0]["parameter"] == "format"


def test_report_commands(database: str, tmp_path: Path) -> None:
    url = ["--database-url", database]
    table = CliRunner().invoke(
        cli,
        ["report", "startup-rate", "--from", "2026-03-02", "--to", "2026-03-02", *url],
        env={"COLUMNS": "200"},
    )
    assert table.exit_code == 0, table.output
    assert "核磁共振波谱仪" in table.output
    assert "nmr-1" in table.output and "xrd-2" in table.output
    pdf = tmp_path / "sh.pdf"
    args = ["report", "annual", "--institution", "sh-univ", "--year", "2026", "--out", str(pdf)]
    written = CliRunner().invoke(cli, [*args, "--format", "pdf", *url])
    assert written.exit_code == 0, written.output
    assert pdf.read_bytes().startswith(b"%PDF-")
    backwards = CliRunner().invoke(
        cli, ["report", "startup-rate", "--from", "2026-03-03", "--to", "2026-03-02", *url]
    )
    assert "must not be before 'from'" in str(backwards.exception)


def test_audit_export_command_writes_what_verify_export_reads(
    database: str, tmp_path: Path
) -> None:
    out = tmp_path / "xrd.jsonl"
    args = [
        "audit",
        "export",
        "--instrument",
        "xrd-2",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-02",
    ]
    written = CliRunner().invoke(cli, [*args, "--out", str(out), "--database-url", database])
    assert written.exit_code == 0, written.output
    assert "0 events of xrd-2, 1 public key(s)" in written.output
    assert read_export(out.read_text()).keys == [AgentKey("agent-xrd", raw(OTHER))]


async def test_capacity_by_category(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/reports/capacity", params={"from": "2026-03-02", "to": "2026-03-02"}
    )
    assert response.status_code == 200, response.text
    (general,) = response.json()["groups"]
    day = 24 / (365 * 24)
    assert (general["category"], general["region"], general["instruments"]) == ("general", None, 2)
    assert general["quota_h"] == pytest.approx(2 * 1400 * day)
    assert general["effective_h"] == 2.5
    assert general["fully_booked"] == 0
    assert general["spare_h"] == pytest.approx(2 * 1200 * day - 2.5)
    assert general["idle_scheduled_h"] == pytest.approx(10 - 4 + 10)  # nmr on 09:00–13:00


async def test_an_institution_restriction_confines_every_read_and_write(
    client: httpx.AsyncClient, database: str
) -> None:
    """What the lead wires to institution tokens: each function takes ``institution_id``."""
    async with await psycopg.AsyncConnection.connect(database) as conn:
        parsed = parse_json(json.dumps([order("honest", sh(2, 9), sh(2, 10), 1)]))
        result = await order_store.import_orders(conn, parsed, institution_id="other")
        assert [(e.field, e.message) for e in result.errors] == [
            ("instrument_id", "instrument 'nmr-1' is not institution 'other''s")
        ]
        assert await order_store.get_order(conn, "honest", institution_id="other") is None
        assert (
            await reconciling.reconcile_order(conn, "honest", DEFAULT_TOLERANCES, "other") is None
        )
        theirs = await reconciling.reconcile_many(conn, DEFAULT_TOLERANCES, institution_id="other")
        assert [found.order.order_id for found, _ in theirs] == ["blind"]
        hidden = await audit_store.load_chain(
            conn, "nmr-1", date(2026, 3, 2), date(2026, 3, 2), institution_id="other"
        )
        assert hidden is None
