"""Benchmark: what each table costs on disk, and the capacity plan that follows.

``python -m bench.storage [--instruments 500] [--days 7] [--events-per-day 5]``

Stores a fleet's messages through the collector's own storing path
(``collector.store.store``, in batches of 1,000 messages in time order, as
the collector commits them) into a private stack: a heartbeat a minute per
instrument (the agent's default) and signed, chained events (the simulated
``city-year`` fleet made 4.8 an instrument-day over a year, faults and
replays included). Then it measures each table's rows and its bytes on disk,
indexes included, against the bytes of the rows' data alone
(``pg_column_size``, the reference: the ratio is what indexes, tuple and page
headers add), and projects rows and disk a year for 2,000 and 100,000
instruments, with the raw heartbeats kept for ``--retention-days`` and
everything else kept for good.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from bench import machine
from bench.agent_common import private_stack
from bench.workload import STEP_MS, Instrument, events, fleet, heartbeats, register
from collector import migrate, verify
from collector.ingest import Parsed, parse_message
from collector.store import store
from instrumetry.domain import wire

DAY_MS = 86_400_000
BATCH = 1000
FLEETS = (2_000, 100_000)


@dataclass(frozen=True, slots=True)
class Table:
    """How a table's rows grow: per instrument and day, or a fixed count kept per instrument."""

    name: str
    per_day: bool
    """Rows grow with the days (else the measured rows per instrument stay as they are)."""


TABLES = (
    Table("events", per_day=True),
    Table("intervals", per_day=True),
    Table("heartbeats", per_day=True),
    Table("power_hourly", per_day=True),
    Table("power_current", per_day=False),
    Table("daily_usage", per_day=True),
    Table("agent_boots", per_day=False),
    Table("instruments", per_day=False),
)
KEPT_ROWS_A_YEAR = {"power_hourly": 8_760, "daily_usage": 365}
"""Tables whose yearly rows per instrument are known exactly, whatever the run measured."""


@dataclass(frozen=True, slots=True)
class Measured:
    table: str
    rows: int
    disk_bytes: int
    data_bytes: int

    @property
    def disk_per_row(self) -> float:
        return self.disk_bytes / self.rows if self.rows else 0.0

    @property
    def data_per_row(self) -> float:
        return self.data_bytes / self.rows if self.rows else 0.0


def messages(
    instruments: list[Instrument], days: int, events_per_day: int
) -> Iterator[tuple[int, Parsed]]:
    """Every instrument's heartbeats and events, merged in device-time order."""
    step = DAY_MS // events_per_day
    streams = [_stream(i, days, events_per_day, step) for i in instruments]
    yield from heapq.merge(*streams, key=lambda item: item[0])


def _stream(
    instrument: Instrument, days: int, events_per_day: int, step_ms: int
) -> Iterator[tuple[int, Parsed]]:
    timed = [
        (wire.decode(wire.Event, payload).t, instrument.topic, payload)
        for _, payload in events(instrument, days * events_per_day, step_ms)
    ]
    timed += [
        (wire.decode(wire.Heartbeat, payload).t, instrument.heartbeat_topic, payload)
        for payload in heartbeats(instrument, days * DAY_MS // STEP_MS)
    ]
    for t, topic, payload in sorted(timed, key=lambda item: item[0]):
        yield t, parse_message(topic, payload, _received(t))


def _received(device_ms: int) -> datetime:
    return datetime.fromtimestamp((device_ms + 150) / 1000, UTC)


def fill(
    conn: psycopg.Connection[TupleRow], stream: Iterator[tuple[int, Parsed]]
) -> tuple[int, int]:
    """Store ``stream`` in batches, printing progress; (events, heartbeats) stored."""
    keys = verify.EnrolledKeys()
    started = time.monotonic()
    events_stored = heartbeats_stored = messages_stored = 0
    while batch := [item for _, item in itertools.islice(stream, BATCH)]:
        result = store(conn, batch, keys)
        events_stored += result.events_inserted
        heartbeats_stored += result.heartbeats_inserted
        messages_stored += len(batch)
        if messages_stored % 500_000 == 0:
            print(f"  {messages_stored:,} messages stored ({time.monotonic() - started:.0f} s)")
    return events_stored, heartbeats_stored


def measure(conn: psycopg.Connection[TupleRow], table: str) -> Measured:
    hypertable = conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", (table,)
    ).fetchone()
    size = "hypertable_size(%s)" if hypertable else "pg_total_relation_size(%s)"
    (disk,) = conn.execute(f"SELECT {size}", (table,)).fetchone() or (0,)
    rows, data = conn.execute(
        sql.SQL("SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {} t").format(
            sql.Identifier(table)
        )
    ).fetchone() or (0, 0)
    return Measured(table, int(rows), int(disk or 0), int(data))


