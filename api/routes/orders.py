"""Service orders: importing the sharing platform's billing, and reading it back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request

from api import orders, problems
from api.deps import AdminAccess, Conn, CurrentPrincipal, ReadAccess
from api.order_models import ImportReport, ServiceOrderOut
from api.problems import InvalidParameter
from instrumetry.domain.orders import FIELDS, ParsedOrders, parse_csv, parse_json

router = APIRouter(
    prefix="/api/v1/orders",
    tags=["service orders"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 422),
)

MAX_IMPORT_BYTES = 32 * 1024 * 1024
"""A year of a city platform's orders is a few megabytes; larger files are split."""

OrderId = Annotated[str, Path(min_length=1, max_length=200, description="The order id.")]

_ORDER_EXAMPLE = {
    "order_id": "SH-2026-000123",
    "instrument_id": "nmr-1",
    "customer_org": "上海某生物科技有限公司",
    "external": True,
    "purpose": "1H NMR of 12 samples",
    "starts_at": "2026-03-02T09:00:00+08:00",
    "ends_at": "2026-03-02T12:00:00+08:00",
    "billed_hours": 3,
    "amount_yuan": 1500,
}
_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
                "example": [_ORDER_EXAMPLE],
            },
            "text/csv": {"schema": {"type": "string"}, "example": ",".join(FIELDS)},
        },
    }
}


@router.post(
    "/import",
    summary="Import service orders (JSON or CSV), idempotent on the order id",
    description=(
        "The body is a JSON array of orders (`Content-Type: application/json`) or CSV with "
        f"a header row (`text/csv`, UTF-8) with the fields {', '.join(FIELDS)} "
        "(`purpose` may be left out). `starts_at`/`ends_at` are RFC 3339 date-times with an "
        "offset; `external` is true/false (or external/internal). An order id already stored "
        "updates that order; importing the same file twice changes nothing. Rows with "
        "problems are skipped and listed in `errors` by row and field; the other rows are "
        "stored all the same. A body that cannot be read at all is a 422 problem."
    ),
    responses=problems.responses(413, 415, 422, 503),
    openapi_extra=_IMPORT_BODY,
    dependencies=[AdminAccess],
)
async def import_orders(request: Request, conn: Conn) -> ImportReport:
    parsed = _parse(request.headers.get("content-type", ""), await _body(request))
    if parsed.received == 0 and parsed.errors:
        first = parsed.errors[0]
        raise InvalidParameter(first.field or "body", first.message, location="body")
    return ImportReport.of(await orders.import_orders(conn, parsed))


async def _body(request: Request) -> str:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_IMPORT_BYTES:
            raise HTTPException(413, f"the body exceeds {MAX_IMPORT_BYTES} bytes; split the file")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"not UTF-8 (byte {error.start}); save the file as UTF-8"
        raise InvalidParameter("body", message, location="body") from None


def _parse(content_type: str, text: str) -> ParsedOrders:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == "application/json":
        return parse_json(text)
    if media in {"text/csv", "application/csv"}:
        return parse_csv(text)
    raise HTTPException(
        415, f"Content-Type {media or '(none)'!r}: send application/json or text/csv"
    )


@router.get(
    "/{order_id}",
    summary="One service order as imported",
    responses=problems.responses(404, 503),
)
async def get_order(conn: Conn, principal: CurrentPrincipal, order_id: OrderId) -> ServiceOrderOut:
    found = await orders.get_order(conn, order_id, principal.scope)
    if found is None:
        raise HTTPException(404, f"no service order has id {order_id!r}")
    return ServiceOrderOut.of(found)
