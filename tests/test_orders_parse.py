"""Parsing service orders (JSON, CSV): valid rows kept, every problem named by row and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from instrumetry.domain.orders import FIELDS, RowError, parse_csv, parse_json

GOOD = {
    "order_id": "SH-1",
    "instrument_id": "nmr-1",
    "customer_org": "上海某生物科技有限公司",
    "external": True,
    "purpose": "1H NMR",
    "starts_at": "2026-03-02T09:00:00+08:00",
    "ends_at": "2026-03-02T12:00:00+08:00",
    "billed_hours": 3,
    "amount_yuan": "1500.50",
}
HEADER = ",".join(FIELDS)


def test_a_json_order_round_trips_with_its_chinese_name() -> None:
    parsed = parse_json(json.dumps([GOOD], ensure_ascii=False))
    assert (parsed.received, parsed.errors) == (1, [])
    ((row, order),) = parsed.orders
    assert row == 1
    assert order.customer_org == "上海某生物科技有限公司"
    assert order.external is True
    assert order.starts_at == datetime(2026, 3, 2, 9, tzinfo=timezone(timedelta(hours=8)))
    assert order.window[0] == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert (order.billed_hours, order.amount_yuan) == (Decimal(3), Decimal("1500.50"))


def test_json_may_wrap_the_array() -> None:
    assert len(parse_json(json.dumps({"orders": [GOOD]})).orders) == 1


def test_every_problem_of_a_row_is_named_and_good_rows_are_kept() -> None:
    bad = {
        **GOOD,
        "order_id": "SH-2",
        "external": "maybe",
        "starts_at": "2026-03-02 09:00",
        "billed_hours": -1,
        "colour": "red",
    }
    parsed = parse_json(json.dumps([GOOD, bad, 7]))
    assert [order.order_id for _, order in parsed.orders] == ["SH-1"]
    assert {(e.row, e.field) for e in parsed.errors} == {
        (2, "colour"),
        (2, "external"),
        (2, "starts_at"),
        (2, "billed_hours"),
        (3, ""),
    }
    by_field = {e.field: e.message for e in parsed.errors}
    assert "needs a UTC offset" in by_field["starts_at"]
    assert "unknown field" in by_field["colour"]


def test_an_order_must_end_after_it_starts() -> None:
    parsed = parse_json(json.dumps([{**GOOD, "ends_at": GOOD["starts_at"]}]))
    assert parsed.errors == [RowError(1, "ends_at", "must be after starts_at")]


def test_a_repeated_order_id_in_one_file_is_an_error_on_the_later_row() -> None:
    parsed = parse_json(json.dumps([GOOD, {**GOOD, "billed_hours": 9}]))
    assert len(parsed.orders) == 1
    assert parsed.errors == [RowError(2, "order_id", "order 'SH-1' is already given in row 1")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[{", "malformed JSON"), ('{"a": 1}', "expected an array of orders")],
)
def test_an_unreadable_json_document_is_one_error(text: str, message: str) -> None:
    parsed = parse_json(text)
    assert (parsed.orders, parsed.received) == ([], 0)
    assert parsed.errors[0].row == 0
    assert message in parsed.errors[0].message


def test_csv_rows_are_numbered_by_line_and_purpose_is_optional() -> None:
    text = "\ufeff" + "\n".join(
        [
            "order_id,instrument_id,customer_org,external,starts_at,ends_at,billed_hours,amount_yuan",
            "A,nmr-1,复旦大学,external,2026-03-02T09:00+08:00,2026-03-02T10:00+08:00,1,100",
            "B,nmr-1,复旦大学,internal,2026-03-02T09:00+08:00,2026-03-02T10:00+08:00,one,100",
            "C,nmr-1,复旦大学,internal,2026-03-02T09:00+08:00",
            "D,nmr-1,复旦大学,internal,2026-03-02T09:00+08:00,2026-03-02T10:00+08:00,1,100,extra",
        ]
    )
    parsed = parse_csv(text)
    assert [(row, o.order_id, o.external, o.purpose) for row, o in parsed.orders] == [
        (2, "A", True, "")
    ]
    assert [(e.row, e.field) for e in parsed.errors] == [
        (3, "billed_hours"),
        (4, "ends_at"),
        (4, "billed_hours"),
        (4, "amount_yuan"),
        (5, ""),
    ]
    assert parsed.received == 4


def test_csv_without_a_required_column_is_one_header_error() -> None:
    parsed = parse_csv("order_id,instrument_id\nA,nmr-1\n")
    assert parsed.errors == [
        RowError(
            1,
            "customer_org",
            "missing column(s) customer_org, external, starts_at, "
            "ends_at, billed_hours, amount_yuan",
        )
    ]


def test_an_empty_csv_names_the_header() -> None:
    assert parse_csv("").errors == [RowError(1, "", "empty file: expected a header row")]


def test_csv_header_matches_the_fields() -> None:
    row = "A,nmr-1,Org,true,,2026-03-02T09:00Z,2026-03-02T10:00Z,1,0"
    assert len(parse_csv(f"{HEADER}\n{row}\n").orders) == 1


def test_numeric_order_ids_are_text() -> None:
    ((_, order),) = parse_json(json.dumps([{**GOOD, "order_id": 123}])).orders
    assert order.order_id == "123"


def test_pathological_documents_are_errors_not_crashes() -> None:
    assert "nested too deeply" in parse_json("[" * 100_000).errors[0].message
    huge = "x" * 200_000
    row = f"A,nmr-1,{huge},true,,2026-03-02T09:00Z,2026-03-02T10:00Z,1,0"
    parsed = parse_csv(
        f'{HEADER}\nB,nmr-1,Org,true,,2026-03-02T09:00Z,2026-03-02T10:00Z,1,0\n"{row}\n'
    )
    assert [o.order_id for _, o in parsed.orders] == ["B"]
    assert "unreadable CSV" in parsed.errors[0].message
