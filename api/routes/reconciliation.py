"""Reconciliation of billed service orders with measured usage (DESIGN.md's flags)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from api import periods, problems
from api import reconciliation as reconciling
from api.deps import (
    Conn,
    CurrentPrincipal,
    ReadAccess,
    ReconcileTolerances,
    check_institution,
)
from api.order_models import (
    FLAG_DEFINITIONS,
    OrderReconciliation,
    ReconciliationReport,
    TolerancesOut,
)
from instrumetry.domain.reconcile import Flag

router = APIRouter(
    prefix="/api/v1/reconciliation",
    tags=["reconciliation"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 422),
)

_FLAGS = "\n".join(f"- `{flag}`: {meaning}" for flag, meaning in FLAG_DEFINITIONS.items())
_ABOUT = (
    "Each order's booked window [s, e] is compared with the usage measured in it. "
    "E is the effective working time (running time plus powered-on preparation and "
    "post-processing within 30 min of each run). Flags, with the tolerances given as "
    "query parameters (DESIGN.md's values by default):\n\n" + _FLAGS + "\n\n"
    "Every order carries its evidence: the measured intervals in its window, the "
    "effective and unknown hours, the coverage, and the orders it overlaps."
)


@router.get(
    "/orders/{order_id}",
    summary="Reconcile one service order with measured usage",
    description=_ABOUT,
    responses=problems.responses(404, 422, 503),
)
async def reconcile_order(
    conn: Conn,
    principal: CurrentPrincipal,
    tolerances: ReconcileTolerances,
    order_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> OrderReconciliation:
    found = await reconciling.reconcile_order(conn, order_id, tolerances, principal.scope)
    if found is None:
        raise HTTPException(404, f"no service order has id {order_id!r}")
    return OrderReconciliation.of(*found)


@router.get(
    "",
    summary="Reconcile the service orders of an institution, an instrument or a period",
    description=_ABOUT
    + "\n\nOrders whose window meets [from, to) (dates are local days of each order's "
    "institution, `to` inclusive), in order of their start; `flag` keeps only orders with "
    "that flag. `flag_counts` counts over every matching order, not just the page.",
    responses=problems.responses(422, 503),
)
async def reconcile_orders(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    tolerances: ReconcileTolerances,
    start: Annotated[
        periods.Bound | None, Query(alias="from", description="Date or RFC 3339 date-time.")
    ] = None,
    end: Annotated[
        periods.Bound | None,
        Query(alias="to", description="Date (inclusive) or RFC 3339 date-time (exclusive)."),
    ] = None,
    institution: Annotated[str | None, Query(max_length=200)] = None,
    instrument: Annotated[str | None, Query(max_length=64)] = None,
    flag: Annotated[Flag | None, Query(description="Only orders with this flag.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReconciliationReport:
    if start is not None and end is not None:
        periods.check(start, end)
    if institution is not None:
        check_institution(principal, institution)
    institution = institution if institution is not None else principal.scope
    results = await reconciling.reconcile_many(
        conn, tolerances, start=start, end=end, institution_id=institution, instrument_id=instrument
    )
    counts = Counter(f for _, result in results for f in result.flags)
    kept = [pair for pair in results if flag is None or flag in pair[1].flags]
    return ReconciliationReport(
        tolerances=TolerancesOut.of(tolerances),
        flag_definitions=dict(FLAG_DEFINITIONS),
        flag_counts={f: counts.get(f, 0) for f in Flag},
        total=len(kept),
        limit=limit,
        offset=offset,
        items=[OrderReconciliation.of(*pair) for pair in kept[offset : offset + limit]],
    )
