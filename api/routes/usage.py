"""Usage per instrument, institution and platform; state timelines; daily and monthly series.

Figures are sums of local days (``api.daily``): whole days are read from the
collector's daily rollups where they hold, the rest is measured from intervals
with the same domain function, so both give the same figures. A month is the
sum of its days, and so is a period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api import periods, problems, queries
from api.auth import Principal
from api.daily import NEVER, measure_days
from api.deps import Conn, CurrentPrincipal, PlatformAccess, ReadAccess, check_institution
from api.models import Period
from api.problems import InvalidParameter
from api.registry_models import ID_PATTERN
from api.routes.reports import ALLOWANCES
from api.store import institutions
from api.store.common import NotFound
from api.usage import Step, Totals, hours, quota_hours, segments
from api.usage_models import (
    Figures,
    GroupUsageReport,
    InstrumentUsageReport,
    Segment,
    Series,
    SeriesBucket,
    StateTimeline,
    markdown,
)
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import DayUsage, total
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.timeset import Span

router = APIRouter(
    prefix="/api/v1/usage",
    tags=["usage"],
    dependencies=[ReadAccess],
    responses=problems.responses(401, 403, 404, 422, 503),
)

_BOUND = (
    "A date (YYYY-MM-DD) is a local day of the institution; an RFC 3339 date-time with "
    "offset is an exact instant. "
)
From = Annotated[periods.Bound, Query(alias="from", description=_BOUND + "Inclusive.")]
To = Annotated[
    periods.Bound,
    Query(alias="to", description=_BOUND + "A date is inclusive, a date-time is not."),
]
InstrumentId = Annotated[str, Path(pattern=ID_PATTERN, description="The instrument's id.")]
InstitutionId = Annotated[str, Path(pattern=ID_PATTERN, description="The institution's id.")]
StepQuery = Annotated[Step, Query(description="Local days or local months.")]
_PERIOD = (
    "The period is [from, to), at most 5 years; dates are local days of the institution, so "
    "`from=2026-03-01&to=2026-03-31` is March in its own time zone.\n\n"
)


@dataclass(frozen=True, slots=True)
class _Measured:
    """What the figures of some instruments over one request's period are computed from.

    ``days`` holds each instrument's usage per local day (from the daily
    rollups where they hold, see ``api.daily``); ``intervals`` is read only
    for a state timeline.
    """

    records: list[queries.InstrumentRecord]
    spans: dict[str, Span]
    days: dict[str, list[DayUsage]]
    intervals: dict[str, list[StateInterval]]

    def totals(self, record: queries.InstrumentRecord) -> Totals:
        """The period's figures: the sum of its days (the first and last ones clipped)."""
        key, calendar = record.instrument.id, record.institution.calendar
        usage = total(day.usage for day in self.days.get(key, []))
        return Totals.of(usage, quota_hours(record.quota_h, self.spans[key], calendar))


async def _measure(
    conn: Conn,
    start: periods.Bound,
    end: periods.Bound,
    *,
    principal: Principal,
    institution: str | None = None,
    instrument: str | None = None,
    timeline: bool = False,
) -> _Measured:
    """Read what the figures (or, with ``timeline``, the states) need, once access is checked."""
    periods.check(start, end)
    if institution is not None:
        check_institution(principal, institution)
    async with queries.snapshot(conn):
        records = await queries.instruments(conn, institution, instrument)
        if instrument is not None and not records:
            raise NotFound("instrument", instrument)
        for record in records:
            check_institution(principal, record.institution.id)
        if (
            institution is not None
            and not records
            and not await queries.institution_exists(conn, institution)
        ):
            raise NotFound("institution", institution)
        spans = periods.resolve_each(start, end, records)
        if not spans:
            return _Measured(records, spans, {}, {})
        reach = (
            min(s[0] for s in spans.values()) - ALLOWANCES.post,
            max(s[1] for s in spans.values()) + ALLOWANCES.prep,
        )
        if timeline:
            return _Measured(records, spans, {}, await queries.intervals(conn, list(spans), reach))
        windows = await queries.external_windows(conn, list(spans), reach)
        days = await measure_days(conn, records, spans, windows, ALLOWANCES)
    return _Measured(records, spans, days, {})


def _period(record: queries.InstrumentRecord, span: Span) -> Period:
    return Period(
        start=span[0], end=span[1], time_zone=record.institution.calendar.tz, hours=hours(span)
    )


@router.get(
    "/instruments/{instrument_id}",
    summary="One instrument's usage over a period",
    description=_PERIOD + markdown(),
)
async def instrument_usage(
    conn: Conn, principal: CurrentPrincipal, instrument_id: InstrumentId, start: From, end: To
) -> InstrumentUsageReport:
    measured = await _measure(conn, start, end, principal=principal, instrument=instrument_id)
    (record,) = measured.records
    return InstrumentUsageReport(
        instrument_id=record.instrument.id,
        name=record.instrument.name,
        institution_id=record.institution.id,
        period=_period(record, measured.spans[instrument_id]),
        figures=Figures.of(measured.totals(record)),
    )


