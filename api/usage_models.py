"""Response bodies of the usage routes; every figure is defined in the OpenAPI text."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api import definitions
from api.models import Period
from api.usage import Step, Totals, ratio

EXTRA = (
    definitions.Definition(
        "external_h",
        "|E ∩ P ∩ ⋃ external order windows|",
        "External service hours (对外服务机时): effective hours inside the booked windows "
        "of the sharing platform's external service orders.",
    ),
    definitions.Definition(
        "sharing_rate", "external_h / effective_h", "Share of effective hours served externally."
    ),
    definitions.Definition(
        "quota_h",
        "annual quota × Σ over local years Y of |P ∩ Y| / |Y|",
        "Standard annual hours (定额机时: 1,400 general, 800 specialised, unless the "
        "instrument sets its own) pro-rated to P; a whole calendar year gets exactly the quota.",
    ),
    definitions.Definition(
        "quota_share", "effective_h / quota_h", "Effective hours against the pro-rated quota."
    ),
)
AGGREGATES = (
    "Figures of several instruments (an institution, the platform) or several days (a month) "
    "are sums of the hours and day counts (working_days and days_on count instrument-days), "
    "and every ratio is recomputed from those sums, never averaged."
)


def markdown() -> str:
    """Definitions of every usage figure, for the routes' OpenAPI descriptions."""
    extra = "\n".join(f"- **{d.name}** = {d.formula}: {d.meaning}" for d in EXTRA)
    return f"{definitions.markdown()}\n{extra}\n\n{AGGREGATES}\n"


class Figures(BaseModel):
    """Usage over a period; see the metric definitions in the API description."""

    period_h: float = Field(description="|P| (summed over instruments).")
    scheduled_h: float = Field(description="|W ∩ P|.")
    on_scheduled_h: float = Field(description="|ON ∩ W ∩ P|.")
    running_scheduled_h: float = Field(description="|RUN ∩ W ∩ P|.")
    startup_rate: float | None = Field(description="0–1; null without working hours.")
    working_days: int = Field(description="Working days in P (instrument-days for groups).")
    days_on: int = Field(description="Working days with any powered-on time.")
    days_on_share: float | None = Field(description="0–1; null without working days.")
    utilisation: float | None = Field(description="0–1; null without working hours.")
    effective_h: float = Field(description="|E ∩ P| (有效工作机时).")
    external_h: float = Field(description="Effective hours in external orders (对外服务机时).")
    sharing_rate: float | None = Field(description="external_h / effective_h; null without E.")
    unknown_h: float = Field(description="|UNK ∩ P|: time without measurements.")
    coverage: float | None = Field(description="1 − unknown_h / period_h.")
    quota_h: float = Field(description="Annual quota pro-rated to P.")
    quota_share: float | None = Field(description="effective_h / quota_h.")

    @classmethod
    def of(cls, t: Totals) -> Figures:
        return cls(
            period_h=t.period_h,
            scheduled_h=t.scheduled_h,
            on_scheduled_h=t.on_scheduled_h,
            running_scheduled_h=t.running_scheduled_h,
            startup_rate=ratio(t.on_scheduled_h, t.scheduled_h),
            working_days=t.working_days,
            days_on=t.days_on,
            days_on_share=ratio(t.days_on, t.working_days),
            utilisation=ratio(t.running_scheduled_h, t.scheduled_h),
            effective_h=t.effective_h,
            external_h=t.external_h,
            sharing_rate=ratio(t.external_h, t.effective_h),
            unknown_h=t.unknown_h,
            coverage=None if not t.period_h else 1 - t.unknown_h / t.period_h,
            quota_h=t.quota_h,
            quota_share=ratio(t.effective_h, t.quota_h),
        )


class InstrumentUsageReport(BaseModel):
    instrument_id: str
    name: str
    institution_id: str
    period: Period
    figures: Figures


class GroupUsageReport(BaseModel):
    """An institution's or the whole platform's instruments, summed."""

    institution_id: str | None = Field(description="Null for the whole platform.")
    from_: str = Field(serialization_alias="from", description="As understood.")
    to: str = Field(description="As understood.")
    instruments: int = Field(description="How many instruments the figures sum.")
    figures: Figures


class SeriesBucket(BaseModel):
    label: str = Field(description="The local day (YYYY-MM-DD) or month (YYYY-MM).")
    start: datetime = Field(description="Inclusive, UTC (local midnight, or the period start).")
    end: datetime = Field(description="Exclusive, UTC.")
    figures: Figures


class Series(BaseModel):
    """Figures per local day or month of the institution's time zone."""

    instrument_id: str | None = Field(description="Null for an institution's series.")
    institution_id: str
    time_zone: str
    step: Step
    instruments: int = Field(description="How many instruments each bucket sums.")
    buckets: list[SeriesBucket]


class Segment(BaseModel):
    state: Literal["off", "standby", "running", "unknown"]
    start: datetime = Field(description="Inclusive, UTC.")
    end: datetime = Field(description="Exclusive, UTC.")
    hours: float


class StateTimeline(BaseModel):
    """Every moment of the period in exactly one state; gaps in the data are `unknown`."""

    instrument_id: str
    period: Period
    known_until: datetime | None = Field(
        description="When the instrument's agent was last heard from; later time is unknown."
    )
    segments: list[Segment]
