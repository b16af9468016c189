"""Request and response bodies of the registry: institutions, instruments, agents.

Validation lives here, so every entry point (JSON bodies, the CSV import)
rejects the same mistakes with the same messages, before the database sees
them: the domain's own checks (calendars, thresholds) run inside the models.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from instrumetry.domain import ed25519
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.classify import Thresholds
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.registry import Category

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL; rejecting it here names the field instead of failing later."""

Id = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        description="1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        examples=["nmr-1"],
    ),
]
Name = Annotated[
    str, Field(min_length=1, max_length=200, pattern=NO_NUL, examples=["核磁共振波谱仪 600 MHz"])
]
Text = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
Days = Annotated[list[date], Field(max_length=1000)]
Clock = Annotated[
    time,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$",
            "description": "Local wall-clock time, HH:MM[:SS], without offset.",
            "examples": ["08:00"],
        }
    ),
]
"""A local time: JSON Schema's ``format: time`` would demand a UTC offset."""

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, ordered by id; ask for the next with ``offset + limit``."""

    items: list[T]
    total: int = Field(description="How many items match the filters, on all pages.")
    limit: int
    offset: int


class InstitutionFields(BaseModel):
    """An institution's name and working calendar (W in the metric definitions)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    time_zone: str = Field(
        default="Asia/Shanghai",
        max_length=64,
        pattern=NO_NUL,
        description="IANA time zone: the institution's days are local days of it.",
    )
    workdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default=[0, 1, 2, 3, 4], max_length=7, description="Working weekdays, Monday = 0."
    )
    day_start: Clock = Field(default=time(8), description="Local start of a working day.")
    day_end: Clock = Field(default=time(18), description="Local end of a working day.")
    holidays: Days = Field(default=[], description="Working weekdays not worked.")
    extra_workdays: Days = Field(
        default=[], description="Days worked although not working weekdays (调休 make-up days)."
    )
    region: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="The region the platform compares capacity by (a district, a province); "
        "null: not recorded.",
        examples=["浦东新区"],
    )

    @field_validator("day_start", "day_end")
    @classmethod
    def _local_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a local wall-clock time without offset, e.g. '08:00'")
        return value

    @model_validator(mode="after")
    def _valid_calendar(self) -> InstitutionFields:
        try:
            self.calendar()
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self

    def calendar(self) -> WorkingCalendar:
        return WorkingCalendar(
            tz=self.time_zone,
            workdays=frozenset(self.workdays),
            day_start=self.day_start,
            day_end=self.day_end,
            holidays=frozenset(self.holidays),
            extra_workdays=frozenset(self.extra_workdays),
        )


class InstitutionCreate(InstitutionFields):
    id: Id


class Institution(InstitutionFields):
    id: Id
    created_at: datetime


class InstrumentFields(BaseModel):
    """What the platform lists about an instrument, and how its agent classifies power."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    institution_id: Id = Field(description="The owner institution.")
    name: Name = Field(description="Any script; Chinese names are stored as given.")
    model: Text = ""
    category: Category = Field(
        default=Category.GENERAL, description="Sets the default annual quota."
    )
    original_value_yuan: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=2, description="原值, in yuan."
    )
    purchase_date: date | None = None
    location: Text = ""
    annual_quota_h: float | None = Field(
        default=None,
        gt=0,
        le=8784,
        description="Standard annual hours (定额机时); null: 1,400 general, 800 specialised.",
    )
    standby_w: float = Field(default=5.0, ge=0, le=1e7, description="Power above this is on.")
    run_w: float = Field(default=100.0, ge=0, le=1e7, description="Power above this is running.")
    hysteresis_w: float = Field(default=2.0, ge=0, le=1e7)
    min_dwell_s: float = Field(default=30.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _valid_thresholds(self) -> InstrumentFields:
        try:
            Thresholds(
                standby_w=self.standby_w,
                run_w=self.run_w,
                hysteresis_w=self.hysteresis_w,
                min_dwell_s=self.min_dwell_s,
            )
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self


class InstrumentCreate(InstrumentFields):
    id: Id


class Instrument(InstrumentCreate):
    annual_quota_h: float = Field(
        description="Standard annual hours in force: the instrument's own, else its category's."
    )
    quota_from_category: bool = Field(description="True when annual_quota_h is the default.")
    last_seen: datetime | None = Field(description="Device time of its agent's latest message.")
    created_at: datetime


class AgentFields(BaseModel):
    """An enrolled agent: the instrument it reports for and its Ed25519 public key."""

    model_config = ConfigDict(extra="forbid")

    instrument_id: Id
    public_key: str = Field(
        description="The raw 32-byte Ed25519 public key, base64 (`instrumetry agent enroll`).",
        examples=["11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
        max_length=100,
    )

    @field_validator("public_key")
    @classmethod
    def _ed25519_key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        problem = ed25519.key_problem(raw)
        if problem is not None:
            raise ValueError(problem)
        return value

    def key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)


class AgentCreate(AgentFields):
    id: Id


class Agent(AgentCreate):
    institution_id: str
    enrolled_at: datetime
    last_seen: datetime | None = Field(description="Device time of the agent's latest message.")
    status: Literal["online", "offline"] | None = Field(
        description="What the agent last announced on its status topic; null: never."
    )


class ImportResult(BaseModel):
    """What an import changed; importing the same file again reports it all unchanged."""

    rows: int
    created: int
    updated: int
    unchanged: int
