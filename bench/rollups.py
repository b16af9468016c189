"""Benchmark: what daily rollups cost the collector and save the API.

Starts a private dev stack (own state folder, free ports) and measures, in
one run:

1. the collector's ``store`` of a steady-state batch (one heartbeat from each
   instrument, a few of them with events, one minute later each round), with
   the rollup refresh and without it (the refresh replaced by a no-op: what
   the collector cost before rollups);
2. a year of one institution's instruments (intervals written directly, the
   rollups then built by ``collector.rollups.rebuild``, i.e. ``instrumetry db
   rollups --rebuild``): the daily series and annual figures as the API
   computes them (``api.daily.measure_days``), from rollups and, with the
   rollups deleted, from intervals; and the pre-rollup annual path (one
   ``measure`` over the year per instrument) as the reference. The figures
   of both ``measure_days`` runs are checked equal before times are printed.

    PYTHONPATH=. python -m bench.rollups [--instruments 100] [--batches 30]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from api import daily, queries
from collector import migrate, rollups
from collector.ingest import Parsed, parse_message
from collector.store import store_batch
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import topics, wire
from instrumetry.domain.calendar import WorkingCalendar
from instrumetry.domain.daily import total
from instrumetry.domain.intervals import derive
from instrumetry.domain.metrics import Allowances, measure
from instrumetry.domain.states import State

CALENDAR = WorkingCalendar(tz="Europe/Berlin")
YEAR = (date(2026, 1, 1), date(2026, 12, 31))
ALLOWANCES = Allowances()
BOOT = uuid.uuid4().hex


def free_ports(count: int) -> list[int]:
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def register(conn: psycopg.Connection[TupleRow], count: int, prefix: str) -> list[str]:
    conn.execute(
        "INSERT INTO institutions (id, name, tz) VALUES ('be', 'Berlin', 'Europe/Berlin') "
        "ON CONFLICT DO NOTHING"
    )
    ids = [f"{prefix}-{n:05d}" for n in range(count)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'be', %s)",
            [(i, i) for i in ids],
        )
    return ids


# --- 1. the collector's batch ---------------------------------------------


def collector_batches(
    url: str, instruments: int, batches: int
) -> tuple[list[float], list[float], float]:
    """Store time per batch (ms) with and without the rollup refresh, alternating rounds.

    Then the time of the one batch a day that passes local midnight, where
    every instrument's finished day is recomputed.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        ids = register(conn, instruments, "col")
        keys = {i: Ed25519PrivateKey.generate() for i in ids}
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
                [
                    (f"agent-{i}", i, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
                    for i, k in keys.items()
                ],
            )
        rng = random.Random(1)
        seqs = dict.fromkeys(ids, 0)
        states = dict.fromkeys(ids, State.OFF)
        start = datetime(2026, 3, 2, 7, tzinfo=UTC)
        with_ms: list[float] = []
        without_ms: list[float] = []
        real_refresh = rollups.refresh
        for n in range(2 * batches):
            now = start + timedelta(minutes=n)
            batch: list[Parsed] = []
            for i in ids:
                if rng.random() < 0.1:  # a transition on one instrument in ten each minute
                    seqs[i] += 1
                    states[i] = rng.choice([s for s in (State.OFF, State.STANDBY, State.RUNNING)])
                    batch.append(_event(i, keys[i], seqs[i], now, states[i]))
                batch.append(_heartbeat(i, seqs[i], now + timedelta(seconds=30), states[i]))
            refreshing = n % 2 == 0
            rollups.refresh = real_refresh if refreshing else _no_refresh
            began = time.perf_counter()
            store_batch(conn, batch)
            (with_ms if refreshing else without_ms).append((time.perf_counter() - began) * 1000)
        rollups.refresh = real_refresh
        midnight = CALENDAR.day_span(start.astimezone(CALENDAR.zone).date())[1]
        beats = [_heartbeat(i, seqs[i], midnight + timedelta(seconds=30), states[i]) for i in ids]
        began = time.perf_counter()
        store_batch(conn, beats)
        midnight_ms = (time.perf_counter() - began) * 1000
    return with_ms, without_ms, midnight_ms