def plan_line(
    found: Measured, instrument_days: int, instruments: int, retention_days: int
) -> tuple[str, list[tuple[int, float]]]:
    """The table's rows and GB for each of ``FLEETS``; heartbeats: those the window holds."""
    if found.table == "heartbeats":
        per_instrument = found.rows / instrument_days * retention_days
        label = f"heartbeats (the last {retention_days} days)"
    elif found.table in KEPT_ROWS_A_YEAR:
        per_instrument = KEPT_ROWS_A_YEAR[found.table]
        label = f"{found.table} (a year)"
    elif any(t.per_day for t in TABLES if t.name == found.table):
        per_instrument = found.rows / instrument_days * 365
        label = f"{found.table} (a year)"
    else:
        per_instrument = found.rows / instruments
        label = f"{found.table} (kept as measured)"
    return label, [
        (round(per_instrument * fleet_size), per_instrument * fleet_size * found.disk_per_row / 1e9)
        for fleet_size in FLEETS
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    parser.add_argument("--instruments", type=int, default=500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--events-per-day", type=int, default=5)
    parser.add_argument(
        "--retention-days", type=int, default=30, help="raw heartbeats kept, for the plan"
    )
    args = parser.parse_args(argv)
    with private_stack() as (_, info), psycopg.connect(info.database_url) as setup:
        migrate.migrate(setup, report=lambda _: None)
        for line in machine.describe(info.database_url):
            print(line)
        instruments = fleet("store", args.instruments)
        register(setup, instruments)
        setup.commit()
        print(
            f"storing {args.days} days of {args.instruments} instruments: a heartbeat a minute, "
            f"{args.events_per_day} events a day"
        )
        started = time.monotonic()
        with psycopg.connect(info.database_url, autocommit=True) as conn:
            stored = fill(conn, messages(instruments, args.days, args.events_per_day))
            print(
                f"stored {stored[0]:,} events and {stored[1]:,} heartbeats "
                f"in {time.monotonic() - started:.0f} s"
            )
            conn.execute("VACUUM ANALYZE")
            found = [measure(conn, table.name) for table in TABLES]
    instrument_days = args.instruments * args.days
    print(
        "\n| table | rows | per instrument-day | disk bytes a row | data bytes a row "
        "| disk / data |\n|---|---|---|---|---|---|"
    )
    for m in found:
        ratio = m.disk_bytes / m.data_bytes if m.data_bytes else 0.0
        print(
            f"| {m.table} | {m.rows:,} | {m.rows / instrument_days:.2f} | {m.disk_per_row:.0f} "
            f"| {m.data_per_row:.0f} | {ratio:.2f} |"
        )
    header = " | ".join(f"rows, {n:,} | GB, {n:,}" for n in FLEETS)
    print(f"\n| table | {header} |\n|---|{'---|' * 2 * len(FLEETS)}")
    totals = [0.0] * len(FLEETS)
    for m in found:
        label, figures = plan_line(m, instrument_days, args.instruments, args.retention_days)
        cells = " | ".join(f"{rows:,} | {gb:,.2f}" for rows, gb in figures)
        print(f"| {label} | {cells} |")
        totals = [t + gb for t, (_, gb) in zip(totals, figures, strict=True)]
    print("| **all** | " + " | ".join(f" | **{gb:,.1f}**" for gb in totals).strip() + " |")
    beats = next(m for m in found if m.table == "heartbeats")
    flow = ", ".join(
        f"{beats.rows / instrument_days * 365 * n:,.0f} for {n:,} instruments" for n in FLEETS
    )
    print(f"\nheartbeats received a year (kept: the last {args.retention_days} days): {flow}")


if __name__ == "__main__":
    main()
