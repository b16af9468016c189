"""What the platform knows about its institutions, instruments and agents."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from instrumetry.domain import ed25519
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.classify import Thresholds
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.topics import check_instrument_id


class Category(enum.StrEnum):
    """The Ministry of Education's instrument categories, which set the annual quota."""

    GENERAL = "general"
    SPECIALISED = "specialised"

    @property
    def annual_quota_h(self) -> float:
        """Standard annual hours (定额机时): 1,400 general, 800 specialised."""
        return 1400.0 if self is Category.GENERAL else 800.0


@dataclass(frozen=True, slots=True)
class Institution:
    id: str
    name: str
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)


@dataclass(frozen=True, slots=True)
class Instrument:
    id: str
    institution_id: str
    name: str
    model: str = ""
    category: Category = Category.GENERAL
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        check_instrument_id(self.id)


@dataclass(frozen=True, slots=True)
class Agent:
    """An enrolled agent: its instrument and its Ed25519 public key (raw 32 bytes)."""

    id: str
    instrument_id: str
    public_key: bytes

    def __post_init__(self) -> None:
        problem = ed25519.key_problem(self.public_key)
        if problem is not None:
            raise ConfigError(f"agent {self.id!r}: {problem}")