def _no_refresh(
    cur: psycopg.Cursor[TupleRow],
    changed: Mapping[str, datetime],
    moved: Mapping[str, datetime],
    *,
    open_day: bool = False,
) -> int:
    """What the collector did before rollups: nothing."""
    return 0


def _event(key: str, signer: Ed25519PrivateKey, seq: int, at: datetime, to: State) -> Parsed:
    message = wire.Event(
        v=1,
        instrument=key,
        boot=BOOT,
        seq=seq,
        t=int(at.timestamp() * 1000),
        from_state=State.UNKNOWN,
        to_state=to,
        power_w=50.0,
        prev="ab" * 32,
    )
    signed = wire.sign(message, signer.sign)
    return parse_message(topics.topic(topics.Kind.EVENTS, key), wire.encode(signed), at)


def _heartbeat(key: str, seq: int, at: datetime, state: State) -> Parsed:
    message = wire.Heartbeat(
        v=1,
        instrument=key,
        boot=BOOT,
        t=int(at.timestamp() * 1000),
        state=state,
        last_seq=seq,
        samples=60,
        power_min_w=1.0,
        power_mean_w=2.0,
        power_max_w=3.0,
    )
    return parse_message(topics.topic(topics.Kind.HEARTBEATS, key), wire.encode(message), at)


# --- 2. the API's year ------------------------------------------------------


def seed_year(url: str, instruments: int) -> int:
    """A busy year of intervals per instrument; returns how many interval rows."""
    rng = random.Random(2)
    rows = 0
    end = CALENDAR.day_span(YEAR[1])[1]
    with psycopg.connect(url, autocommit=True) as conn:
        ids = register(conn, instruments, "api")
        for key in ids:
            changes: list[tuple[datetime, State]] = []
            day = CALENDAR.day_span(YEAR[0])[0]
            while day < end:
                if rng.random() < 0.85:
                    moment = day + timedelta(hours=7, minutes=rng.randrange(120))
                    changes.append((moment, State.STANDBY))
                    for _ in range(4):
                        moment += timedelta(minutes=rng.randrange(10, 60))
                        changes.append((moment, State.RUNNING))
                        moment += timedelta(minutes=rng.randrange(20, 90))
                        changes.append((moment, State.STANDBY))
                    changes.append((moment + timedelta(minutes=rng.randrange(5, 60)), State.OFF))
                day += timedelta(days=1)
            intervals = derive(changes)
            with conn.cursor().copy(
                "COPY intervals (instrument_id, state, start_time, end_time) FROM STDIN"
            ) as copy:
                for iv in intervals:
                    copy.write_row((key, iv.state.value, iv.start, iv.end))
            rows += len(intervals)
            conn.execute("UPDATE instruments SET last_seen = %s WHERE id = %s", (end, key))
        conn.execute("ANALYZE intervals")
    return rows


