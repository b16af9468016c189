"""The ground truth on disk: what ``sim fleet`` writes and ``sim verify`` reads back.

A truth folder holds:

- ``fleet.json``: the period, the poll interval, the institutions with their
  calendars, and per instrument its archetype, number of true transitions and
  the faults done to it (what verification must allow for);
- ``intervals.csv``: every instrument's true state intervals
  (``instrument_id,state,start,end``, RFC 3339 UTC);
- ``orders.json`` and ``orders.csv``: the service orders, in the shape the
  platform imports;
- ``labels.json``: per order id, its kind and the flags reconciliation
  should raise.

Files are the interface on purpose: verification can run later, elsewhere,
against any deployment that ingested the same fleet.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TypeVar

import msgspec

from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.intervals import StateInterval
from instrumetry.domain.registry import Institution
from instrumetry.domain.states import State
from sim.orders import Label, Order
from sim.scenario import Fleet, VirtualInstrument

T = TypeVar("T")
ORDER_FIELDS = (
    "order_id",
    "instrument_id",
    "customer_org",
    "external",
    "purpose",
    "starts_at",
    "ends_at",
    "billed_hours",
    "amount_yuan",
)


class TruthCalendar(msgspec.Struct, forbid_unknown_fields=True):
    tz: str
    workdays: list[int]
    day_start: time
    day_end: time
    holidays: list[date]
    extra_workdays: list[date]


class TruthInstitution(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str
    calendar: TruthCalendar


class TruthInstrument(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    institution_id: str
    kind: str
    transitions: int
    skew_s: float
    unreachable: list[tuple[datetime, datetime]]
    crashed: list[tuple[datetime, datetime]]
    offline: list[tuple[datetime, datetime]]
    unheard: list[tuple[datetime, datetime]] = []
    """Before each crash, from the agent's last message (heartbeat or event) to its restart:
    it measured until it died, but nothing it sent can say when that was."""


class TruthFleet(msgspec.Struct, forbid_unknown_fields=True):
    scenario: str
    start: datetime
    end: datetime
    poll_s: float
    institutions: list[TruthInstitution]
    instruments: list[TruthInstrument]


class TruthLabel(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    flags: list[str]


def write_truth(
    folder: Path,
    fleet: Fleet,
    *,
    scenario: str,
    poll_s: float,
    heartbeat_s: float,
    orders: list[Order],
    labels: dict[str, Label],
) -> None:
    """Write ``fleet``'s ground truth, orders and labels into ``folder`` (created if needed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        summary = TruthFleet(
            scenario=scenario,
            start=fleet.period[0],
            end=fleet.period[1],
            poll_s=poll_s,
            institutions=[_institution(i) for i in fleet.institutions],
            instruments=[
                TruthInstrument(
                    id=vi.instrument.id,
                    institution_id=vi.instrument.institution_id,
                    kind=vi.archetype.kind,
                    transitions=len(vi.truth) - 1,
                    skew_s=fleet.faults.skew_ms(vi.instrument.id) / 1000,
                    unreachable=_spans(fleet, vi.instrument.id, "meter_unreachable"),
                    crashed=_spans(fleet, vi.instrument.id, "agent_crash"),
                    offline=_spans(fleet, vi.instrument.id, "agent_offline"),
                    unheard=_unheard(fleet, vi, poll_s, heartbeat_s),
                )
                for vi in fleet.instruments
            ],
        )
        (folder / "fleet.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary)))
        with (folder / "intervals.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(("instrument_id", "state", "start", "end"))
            for vi in fleet.instruments:
                for segment in vi.truth:
                    writer.writerow(
                        (
                            vi.instrument.id,
                            segment.state,
                            _iso(segment.start_ms),
                            _iso(segment.end_ms),
                        )
                    )
        rows = [{name: getattr(order, name) for name in ORDER_FIELDS} for order in orders]
        (folder / "orders.json").write_bytes(msgspec.json.format(msgspec.json.encode(rows)))
        with (folder / "orders.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(ORDER_FIELDS)
            for row in rows:
                writer.writerow(
                    [_csv_value(row[name]) for name in ORDER_FIELDS]  # bools as true/false
                )
        label_rows = {
            order_id: TruthLabel(label.kind, list(label.flags))
            for order_id, label in labels.items()
        }
        (folder / "labels.json").write_bytes(msgspec.json.format(msgspec.json.encode(label_rows)))
    except OSError as error:
        where = error.filename or folder
        raise ConfigError(f"{where}: cannot write the truth: {error.strerror}") from None


def load_fleet(folder: Path) -> TruthFleet:
    return _load(folder / "fleet.json", TruthFleet)


def load_labels(folder: Path) -> dict[str, TruthLabel]:
    return _load(folder / "labels.json", dict[str, TruthLabel])


def load_intervals(folder: Path) -> dict[str, list[StateInterval]]:
    """Each instrument's true intervals; ``ConfigError`` naming the line of a bad row."""
    path = folder / "intervals.csv"
    intervals: dict[str, list[StateInterval]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as source:
            for number, row in enumerate(csv.DictReader(source), start=2):
                try:
                    interval = StateInterval(
                        State(row["state"]),
                        datetime.fromisoformat(row["start"]),
                        datetime.fromisoformat(row["end"]),
                    )
                except (KeyError, TypeError, ValueError) as error:
                    raise ConfigError(f"{path}:{number}: bad row: {error}") from None
                intervals.setdefault(row["instrument_id"], []).append(interval)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the truth: {error.strerror}") from None
    return intervals


def calendar_of(institution: TruthInstitution) -> Institution:
    spec = institution.calendar
    calendar = WorkingCalendar(
        tz=spec.tz,
        workdays=frozenset(spec.workdays),
        day_start=spec.day_start,
        day_end=spec.day_end,
        holidays=frozenset(spec.holidays),
        extra_workdays=frozenset(spec.extra_workdays),
    )
    return Institution(institution.id, institution.name, calendar)


def _load(path: Path, kind: type[T]) -> T:
    """``path`` decoded as ``kind``; a missing or malformed file is a ``ConfigError``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the truth: {error.strerror}") from None
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as error:  # ValidationError is one too
        raise ConfigError(f"{path}: {error}") from None


def _institution(institution: Institution) -> TruthInstitution:
    calendar = institution.calendar
    return TruthInstitution(
        id=institution.id,
        name=institution.name,
        calendar=TruthCalendar(
            tz=calendar.tz,
            workdays=sorted(calendar.workdays),
            day_start=calendar.day_start,
            day_end=calendar.day_end,
            holidays=sorted(calendar.holidays),
            extra_workdays=sorted(calendar.extra_workdays),
        ),
    )


def _spans(fleet: Fleet, instrument: str, kind: str) -> list[tuple[datetime, datetime]]:
    return [(_dt(f.start_ms), _dt(f.end_ms)) for f in fleet.faults.of(instrument) if f.kind == kind]


def _unheard(
    fleet: Fleet, vi: VirtualInstrument, poll_s: float, heartbeat_s: float
) -> list[tuple[datetime, datetime]]:
    """``TruthInstrument.unheard``: each crash back to the agent's last message before it.

    An agent sends a heartbeat ``heartbeat_s`` after its boot's first reading
    and every ``heartbeat_s`` after that (on the poll grid), and an event at
    each transition; the collector cannot know the old boot lived past the
    later of the two (``agent_boots``).
    """
    poll_ms, beat_ms = round(poll_s * 1000), round(heartbeat_s * 1000)
    start_ms = fleet.period_ms[0]
    transitions = [segment.start_ms for segment in vi.truth[1:]]
    spans = []
    boot_ms = start_ms  # the first reading of the running boot
    for fault in sorted(fleet.faults.of(vi.instrument.id), key=lambda f: f.start_ms):
        if fault.kind != "agent_crash":
            continue
        beats = (fault.start_ms - 1 - boot_ms) // beat_ms  # no reading at the crash itself
        heard = max([boot_ms + beats * beat_ms, *(t for t in transitions if t < fault.start_ms)])
        spans.append((_dt(heard), _dt(fault.end_ms)))
        boot_ms = start_ms + -(-(fault.end_ms - start_ms) // poll_ms) * poll_ms
    return spans


def _csv_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _iso(ms: int) -> str:
    return _dt(ms).isoformat()


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
