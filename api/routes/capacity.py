"""Capacity by instrument category and region: what the fleet already has to spare.

Before approving the purchase of another instrument of a kind the platform
already has, a reviewer needs to know whether the existing ones are busy, and
whether they are busy where the new one would go: an idle microscope across
the province does not serve a district whose own are fully booked.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api import annual, periods, problems
from api.deps import Conn, CurrentPrincipal, ReadAccess, check_institution
from instrumetry.domain.capacity import FULLY_BOOKED_H, InstrumentLoad, capacity
from instrumetry.domain.registry import Category

router = APIRouter(
    prefix="/api/v1/reports",
    tags=["reports"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 422),
)


class CategoryCapacity(BaseModel):
    category: Category
    region: str | None = Field(
        description="The owner institutions' region; null: institutions with no region recorded."
    )
    instruments: int
    quota_h: float = Field(description="Σ standard hours, pro-rated to the period.")
    effective_h: float = Field(description="Σ |E ∩ P|.")
    effective_vs_quota: float | None
    fully_booked: int = Field(description="Instruments at or above 1,200 h/year, pro-rated.")
    spare_h: float = Field(description="Σ max(0, fully booked hours − effective hours).")
    idle_scheduled_h: float = Field(description="Σ |W ∩ P| − |ON ∩ W ∩ P|.")


class CapacityReport(BaseModel):
    fully_booked_h_per_year: float = FULLY_BOOKED_H
    groups: list[CategoryCapacity]


@router.get(
    "/capacity",
    summary="Effective hours against quota and spare hours, per category and region",
    description=(
        "For each category of instrument and each region of the owner institutions (of one "
        "institution, if given) over [from, to): "
        "the effective hours against the standard hours (1,400 h general, 800 h "
        "specialised per year), how many instruments are fully booked (1,200 h/year), the "
        "effective hours the group could still give before each instrument is fully booked "
        "(`spare_h`), and the working hours during which they were not even switched on. "
        "Hours are pro-rated for periods shorter than a year. Groups come by category, then "
        "region, with institutions that record no region (`region` null) last."
    ),
    responses=problems.responses(422, 503),
)
async def capacity_report(
    conn: Conn,
    principal: CurrentPrincipal,
    start: Annotated[periods.Bound, Query(alias="from", description="Date or RFC 3339 instant.")],
    end: Annotated[
        periods.Bound, Query(alias="to", description="Date (inclusive) or RFC 3339 instant.")
    ],
    institution: Annotated[str | None, Query(max_length=200)] = None,
) -> CapacityReport:
    periods.check(start, end)
    if institution is not None:
        check_institution(principal, institution)
    institution = institution if institution is not None else principal.scope
    measured = await annual.usage_by_instrument(conn, start, end, institution, external=False)
    loads: defaultdict[tuple[Category, str | None], list[InstrumentLoad]] = defaultdict(list)
    for record, _, usage in measured:
        category = record.instrument.category
        loads[category, record.region].append(
            InstrumentLoad(
                category, usage.period_h, usage.scheduled_h, usage.on_scheduled_h, usage.effective_h
            )
        )
    groups = []
    for category, region in sorted(loads, key=_group_order):
        total = capacity(loads[category, region])
        groups.append(
            CategoryCapacity(
                category=category,
                region=region,
                instruments=total.instruments,
                quota_h=total.quota_h,
                effective_h=total.effective_h,
                effective_vs_quota=total.effective_vs_quota,
                fully_booked=total.fully_booked,
                spare_h=total.spare_h,
                idle_scheduled_h=total.idle_scheduled_h,
            )
        )
    return CapacityReport(groups=groups)


_CATEGORY_ORDER = {category: n for n, category in enumerate(Category)}


def _group_order(group: tuple[Category, str | None]) -> tuple[int, bool, str]:
    """Categories in their declared order, then regions by name, unrecorded last."""
    category, region = group
    return _CATEGORY_ORDER[category], region is None, region or ""
