"""Quota and capacity: effective hours against the standard hours, and what is left.

The Ministry of Education's standard annual hours (定额机时) are 1,400 h for a
general and 800 h for a specialised instrument; about 1,200 h a year counts as
fully booked. Both are pro-rated for periods shorter than a year. A reviewer
asked to approve the purchase of an instrument the platform already has needs
the spare hours of the existing fleet of that kind, which ``capacity`` adds up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from instrumetry.domain.registry import Category

FULLY_BOOKED_H: Final = 1200.0
"""Effective hours a year at which an instrument counts as fully booked."""
YEAR_H: Final = 365 * 24.0
LEAP_YEAR_H: Final = 366 * 24.0


def prorate(annual_h: float, period_h: float) -> float:
    """``annual_h`` pro-rated to a period of ``period_h`` hours; any calendar year is one year."""
    years = period_h / YEAR_H
    if YEAR_H <= period_h <= LEAP_YEAR_H:  # a leap year's extra day does not raise the quota
        years = 1.0
    return annual_h * years


@dataclass(frozen=True, slots=True)
class InstrumentLoad:
    """One instrument's measured load over a period, the input of ``capacity``."""

    category: Category
    period_h: float
    scheduled_h: float
    on_scheduled_h: float
    effective_h: float


@dataclass(frozen=True, slots=True)
class Capacity:
    """A group of instruments (one category, one region) over one period."""

    instruments: int
    quota_h: float
    effective_h: float
    fully_booked: int
    """Instruments at or above the pro-rated fully-booked hours."""
    spare_h: float
    """Effective hours the group could still give before each instrument is fully booked."""
    idle_scheduled_h: float
    """Working hours during which the instruments were not even switched on: |W ∖ ON|."""

    @property
    def effective_vs_quota(self) -> float | None:
        return self.effective_h / self.quota_h if self.quota_h else None


def capacity(loads: Iterable[InstrumentLoad]) -> Capacity:
    """Sum the loads of a group of instruments."""
    count = fully = 0
    quota = effective = spare = idle = 0.0
    for load in loads:
        booked = prorate(FULLY_BOOKED_H, load.period_h)
        count += 1
        quota += prorate(load.category.annual_quota_h, load.period_h)
        effective += load.effective_h
        fully += load.effective_h >= booked
        spare += max(0.0, booked - load.effective_h)
        idle += load.scheduled_h - load.on_scheduled_h
    return Capacity(count, quota, effective, fully, spare, idle)
