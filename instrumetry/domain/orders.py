"""Service orders from the sharing platform, parsed from JSON or CSV with per-row errors.

An import must never be all or nothing: a platform export of thousands of
orders with one bad date still has to load the good ones, and the person
importing needs to know exactly which row and field to fix. ``parse_json`` and
``parse_csv`` therefore return the valid orders *and* every problem found,
each named by row and field. Parsing takes text, not files: no I/O here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from instrumetry.domain.timeset import Span, utc

FIELDS: Final = (
    "order_id",
    "instrument_id",
    "customer_org",
    "external",
    "purpose",
    "starts_at",
    "ends_at",
    "billed_hours",
    "amount_yuan",
)
"""The columns of a CSV import and the keys of a JSON import; ``purpose`` may be omitted."""
OPTIONAL: Final = frozenset({"purpose"})
MAX_ID_LENGTH: Final = 200
_TRUE: Final = frozenset({"true", "1", "yes", "external", "对外", "是"})
_FALSE: Final = frozenset({"false", "0", "no", "internal", "对内", "否"})


@dataclass(frozen=True, slots=True)
class ServiceOrder:
    """An order as billed: who used which instrument when, and for how many hours."""

    order_id: str
    instrument_id: str
    customer_org: str
    external: bool
    purpose: str
    starts_at: datetime
    ends_at: datetime
    billed_hours: Decimal
    amount_yuan: Decimal

    @property
    def window(self) -> Span:
        """The booked window [s, e) in UTC."""
        return utc(self.starts_at), utc(self.ends_at)


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem of one imported row.

    ``row`` is the CSV line number (the header is line 1) or the 1-based
    position in the JSON array; ``field`` is empty when the row as a whole is wrong.
    """

    row: int
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ParsedOrders:
    """The rows that parsed (each with its row number) and the problems of the others."""

    orders: list[tuple[int, ServiceOrder]]
    errors: list[RowError]
    received: int


class _Row:
    """Collects a row's field errors so that one pass reports all of them."""

    def __init__(self, number: int, values: Mapping[str, Any]) -> None:
        self.number = number
        self.values = values
        self.errors: list[RowError] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(RowError(self.number, field, message))

    def text(self, field: str, *, required: bool = True, max_length: int = 1000) -> str:
        value = self.values.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(field, "is required")
            return ""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # platforms often number their orders
        if not isinstance(value, str):
            self.fail(field, f"must be a string, got {_kind(value)}")
            return ""
        value = value.strip()
        if len(value) > max_length:
            self.fail(field, f"is longer than {max_length} characters")
        return value

    def flag(self, field: str) -> bool:
        value = self.values.get(field)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        shown = "nothing" if value is None or value == "" else repr(value)
        self.fail(field, f"must be true/false (or external/internal), got {shown}")
        return False

    def instant(self, field: str) -> datetime | None:
        value = self.values.get(field)
        if not isinstance(value, str) or not value.strip():
            self.fail(field, "is required: an RFC 3339 date-time with offset")
            return None
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(field, f"expected an RFC 3339 date-time, got {value!r}")
            return None
        if moment.tzinfo is None:
            self.fail(field, f"{value!r} needs a UTC offset, e.g. 'Z' or '+08:00'")
            return None
        return moment

    def amount(self, field: str, limit: Decimal) -> Decimal:
        value = self.values.get(field)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(field, "is required: a number ≥ 0")
            return Decimal(0)
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(field, f"expected a number, got {value!r}")
            return Decimal(0)
        if not number.is_finite() or not 0 <= number < limit:
            self.fail(field, f"must be between 0 and {limit}, got {value!r}")
            return Decimal(0)
        return number


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _order(number: int, values: Mapping[str, Any]) -> tuple[ServiceOrder | None, list[RowError]]:
    row = _Row(number, values)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:  # a typo in a column name must not silently drop that column
        row.fail(unknown[0], f"unknown field; expected some of {', '.join(FIELDS)}")
    order_id = row.text("order_id", max_length=MAX_ID_LENGTH)
    instrument_id = row.text("instrument_id", max_length=64)
    customer = row.text("customer_org")
    external = row.flag("external")
    purpose = row.text("purpose", required=False)
    starts_at = row.instant("starts_at")
    ends_at = row.instant("ends_at")
    billed = row.amount("billed_hours", Decimal(10**9))
    amount = row.amount("amount_yuan", Decimal(10**12))
    if starts_at and ends_at and ends_at <= starts_at:
        row.fail("ends_at", "must be after starts_at")
    if row.errors or starts_at is None or ends_at is None:
        return None, row.errors
    order = ServiceOrder(
        order_id, instrument_id, customer, external, purpose, starts_at, ends_at, billed, amount
    )
    return order, []


def _collect(numbered: Iterable[tuple[int, object]]) -> ParsedOrders:
    orders: list[tuple[int, ServiceOrder]] = []
    errors: list[RowError] = []
    first_row: dict[str, int] = {}
    received = 0
    for number, values in numbered:
        received += 1
        if isinstance(values, RowError):
            errors.append(values)
            continue
        if not isinstance(values, dict):
            errors.append(RowError(number, "", f"expected an object, got {_kind(values)}"))
            continue
        order, problems = _order(number, values)
        if order is None:
            errors.extend(problems)
        elif order.order_id in first_row:
            message = (
                f"order {order.order_id!r} is already given in row {first_row[order.order_id]}"
            )
            errors.append(RowError(number, "order_id", message))
        else:
            first_row[order.order_id] = number
            orders.append((number, order))
    return ParsedOrders(orders, errors, received)


def parse_json(text: str) -> ParsedOrders:
    """Orders from a JSON array of objects (or ``{"orders": [...]}``).

    A document that is not such an array is one error for row 0: nothing can
    be numbered in it.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return ParsedOrders([], [RowError(0, "", f"malformed JSON: {error}")], 0)
    except RecursionError:
        return ParsedOrders([], [RowError(0, "", "malformed JSON: nested too deeply")], 0)
    if isinstance(document, dict) and set(document) == {"orders"}:
        document = document["orders"]
    if not isinstance(document, list):
        message = f"expected an array of orders (or {{'orders': [...]}}), got {_kind(document)}"
        return ParsedOrders([], [RowError(0, "", message)], 0)
    return _collect(enumerate(document, start=1))


def parse_csv(text: str) -> ParsedOrders:
    """Orders from CSV with a header row naming the ``FIELDS`` (any order).

    A missing required column is reported once, for row 1 (the header), rather
    than once per row.
    """
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        return ParsedOrders([], [RowError(1, "", "empty file: expected a header row")], 0)
    missing = [name for name in FIELDS if name not in header and name not in OPTIONAL]
    if missing:
        message = f"missing column(s) {', '.join(missing)}"
        return ParsedOrders([], [RowError(1, missing[0], message)], 0)
    reader.fieldnames = header

    def rows() -> Iterable[tuple[int, object]]:
        try:
            yield from checked()
        except csv.Error as error:  # e.g. a field beyond the csv module's size limit
            message = f"unreadable CSV, nothing read from here on: {error}"
            yield reader.line_num, RowError(reader.line_num, "", message)

    def checked() -> Iterable[tuple[int, object]]:
        for record in reader:
            if None in record:
                message = "more values than columns in the header"
                yield reader.line_num, RowError(reader.line_num, "", message)
                continue
            yield reader.line_num, {k: v for k, v in record.items() if v is not None}

    return _collect(rows())
