"""Usage reports: sums of local days, from daily rollups or intervals (``api.daily``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import definitions, periods, problems, queries
from api.daily import measure_totals
from api.deps import Conn, CurrentPrincipal, ReadAccess, check_institution
from api.models import InstrumentUsage, MetricDefinition, Period, StartupRateReport
from api.problems import InvalidParameter
from instrumetry.domain.metrics import Allowances, Usage
from instrumetry.domain.timeset import Span

router = APIRouter(
    prefix="/api/v1/reports",
    tags=["reports"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403),
)

ALLOWANCES = Allowances()
"""Preparation and post-processing allowances of effective hours (DESIGN.md defaults)."""

_PERIOD_HELP = (
    "A date (YYYY-MM-DD) is a local day in the time zone of each instrument's "
    "institution; an RFC 3339 date-time with offset is an exact instant. "
)


@router.get(
    "/startup-rate",
    summary="Startup rate, utilisation, effective hours and coverage per instrument",
    description=(
        "Measured usage of every instrument (of one institution, if given) over the period "
        "[from, to). Dates are local days of each instrument's institution: `from` is its "
        "local midnight and `to` is inclusive (the period ends at local midnight after it), "
        "so `from=2026-03-01&to=2026-03-31` is March in each institution's own time zone. "
        "RFC 3339 date-times are exact instants. The period may span at most 5 years. "
        "An institution's token sees only its own instruments.\n\n" + definitions.markdown()
    ),
    responses=problems.responses(422, 503),
)
async def startup_rate(
    conn: Conn,
    principal: CurrentPrincipal,
    start: Annotated[periods.Bound, Query(alias="from", description=_PERIOD_HELP + "Inclusive.")],
    end: Annotated[
        periods.Bound,
        Query(alias="to", description=_PERIOD_HELP + "A date is inclusive, a date-time is not."),
    ],
    institution: Annotated[
        str | None, Query(description="Only this institution's instruments.", max_length=200)
    ] = None,
) -> StartupRateReport:
    periods.check(start, end)
    if institution is not None:
        check_institution(principal, institution)
    institution = institution if institution is not None else principal.scope
    async with queries.snapshot(conn):
        records = await queries.instruments(conn, institution)
        if (
            institution is not None
            and not records
            and not await queries.institution_exists(conn, institution)
        ):
            raise InvalidParameter("institution", f"no institution has id {institution!r}")
        spans = periods.resolve_each(start, end, records)
        # No external windows: this report shows no external hours, so every whole day
        # can come from the daily rollups, summed by PostgreSQL (it needs no series).
        usages = await measure_totals(conn, records, spans, {}, ALLOWANCES)
    rows = [
        _usage(record, spans[record.instrument.id], usages[record.instrument.id])
        for record in records
    ]
    return StartupRateReport(
        from_=start.isoformat(),
        to=end.isoformat(),
        institution=institution,
        definitions=[MetricDefinition(**d._asdict()) for d in definitions.METRICS],
        notes=list(definitions.NOTES),
        instruments=rows,
    )


def _usage(record: queries.InstrumentRecord, period: Span, usage: Usage) -> InstrumentUsage:
    calendar = record.institution.calendar
    return InstrumentUsage(
        instrument_id=record.instrument.id,
        name=record.instrument.name,
        institution_id=record.institution.id,
        period=Period(start=period[0], end=period[1], time_zone=calendar.tz, hours=usage.period_h),
        scheduled_h=usage.scheduled_h,
        on_scheduled_h=usage.on_scheduled_h,
        running_scheduled_h=usage.running_scheduled_h,
        startup_rate=usage.startup_rate,
        working_days=usage.working_days,
        days_on=usage.days_on,
        days_on_share=usage.days_on_share,
        utilisation=usage.utilisation,
        effective_h=usage.effective_h,
        unknown_h=usage.unknown_h,
        coverage=usage.coverage,
    )
