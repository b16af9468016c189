"""Working calendars: when an institution's instruments are expected to work.

Days are local days of the institution's time zone and windows are built
from local wall-clock times, then converted to UTC, so a daylight-saving
change shortens or lengthens the day exactly as the clocks on the wall do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from instrumetry.domain.errors import ConfigError
from instrumetry.domain.timeset import Span, TimeSet, clip, normalize


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    """Working windows: weekdays ``day_start``–``day_end`` local time, minus holidays.

    ``extra_workdays`` are weekend days worked in exchange for a holiday (China's
    调休), which official calendars publish alongside the holidays.
    """

    tz: str = "Asia/Shanghai"
    workdays: frozenset[int] = frozenset(range(5))  # Monday = 0
    day_start: time = time(8)
    day_end: time = time(18)
    holidays: frozenset[date] = field(default_factory=frozenset)
    extra_workdays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {self.tz!r} (use an IANA name such as 'Asia/Shanghai')"
            ) from None
        if not self.day_start < self.day_end:
            raise ConfigError(
                f"working day must start before it ends, got {self.day_start}–{self.day_end}"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def is_working_day(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.weekday() in self.workdays and day not in self.holidays

    def local_days(self, period: Span) -> list[date]:
        """Every local day that overlaps ``period`` (none if it is empty)."""
        if period[0] >= period[1]:
            return []
        first = period[0].astimezone(self.zone).date()
        last = (period[1] - timedelta(microseconds=1)).astimezone(self.zone).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def day_span(self, day: date) -> Span:
        """A local day, midnight to midnight, in UTC (23 or 25 hours on DST days)."""
        return (self._utc(day, time(0)), self._utc(day + timedelta(days=1), time(0)))

    def working_days(self, period: Span) -> list[date]:
        """Working days that overlap ``period``."""
        return [d for d in self.local_days(period) if self.is_working_day(d)]

    def windows(self, period: Span) -> TimeSet:
        """W ∩ P: the working windows inside ``period``, in UTC."""
        spans = (
            (self._utc(d, self.day_start), self._utc(d, self.day_end))
            for d in self.working_days(period)
        )
        return clip(normalize(spans), period)

    def _utc(self, day: date, clock: time) -> datetime:
        return datetime.combine(day, clock, tzinfo=self.zone).astimezone(UTC)
