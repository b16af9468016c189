"""Scenario files: a fleet, its calendars, its faults and its orders, in TOML.

A scenario is data a lab manager can read and edit (see
``sim/scenarios/*.toml``). It is decoded with msgspec into strict structs, so
a typo or a wrong type ends in one line that names the file, the field and
the problem, never in a traceback or a silently ignored key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated

import msgspec

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.errors import ConfigError, InstrumetryError
from instrumetry.domain.registry import Institution
from sim.archetypes import ARCHETYPES
from sim.faults import FaultKind, FaultSpec
from sim.orders import OrderSettings
from sim.scenario import FleetSpec

Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Unknown keys are errors: a misspelt setting must not be ignored."""


class _Calendar(_Strict):
    workdays: list[Annotated[int, msgspec.Meta(ge=0, le=6)]] = msgspec.field(
        default_factory=lambda: [0, 1, 2, 3, 4]
    )
    day_start: time = time(8)
    day_end: time = time(18)
    holidays: list[date] = msgspec.field(default_factory=list)
    extra_workdays: list[date] = msgspec.field(default_factory=list)


class _Institution(_Strict):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: str
    tz: str = "Asia/Shanghai"
    calendar: str = ""  # a key of [calendars]; empty: Mon-Fri 08-18 without holidays


class _Fleet(_Strict):
    instruments: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    broken_share: Share = 0.04
    weekend_session_chance: Share = 0.1
    mix: dict[str, Annotated[float, msgspec.Meta(ge=0.0)]] = msgspec.field(default_factory=dict)


class _Fault(_Strict):
    kind: FaultKind
    at: datetime | None = None
    hours: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    instruments: list[str] = msgspec.field(default_factory=list)
    count: Annotated[int, msgspec.Meta(ge=0)] = 0
    skew_s: float = 0.0


class _Orders(_Strict):
    order_share: Share = 0.8
    external_share: Share = 0.5
    inflated: Annotated[int, msgspec.Meta(ge=0)] = 0
    phantom: Annotated[int, msgspec.Meta(ge=0)] = 0
    double_billed: Annotated[int, msgspec.Meta(ge=0)] = 0
    yuan_per_hour: Positive = 300.0


class _File(_Strict):
    name: str
    first_day: date
    days: Annotated[int, msgspec.Meta(ge=1, le=3660)]
    institutions: list[_Institution]
    fleet: _Fleet
    seed: int = 1
    poll_s: Positive = 60.0
    heartbeat_s: Positive = 900.0
    calendars: dict[str, _Calendar] = msgspec.field(default_factory=dict)
    faults: list[_Fault] = msgspec.field(default_factory=list)
    orders: _Orders = msgspec.field(default_factory=_Orders)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A loaded scenario: the fleet to build, how to drive it, which orders to make."""

    name: str
    spec: FleetSpec
    poll_s: float
    heartbeat_s: float
    orders: OrderSettings


BUNDLED = Path(__file__).parent / "scenarios"
"""The example scenarios shipped with the simulator."""


def find_scenario(name_or_path: str) -> Path:
    """A path as given, or the bundled scenario of that name (``demo``, ``city-year``)."""
    path = Path(name_or_path)
    bundled = BUNDLED / f"{name_or_path}.toml"
    return bundled if not path.exists() and bundled.is_file() else path


def load_scenario(path: Path) -> Scenario:
    """Read and check the scenario file ``path``."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the scenario: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        data = msgspec.convert(raw, _File)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{path}: {_where_first(str(error))}") from None
    try:
        return _scenario(data)
    except InstrumetryError as error:
        raise ConfigError(f"{path}: {error}") from None


def _where_first(message: str) -> str:
    """msgspec says "problem - at `$.fleet.mix`"; put the field first, as every error here does."""
    problem, sep, where = message.rpartition(" - at ")
    if not sep:
        return message
    return f"{where.strip('`').removeprefix('$.')}: {problem}"


def _scenario(data: _File) -> Scenario:
    if not data.institutions:
        raise ConfigError("institutions: at least one institution is needed")
    kinds = {a.kind for a in ARCHETYPES}
    for kind in data.fleet.mix:
        if kind not in kinds:
            raise ConfigError(
                f"fleet.mix: unknown archetype {kind!r} (known: {', '.join(sorted(kinds))})"
            )
    if data.fleet.mix and not any(data.fleet.mix.values()):
        raise ConfigError("fleet.mix: at least one archetype needs a weight above 0")
    spec = FleetSpec(
        instruments=data.fleet.instruments,
        days=data.days,
        first_day=data.first_day,
        seed=data.seed,
        broken_share=data.fleet.broken_share,
        weekend_session_chance=data.fleet.weekend_session_chance,
        institutions=tuple(_institution(i, data.calendars) for i in data.institutions),
        mix=tuple(data.fleet.mix.items()),
        faults=tuple(_fault(index, f) for index, f in enumerate(data.faults)),
    )
    orders = OrderSettings(
        order_share=data.orders.order_share,
        external_share=data.orders.external_share,
        inflated=data.orders.inflated,
        phantom=data.orders.phantom,
        double_billed=data.orders.double_billed,
        yuan_per_hour=data.orders.yuan_per_hour,
    )
    return Scenario(data.name, spec, data.poll_s, data.heartbeat_s, orders)


def _institution(data: _Institution, calendars: dict[str, _Calendar]) -> Institution:
    where = f"institutions.{data.id}"
    if data.calendar and data.calendar not in calendars:
        raise ConfigError(f"{where}.calendar: no [calendars.{data.calendar}] section")
    spec = calendars[data.calendar] if data.calendar else _Calendar()
    try:
        calendar = WorkingCalendar(
            tz=data.tz,
            workdays=frozenset(spec.workdays),
            day_start=spec.day_start,
            day_end=spec.day_end,
            holidays=frozenset(spec.holidays),
            extra_workdays=frozenset(spec.extra_workdays),
        )
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return Institution(data.id, data.name, calendar)


def _fault(index: int, data: _Fault) -> FaultSpec:
    where = f"faults[{index}]"
    if data.at is not None and data.at.tzinfo is None:
        raise ConfigError(f"{where}.at: give a UTC offset, e.g. 2026-03-02T10:00:00+08:00")
    if data.kind == "clock_skew" and not data.skew_s:
        raise ConfigError(f"{where}.skew_s: a clock_skew fault needs a non-zero skew_s")
    if data.kind in ("agent_offline", "agent_crash", "meter_unreachable") and data.hours <= 0:
        raise ConfigError(f"{where}.hours: a {data.kind} fault needs hours > 0")
    if data.kind != "broker_restart" and not (data.instruments or data.count):
        raise ConfigError(f"{where}: name instruments or give a count")
    return FaultSpec(
        kind=data.kind,
        at=data.at,
        hours=data.hours,
        instruments=tuple(data.instruments),
        count=data.count,
        skew_s=data.skew_s,
    )