@router.get(
    "/institutions/{institution_id}",
    summary="An institution's usage over a period, summed over its instruments",
    description=_PERIOD + markdown(),
)
async def institution_usage(
    conn: Conn, principal: CurrentPrincipal, institution_id: InstitutionId, start: From, end: To
) -> GroupUsageReport:
    measured = await _measure(conn, start, end, principal=principal, institution=institution_id)
    return GroupUsageReport(
        institution_id=institution_id,
        from_=start.isoformat(),
        to=end.isoformat(),
        instruments=len(measured.records),
        figures=Figures.of(Totals.sum(measured.totals(r) for r in measured.records)),
    )


@router.get(
    "/platform",
    summary="Platform-wide usage over a period (admins and auditors)",
    description=(
        "Every instrument of every institution, summed; dates are local days of each "
        "instrument's own institution. " + _PERIOD + markdown()
    ),
    dependencies=[PlatformAccess],
)
async def platform_usage(
    conn: Conn, principal: CurrentPrincipal, start: From, end: To
) -> GroupUsageReport:
    measured = await _measure(conn, start, end, principal=principal)
    return GroupUsageReport(
        institution_id=None,
        from_=start.isoformat(),
        to=end.isoformat(),
        instruments=len(measured.records),
        figures=Figures.of(Totals.sum(measured.totals(r) for r in measured.records)),
    )


@router.get(
    "/instruments/{instrument_id}/timeline",
    summary="The instrument's states over a period, gaps shown as unknown",
    description=_PERIOD
    + "Open intervals count until the agent was last heard from; time without data is "
    "`unknown`, never `off`.",
)
async def instrument_timeline(
    conn: Conn, principal: CurrentPrincipal, instrument_id: InstrumentId, start: From, end: To
) -> StateTimeline:
    measured = await _measure(
        conn, start, end, principal=principal, instrument=instrument_id, timeline=True
    )
    (record,) = measured.records
    span = measured.spans[instrument_id]
    found = segments(measured.intervals.get(instrument_id, []), span, record.last_seen or NEVER)
    return StateTimeline(
        instrument_id=instrument_id,
        period=_period(record, span),
        known_until=record.last_seen,
        segments=[
            Segment(state=state.value, start=a, end=b, hours=hours((a, b))) for state, a, b in found
        ],
    )


@router.get(
    "/instruments/{instrument_id}/series",
    summary="One instrument's figures per local day or month",
    description=_PERIOD + markdown(),
)
async def instrument_series(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    instrument_id: InstrumentId,
    start: From,
    end: To,
    step: StepQuery = Step.DAY,
) -> Series:
    _check_series(start, end, step)
    measured = await _measure(conn, start, end, principal=principal, instrument=instrument_id)
    (record,) = measured.records
    calendar = record.institution.calendar
    return _series(measured, step, record.institution.id, calendar.tz, instrument_id)


@router.get(
    "/institutions/{institution_id}/series",
    summary="An institution's figures per local day or month, summed over its instruments",
    description=_PERIOD + markdown(),
)
async def institution_series(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    institution_id: InstitutionId,
    start: From,
    end: To,
    step: StepQuery = Step.DAY,
) -> Series:
    _check_series(start, end, step)
    measured = await _measure(conn, start, end, principal=principal, institution=institution_id)
    if measured.records:
        zone = measured.records[0].institution.calendar.tz
    else:
        zone = (await institutions.get(conn, institution_id)).time_zone
    return _series(measured, step, institution_id, zone, None)


MAX_DAILY = timedelta(days=2 * 366)
"""Longer daily series are asked for by month, or in parts: each day is computed."""


def _check_series(start: periods.Bound, end: periods.Bound, step: Step) -> None:
    """Refuse a daily series longer than ``MAX_DAILY`` before reading anything.

    Measured in UTC, which differs from the institution's days by hours, not days.
    """
    if step is not Step.DAY or isinstance(start, datetime) != isinstance(end, datetime):
        return
    begin, finish = periods.resolve(start, end, WorkingCalendar(tz="UTC"))
    if finish - begin > MAX_DAILY:
        raise InvalidParameter("to", "a daily series spans at most 2 years; use step=month")


def _series(
    measured: _Measured, step: Step, institution_id: str, zone: str, instrument_id: str | None
) -> Series:
    totals: dict[str, Totals] = {}
    spans: dict[str, Span] = {}
    for record in measured.records:
        for label, span, part in _days(measured, record):
            key = label if step is Step.DAY else label[:7]
            totals[key] = totals.get(key, Totals()) + part
            first = spans.get(key, span)
            spans[key] = (min(first[0], span[0]), max(first[1], span[1]))
    return Series(
        instrument_id=instrument_id,
        institution_id=institution_id,
        time_zone=zone,
        step=step,
        instruments=len(measured.records),
        buckets=[
            SeriesBucket(
                label=key, start=spans[key][0], end=spans[key][1], figures=Figures.of(totals[key])
            )
            for key in sorted(totals)
        ],
    )


def _days(
    measured: _Measured, record: queries.InstrumentRecord
) -> Sequence[tuple[str, Span, Totals]]:
    """The instrument's figures per local day of the period, with each day's quota."""
    calendar, quota = record.institution.calendar, record.quota_h
    return [
        (
            day.day.isoformat(),
            day.span,
            Totals.of(day.usage, quota_hours(quota, day.span, calendar)),
        )
        for day in measured.days.get(record.instrument.id, [])
    ]
