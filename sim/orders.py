"""Service orders made from the simulated bookings: honest ones and labelled bad ones.

A sharing platform bills its bookings as service orders; reconciliation
(DESIGN.md) checks each against measured usage. To test that, every order
made here knows what reconciliation should say about it:

- honest: the window covers one session (power-on to the end of
  post-processing, widened to whole 5 minutes), billed hours are its
  effective hours rounded to a quarter hour: no flag;
- ``inflated``: an honest window billed at 1.5 x its effective hours + 1 h;
- ``phantom``: 09:00-12:00 billed 3 h on a working day when the instrument
  was off all day; billed hours with no effective hours are ``inflated`` too;
- ``double_billed``: a second order for a session that already has one,
  5 minutes earlier: both orders get the flag.

Sessions still going at the end of the simulated period, and sessions
within an hour of a meter or agent fault, get no order: whether the
platform could verify them is a fact about coverage, not about billing, and
would make the labels ambiguous.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from instrumetry.domain.calendar import WorkingCalendar
from sim.scenario import Fleet, VirtualInstrument
from sim.truth import true_effective_h

Flag = Literal["inflated", "phantom", "double_billed"]
FIVE_MIN_S = 300
FAULT_MARGIN_MS = 3_600_000
_HOUR = timedelta(hours=1)  # bad orders are made from windows at least this long

EXTERNAL_ORGS = (
    "华东新药研发有限公司",
    "市食品药品检验研究院",
    "长江新材料科技股份有限公司",
    "江城半导体有限公司",
    "环境监测中心站",
    "博睿生物医药科技有限公司",
)
INTERNAL_ORGS = ("化学学院", "生命科学学院", "材料科学与工程学院", "医学院药学系")
PURPOSES = {
    "nmr": "核磁氢谱/碳谱结构确证",
    "sem": "样品表面形貌与能谱分析",
    "lcms": "代谢物定性定量分析",
    "xrd": "物相鉴定与结晶度分析",
    "confocal": "细胞荧光成像",
    "pcr": "基因表达定量检测",
    "general": "样品精密称量",
}


@dataclass(frozen=True, slots=True)
class OrderSettings:
    """How many orders a scenario makes, and how many of each bad kind."""

    order_share: float = 0.8  # sessions billed as an order
    external_share: float = 0.5
    inflated: int = 0
    phantom: int = 0
    double_billed: int = 0  # pairs
    yuan_per_hour: float = 300.0


@dataclass(frozen=True, slots=True)
class Order:
    """A service order in the platform's import shape (JSON and CSV)."""

    order_id: str
    instrument_id: str
    customer_org: str
    external: bool
    purpose: str
    starts_at: datetime
    ends_at: datetime
    billed_hours: float
    amount_yuan: float


@dataclass(frozen=True, slots=True)
class Label:
    """What reconciliation should say about an order: its kind and the flags expected."""

    kind: Literal["honest", "inflated", "phantom", "double_billed"]
    flags: tuple[Flag, ...]