async def api_year(url: str) -> dict[str, list[Any]]:
    """Run each way ``repeat`` times; return the samples (ms) and each way's annual figures."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        records = [r for r in await queries.instruments(conn, "be") if r.instrument.id[:3] == "api"]
        spans = {
            r.instrument.id: (CALENDAR.day_span(YEAR[0])[0], CALENDAR.day_span(YEAR[1])[1])
            for r in records
        }

        async def days() -> list[Any]:
            async with queries.snapshot(conn):
                found = await daily.measure_days(conn, records, spans, {}, ALLOWANCES)
            return [total(d.usage for d in found[r.instrument.id]) for r in records]

        async def whole_year() -> list[Any]:
            reach = (YEAR_SPAN[0] - ALLOWANCES.post, YEAR_SPAN[1] + ALLOWANCES.prep)
            async with queries.snapshot(conn):
                intervals = await queries.intervals(conn, list(spans), reach)
            return [
                measure(
                    intervals.get(r.instrument.id, []),
                    YEAR_SPAN,
                    r.last_seen or daily.NEVER,
                    CALENDAR,
                    allowances=ALLOWANCES,
                )
                for r in records
            ]

        out: dict[str, list[Any]] = {}
        out["rollups"] = await _timed(days)
        await conn.execute("DELETE FROM daily_usage WHERE instrument_id LIKE 'api-%%'")
        out["intervals"] = await _timed(days)
        out["reference"] = await _timed(whole_year)
    return out


YEAR_SPAN = (CALENDAR.day_span(YEAR[0])[0], CALENDAR.day_span(YEAR[1])[1])
REPEAT = 5


async def _timed(run: Callable[[], Any]) -> list[Any]:
    samples = []
    result = None
    for _ in range(REPEAT):
        began = time.perf_counter()
        result = await run()
        samples.append((time.perf_counter() - began) * 1000)
    return [samples, result]


def main() -> None:
    global REPEAT  # noqa: PLW0603 - one knob for every timed section
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--collector-instruments", type=int, default=500)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    REPEAT = args.repeat
    pg_port, mqtt_port = free_ports(2)
    stack = DevStack(Path(tempfile.mkdtemp(prefix="bench-rollups-")), pg_port, mqtt_port)
    try:
        url = stack.up().database_url
        with psycopg.connect(url) as conn:
            migrate.migrate(conn, report=lambda _: None)
        with_ms, without_ms, midnight_ms = collector_batches(
            url, args.collector_instruments, args.batches
        )
        rows = seed_year(url, args.instruments)
        began = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            _, built = rollups.rebuild(conn)
            rebuild_s = time.perf_counter() - began
            conn.execute("VACUUM ANALYZE daily_usage")
            row = conn.execute(
                "SELECT pg_total_relation_size('daily_usage') / count(*) FROM daily_usage"
            ).fetchone()
            row_bytes = int(row[0]) if row else 0
        results = asyncio.run(api_year(url))
    finally:
        stack.purge()
    (fast, fast_usage), (slow, slow_usage), (ref, ref_usage) = (
        results["rollups"],
        results["intervals"],
        results["reference"],
    )
    assert fast_usage == slow_usage, "rollups and intervals disagree"
    for a, b in zip(fast_usage, ref_usage, strict=True):
        assert abs(a.effective_h - b.effective_h) < 1e-6 and a.days_on == b.days_on
    p50 = statistics.median
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(
        f"collector: batches of {args.collector_instruments} heartbeats + ~10% events, "
        f"{args.batches} each way"
    )
    print(f"  store with rollups:    p50 {p50(with_ms):.1f} ms, max {max(with_ms):.1f} ms")
    print(f"  store without rollups: p50 {p50(without_ms):.1f} ms, max {max(without_ms):.1f} ms")
    print(f"  rollup share of the batch: {1 - p50(without_ms) / p50(with_ms):.0%}")
    print(f"  the batch past local midnight (every finished day recomputed): {midnight_ms:.0f} ms")
    print(
        f"API: {args.instruments} instruments x 2026, {rows:,} intervals; rebuild {built:,} "
        f"days in {rebuild_s:.1f} s"
    )
    print(f"  annual + daily figures from rollups:   p50 {p50(fast):.0f} ms")
    print(
        f"  the same days from intervals:          p50 {p50(slow):.0f} ms "
        f"({p50(slow) / p50(fast):.1f}x)"
    )
    print(
        f"  reference, one measure per year (old annual path): p50 {p50(ref):.0f} ms "
        f"({p50(ref) / p50(fast):.1f}x)"
    )
    print("figures identical both ways; equal to the whole-year measure")
    print(f"daily_usage on disk, index included: {row_bytes} bytes per instrument-day")


if __name__ == "__main__":
    main()
