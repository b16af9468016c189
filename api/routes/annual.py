"""The annual report of an institution, as CSV or PDF."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api import problems
from api.annual import annual_report
from api.annual_csv import render_csv
from api.annual_pdf import render_pdf
from api.deps import Conn, CurrentPrincipal, ReadAccess, check_institution

router = APIRouter(
    prefix="/api/v1/reports",
    tags=["reports"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 422),
)

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


@router.get(
    "/institutions/{institution_id}/annual",
    summary="Annual report of an institution (CSV or PDF)",
    description=(
        "Every instrument of the institution over its local calendar year: startup rate, "
        "days-on share, utilisation, effective hours against the quota (1,400 h general, "
        "800 h specialised; 1,200 h counts as fully booked), external service hours and "
        "sharing rate, coverage, and the reconciliation flags of its service orders. CSV is "
        "UTF-8 with a byte-order mark (for spreadsheets), one row per instrument; the PDF "
        "adds a summary, charts and the definitions."
    ),
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {}, "application/pdf": {}},
            "description": "The report.",
        },
        **problems.responses(422, 503),
    },
)
async def annual(
    conn: Conn,
    principal: CurrentPrincipal,
    institution_id: Annotated[str, Path(min_length=1, max_length=200)],
    year: Annotated[int, Query(ge=2000, le=2100, description="Calendar year, e.g. 2026.")],
    report_format: Annotated[
        Literal["csv", "pdf"], Query(alias="format", description="csv or pdf.")
    ] = "csv",
) -> Response:
    check_institution(principal, institution_id)
    report = await annual_report(conn, institution_id, year)
    render = render_csv if report_format == "csv" else render_pdf
    body = await run_in_threadpool(render, report)
    filename = f"{institution_id}-{year}.{report_format}"
    return Response(
        body,
        media_type=MEDIA_TYPES[report_format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
