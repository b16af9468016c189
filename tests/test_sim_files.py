"""Scenario files in, truth and orders out, and the comparison that `sim verify` makes."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from instrumetry.domain.errors import ConfigError
from instrumetry.domain.metrics import measure
from sim.orders import make_orders
from sim.scenario import build_fleet
from sim.scenario_file import BUNDLED, find_scenario, load_scenario
from sim.truth_files import load_fleet, load_intervals, load_labels, write_truth
from sim.verify import Measured, compare, knowable_intervals

MINIMAL = """
name = "tiny"
first_day = 2026-09-21
days = 3
[[institutions]]
id = "u"
name = "U"
[fleet]
instruments = 4
"""


@pytest.mark.parametrize("name", ["demo", "city-year"])
def test_bundled_scenarios_load(name: str) -> None:
    scenario = load_scenario(find_scenario(name))
    assert scenario.name == name
    calendar = scenario.spec.institutions[0].calendar
    assert not calendar.is_working_day(date(2026, 10, 1))  # National Day
    assert calendar.is_working_day(date(2026, 10, 10))  # a Saturday worked in exchange
    assert calendar.is_working_day(date(2026, 2, 14))


def test_city_year_is_a_year_of_2000_instruments_with_every_fault() -> None:
    scenario = load_scenario(BUNDLED / "city-year.toml")
    assert (scenario.spec.instruments, scenario.spec.days) == (2000, 365)
    kinds = {f.kind for f in scenario.spec.faults}
    assert kinds == {
        "agent_offline",
        "agent_crash",
        "meter_unreachable",
        "clock_skew",
        "broker_restart",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("instruments = 4", "instruments = 0"), "fleet.instruments: Expected `int` >= 1"),
        (("instruments = 4", 'instruments = "four"'), "fleet.instruments: Expected `int`"),
        (('name = "U"', 'name = "U"\ncalender = "x"'), "institutions[0]: Object contains unknown"),
        (('name = "U"', 'name = "U"\ncalendar = "x"'), "institutions.u.calendar: no [calendars.x]"),
        (('name = "U"', 'name = "U"\ntz = "Mars/Base"'), "institutions.u: unknown time zone"),
        (("days = 3", "days = 3\nfirst_day = 1"), "not valid TOML"),
        (
            ("instruments = 4", "instruments = 4\nmix = { tardis = 1 }"),
            "fleet.mix: unknown archetype 'tardis'",
        ),
        (
            ("instruments = 4", 'instruments = 4\n[[faults]]\nkind = "agent_crash"\ncount = 1'),
            "faults[0].hours: a agent_crash fault needs hours > 0",
        ),
        (
            ("instruments = 4", 'instruments = 4\n[[faults]]\nkind = "meteor"\ncount = 1'),
            "faults[0].kind: Invalid enum value 'meteor'",
        ),
        (
            (
                "instruments = 4",
                'instruments = 4\n[[faults]]\nkind = "agent_offline"\nhours = 2\n'
                "at = 2026-09-22T10:00:00",
            ),
            "faults[0].at: give a UTC offset",
        ),
    ],
)
def test_bad_scenarios_are_named_in_one_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace(*change, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_scenario(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: "), text
    assert message in text
    assert "\n" not in text


def test_a_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the scenario"):
        load_scenario(tmp_path / "nope.toml")


def test_the_mix_sets_the_shares_exactly(tmp_path: Path) -> None:
    path = tmp_path / "mix.toml"
    path.write_text(
        MINIMAL.replace("instruments = 4", "instruments = 30\nmix = { pcr = 2, nmr = 1 }"),
        encoding="utf-8",
    )
    fleet = build_fleet(load_scenario(path).spec)
    kinds = [vi.archetype.kind for vi in fleet.instruments]
    assert kinds.count("pcr") == 20
    assert kinds.count("nmr") == 10


def test_orders_and_labels_follow_the_settings(tmp_path: Path) -> None:
    scenario = load_scenario(BUNDLED / "demo.toml")
    fleet = build_fleet(scenario.spec)
    orders, labels = make_orders(fleet, scenario.orders, scenario.spec.seed)
    kinds = [label.kind for label in labels.values()]
    assert kinds.count("inflated") == scenario.orders.inflated
    assert kinds.count("phantom") == scenario.orders.phantom
    assert kinds.count("double_billed") == 2 * scenario.orders.double_billed
    assert len({o.order_id for o in orders}) == len(orders) == len(labels)
    by_id = {vi.instrument.id: vi for vi in fleet.instruments}
    for order in orders:
        label = labels[order.order_id]
        start_ms = int(order.starts_at.timestamp() * 1000)
        end_ms = int(order.ends_at.timestamp() * 1000)
        off = by_id[order.instrument_id].is_off_throughout(start_ms, end_ms)
        assert off == (label.kind == "phantom"), order
        assert order.amount_yuan == round(order.billed_hours * scenario.orders.yuan_per_hour, 2)
    # Honest orders of one instrument never overlap; each double-billed pair does.
    honest = sorted(
        (o for o in orders if labels[o.order_id].kind == "honest"),
        key=lambda o: (o.instrument_id, o.starts_at),
    )
    for before, after in itertools.pairwise(honest):
        if before.instrument_id == after.instrument_id:
            assert after.starts_at >= before.ends_at


def test_truth_files_round_trip(tmp_path: Path) -> None:
    scenario = load_scenario(BUNDLED / "demo.toml")
    spec = replace(scenario.spec, instruments=10, days=3)
    fleet = build_fleet(spec)
    orders, labels = make_orders(fleet, scenario.orders, spec.seed)
    write_truth(
        tmp_path, fleet, scenario="demo", poll_s=60, heartbeat_s=900, orders=orders, labels=labels
    )
    summary = load_fleet(tmp_path)
    assert (summary.start, summary.end) == fleet.period
    assert [i.id for i in summary.instruments] == [vi.instrument.id for vi in fleet.instruments]
    intervals = load_intervals(tmp_path)
    assert sum(map(len, intervals.values())) == sum(len(vi.truth) for vi in fleet.instruments)
    assert load_labels(tmp_path).keys() == labels.keys()
    rows = json.loads((tmp_path / "orders.json").read_text(encoding="utf-8"))
    with (tmp_path / "orders.csv").open(encoding="utf-8") as source:
        table = list(csv.DictReader(source))
    assert [r["order_id"] for r in rows] == [r["order_id"] for r in table]
    assert set(rows[0]) == {
        "order_id",
        "instrument_id",
        "customer_org",
        "external",
        "purpose",
        "starts_at",
        "ends_at",
        "billed_hours",
        "amount_yuan",
    }
    assert table[0]["external"] in ("true", "false")


def test_a_bad_truth_row_is_named(tmp_path: Path) -> None:
    (tmp_path / "intervals.csv").write_text(
        "instrument_id,state,start,end\nx,sleeping,2026-01-01T00:00:00+00:00,"
        "2026-01-02T00:00:00+00:00\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"intervals\.csv:2: bad row"):
        load_intervals(tmp_path)


def test_compare_passes_the_truth_and_catches_an_error(tmp_path: Path) -> None:
    scenario = load_scenario(BUNDLED / "demo.toml")
    spec = replace(scenario.spec, instruments=7, days=7)
    fleet = build_fleet(spec)
    orders, labels = make_orders(fleet, scenario.orders, spec.seed)
    write_truth(
        tmp_path, fleet, scenario="demo", poll_s=60, heartbeat_s=900, orders=orders, labels=labels
    )
    calendars = {i.id: i.calendar for i in fleet.institutions}
    truth, intervals = load_fleet(tmp_path), load_intervals(tmp_path)
    exact = []  # what a perfect collector measures: the truth where it can be known
    for ti in truth.instruments:
        timeline = knowable_intervals(intervals[ti.id], ti)
        usage = measure(timeline, fleet.period, fleet.period[1], calendars[ti.institution_id])
        exact.append(
            Measured(
                ti.id,
                usage.on_scheduled_h,
                usage.running_scheduled_h,
                usage.effective_h,
                usage.startup_rate,
                usage.coverage,
            )
        )
    flags: dict[str, set[str]] = {i: set(label.flags) for i, label in labels.items()}
    verdict = compare(truth, intervals, exact, load_labels(tmp_path), flags)
    assert verdict.ok, verdict.problems
    assert verdict.orders.bad_flagged == verdict.orders.bad > 0
    off = [replace(exact[0], on_scheduled_h=exact[0].on_scheduled_h + 2.0), *exact[1:]]
    honest_id = next(i for i, label in labels.items() if label.kind == "honest")
    wrong_flags: dict[str, set[str]] = {**flags, honest_id: {"inflated"}}
    verdict = compare(truth, intervals, off, load_labels(tmp_path), wrong_flags)
    assert not verdict.ok
    assert any(p.startswith(f"{exact[0].instrument_id}: on_scheduled_h") for p in verdict.problems)
    assert any(p.startswith(f"order {honest_id} (honest)") for p in verdict.problems)
    assert verdict.orders.honest_flagged == 1
    no_endpoint = compare(truth, intervals, exact, load_labels(tmp_path), None)
    assert no_endpoint.ok
    assert not no_endpoint.orders.available