def make_orders(
    fleet: Fleet, settings: OrderSettings, seed: int
) -> tuple[list[Order], dict[str, Label]]:
    """Orders for ``fleet``'s sessions plus the bad ones ``settings`` asks for, with labels."""
    rng = random.Random(seed ^ 0x0D0E)
    calendars = {i.id: i.calendar for i in fleet.institutions}
    drafts: list[tuple[Order, Label]] = []
    for vi in fleet.instruments:
        blocked = _fault_spans(fleet, vi.instrument.id)
        for start, end in vi.sessions:
            if rng.random() >= settings.order_share or _touches(blocked, start, end):
                continue
            window = (_floor5(start), _ceil5(end))
            if window[1] > fleet.period[1]:  # still going at the end: nothing can verify it
                continue
            billed = round(true_effective_h(vi, window) * 4) / 4
            if billed <= 0:
                continue
            drafts.append((_order(vi, window, billed, settings, rng), Label("honest", ())))
    honest = [i for i, (order, _) in enumerate(drafts) if order.ends_at - order.starts_at >= _HOUR]
    rng.shuffle(honest)
    for index in honest[: settings.inflated]:
        order, _ = drafts[index]
        billed = round((order.billed_hours * 1.5 + 1.0) * 4) / 4
        drafts[index] = (
            replace(
                order, billed_hours=billed, amount_yuan=round(billed * settings.yuan_per_hour, 2)
            ),
            Label("inflated", ("inflated",)),
        )
    for index in honest[settings.inflated : settings.inflated + settings.double_billed]:
        order, _ = drafts[index]
        drafts[index] = (order, Label("double_billed", ("double_billed",)))
        twin = _order(
            _instrument(fleet, order.instrument_id),
            (order.starts_at - timedelta(minutes=5), order.ends_at),
            order.billed_hours,
            settings,
            rng,
        )
        drafts.append((twin, Label("double_billed", ("double_billed",))))
    drafts += [
        (order, Label("phantom", ("inflated", "phantom")))
        for order in _phantoms(fleet, calendars, settings, rng)
    ]
    drafts.sort(key=lambda d: (d[0].starts_at, d[0].instrument_id))
    orders, labels = [], {}
    for n, (order, label) in enumerate(drafts, start=1):
        numbered = replace(order, order_id=f"SO-{n:07d}")
        orders.append(numbered)
        labels[numbered.order_id] = label
    return orders, labels


def _order(
    vi: VirtualInstrument,
    window: tuple[datetime, datetime],
    billed: float,
    settings: OrderSettings,
    rng: random.Random,
) -> Order:
    external = rng.random() < settings.external_share
    return Order(
        order_id="",
        instrument_id=vi.instrument.id,
        customer_org=rng.choice(EXTERNAL_ORGS if external else INTERNAL_ORGS),
        external=external,
        purpose=PURPOSES.get(vi.archetype.kind, "测试分析"),
        starts_at=window[0],
        ends_at=window[1],
        billed_hours=billed,
        amount_yuan=round(billed * settings.yuan_per_hour, 2),
    )


def _phantoms(
    fleet: Fleet,
    calendars: dict[str, WorkingCalendar],
    settings: OrderSettings,
    rng: random.Random,
) -> list[Order]:
    """Orders 09:00-12:00 on working days an instrument was off the whole local day."""
    candidates = [vi for vi in fleet.instruments if not vi.archetype.always_on]
    rng.shuffle(candidates)
    made: list[Order] = []
    for vi in candidates:
        if len(made) >= settings.phantom:
            break
        calendar = calendars[vi.instrument.institution_id]
        blocked = _fault_spans(fleet, vi.instrument.id)
        days = calendar.working_days(fleet.period)
        rng.shuffle(days)
        for day in days:
            midnight, next_midnight = calendar.day_span(day)
            if midnight < fleet.period[0] or next_midnight > fleet.period[1]:
                continue
            if vi.is_off_throughout(_ms(midnight), _ms(next_midnight)) and not _touches(
                blocked, midnight, next_midnight
            ):
                window = (midnight + timedelta(hours=9), midnight + timedelta(hours=12))
                made.append(_order(vi, window, 3.0, settings, rng))
                break
    return made


def _instrument(fleet: Fleet, instrument_id: str) -> VirtualInstrument:
    return next(vi for vi in fleet.instruments if vi.instrument.id == instrument_id)


def _fault_spans(fleet: Fleet, instrument_id: str) -> list[tuple[int, int]]:
    return [
        (f.start_ms - FAULT_MARGIN_MS, f.end_ms + FAULT_MARGIN_MS)
        for f in fleet.faults.of(instrument_id)
        if f.kind in ("meter_unreachable", "agent_crash")
    ]


def _touches(spans: list[tuple[int, int]], start: datetime, end: datetime) -> bool:
    first, last = _ms(start), _ms(end)
    return any(a < last and first < b for a, b in spans)


def _floor5(moment: datetime) -> datetime:
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % FIVE_MIN_S, tz=UTC)


def _ceil5(moment: datetime) -> datetime:
    return _floor5(moment + timedelta(seconds=FIVE_MIN_S - 1e-6))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
