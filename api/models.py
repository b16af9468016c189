"""Response bodies, as pydantic models so that the OpenAPI schema is complete."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Status(BaseModel):
    status: Literal["ok"] = "ok"


class MetricDefinition(BaseModel):
    name: str = Field(description="The field of the report it defines.")
    formula: str
    meaning: str


class Period(BaseModel):
    """The period an instrument's figures cover, after resolving dates in its time zone."""

    start: datetime = Field(description="Inclusive, UTC.")
    end: datetime = Field(description="Exclusive, UTC.")
    time_zone: str = Field(description="The institution's IANA time zone: days are its days.")
    hours: float = Field(description="|P|.")


class InstrumentUsage(BaseModel):
    """One instrument's figures; see `definitions` for each formula."""

    instrument_id: str
    name: str
    institution_id: str
    period: Period
    scheduled_h: float = Field(description="|W ∩ P|.")
    on_scheduled_h: float = Field(description="|ON ∩ W ∩ P|.")
    running_scheduled_h: float = Field(description="|RUN ∩ W ∩ P|.")
    startup_rate: float | None = Field(description="0–1; null without working hours.")
    working_days: int
    days_on: int = Field(description="Working days with any powered-on time.")
    days_on_share: float | None = Field(description="0–1; null without working days.")
    utilisation: float | None = Field(description="0–1; null without working hours.")
    effective_h: float = Field(description="|E ∩ P| (有效工作机时).")
    unknown_h: float = Field(description="|UNK ∩ P|: time without measurements.")
    coverage: float | None = Field(description="0–1: share of P with measurements.")


class StartupRateReport(BaseModel):
    from_: str = Field(
        serialization_alias="from", description="As understood: a date, or an instant in UTC."
    )
    to: str = Field(description="As understood: a date, or an instant in UTC.")
    institution: str | None = Field(description="The institution filter, if any.")
    definitions: list[MetricDefinition]
    notes: list[str]
    instruments: list[InstrumentUsage]
