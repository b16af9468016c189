"""Benchmark: the annual startup-rate report of a whole platform, through the real API.

A year (2026) of a city platform's data is loaded into a private PostgreSQL +
TimescaleDB: the simulator's fleet (``sim.scenario.build_fleet`` with the
``city-year`` scenario's institutions, calendars and archetype mix) gives each
instrument its true timeline; each true transition becomes one row of
``events`` and the intervals the domain derives from those events become the
rows of ``intervals``, both by COPY. The events are **not signed** (zero hash
chain, zero signature): signatures are checked on arrival by the collector,
and neither the report nor the reference reads them.

Measured, in the same run:

- the API: ``GET /api/v1/reports/startup-rate?from=2026-01-01&to=2026-12-31``
  with an auditor's token, against ``instrumetry api run`` (uvicorn) in a
  child process; p50 and p95 of ``--repeat`` requests;
- the reference: computing the same numbers straight from the events, as an
  auditor without the collector's tables would: read every event, derive the
  intervals with ``instrumetry.domain.intervals.derive`` and compute with
  ``instrumetry.domain.metrics.measure``.

Both must give the same figures for every instrument; the benchmark checks
that before it prints the ratio (target: the API 50x faster or better).

More instruments than the scenario's 2,000 are made by repeating its
timelines under new ids (``--instruments 100000``), so a larger run costs only
the loading; ``--days`` shortens the period (from 2026-01-01), for a national
fleet whose year would not fit this machine's disk. ``--after-load CMD`` runs
a shell command against the loaded database before timing (with
``INSTRUMETRY_DATABASE_URL`` set), so the run can be repeated after derived
tables such as daily rollups exist, e.g. with the command that rebuilds them.
``--profile FILE`` runs the API under cProfile.

``--copy-rollups`` is the national mode, for fleets whose year of events would
not fit this machine (100,000 instruments: ~176 M events): only the scenario's
instruments get events and intervals, ``--after-load`` builds their rollups
with the collector's own rebuild, and each repeated instrument's daily rollups
are then copied in SQL from the instrument whose timeline it repeats (the
monthly ones follow by trigger). The reference then reads the scenario's
instruments only, so no ratio is printed; every instrument's figures are still
checked, a repeated one against the one it repeats.

    PYTHONPATH=. python -m bench.api_annual [--instruments N] [--days N] [--repeat N]
        [--reference-repeat N] [--after-load CMD] [--profile FILE] [--copy-rollups]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.auth import Role, create_token
from api.periods import resolve
from api.registry import upsert_institutions, upsert_instruments
from bench.agent_common import free_ports, private_stack
from collector.migrate import migrate
from instrumetry.domain.intervals import StateInterval, derive
from instrumetry.domain.metrics import Allowances, Usage, measure
from instrumetry.domain.registry import Institution, Instrument
from instrumetry.domain.states import State
from sim.scenario import build_fleet
from sim.scenario_file import find_scenario, load_scenario

FIRST = date(2026, 1, 1)
ALLOWANCES = Allowances()
COMPARED = ("scheduled_h", "on_scheduled_h", "running_scheduled_h", "effective_h", "unknown_h")
ZERO_HASH = "\\\\x" + "00" * 32
ZERO_SIGNATURE = "\\\\x" + "00" * 64


@dataclass(frozen=True, slots=True)
class Platform:
    """The registry and each instrument's derived intervals, as loaded."""

    institutions: list[Institution]
    instruments: list[Instrument]
    intervals: dict[str, list[StateInterval]]
    known_until: datetime
    last: date
    """The period is ``FIRST`` to ``last``, both local days included: 2026 by default."""
    repeats: dict[str, str]
    """Each instrument beyond the scenario's, and the one whose timeline it repeats."""

    @property
    def query(self) -> dict[str, str]:
        return {"from": FIRST.isoformat(), "to": self.last.isoformat()}


def build_platform(count: int, days: int) -> Platform:
    """``count`` instruments with ``days`` of simulated truth (the scenario's 2,000, repeated)."""
    scenario = load_scenario(find_scenario("city-year"))
    spec = replace(
        scenario.spec,
        instruments=min(count, scenario.spec.instruments),
        first_day=FIRST,
        days=days,
        faults=(),
    )
    fleet = build_fleet(spec)
    base = fleet.instruments
    instruments: list[Instrument] = []
    intervals: dict[str, list[StateInterval]] = {}
    repeats: dict[str, str] = {}
    for k in range(count):
        virtual = base[k % len(base)]
        copy = k // len(base)
        instrument = virtual.instrument
        if copy:
            instrument = replace(instrument, id=f"{instrument.id}-x{copy}")
        instruments.append(instrument)
        if copy:
            intervals[instrument.id] = intervals[virtual.instrument.id]
            repeats[instrument.id] = virtual.instrument.id
        else:
            changes = [(_dt(s.start_ms), s.state) for s in virtual.truth]
            intervals[instrument.id] = derive(changes)
    last = FIRST + timedelta(days=days - 1)
    return Platform(fleet.institutions, instruments, intervals, fleet.period[1], last, repeats)


def load(conn: psycopg.Connection[Any], world: Platform, *, repeats_too: bool) -> int:
    """Registry by upsert, then events and intervals by COPY; return the number of events.

    Without ``repeats_too``, only the scenario's own instruments get events and
    intervals (see ``copy_rollups``).
    """
    upsert_institutions(conn, world.institutions)
    upsert_instruments(conn, world.instruments)
    timed = [i for i in world.instruments if repeats_too or i.id not in world.repeats]
    events = 0
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            """COPY events (instrument_id, boot_id, seq, device_time, received_at,
                            from_state, to_state, power_w, prev_hash, signature) FROM STDIN"""
        ) as copy:
            for chunk in _event_lines(world, timed):
                copy.write(chunk)
                events += chunk.count("\n")
        with cur.copy(
            "COPY intervals (instrument_id, state, start_time, end_time) FROM STDIN"
        ) as copy:
            for chunk in _interval_lines(world, timed):
                copy.write(chunk)
        cur.execute("UPDATE instruments SET last_seen = %s", (world.known_until,))
    conn.execute("VACUUM ANALYZE")
    return events


def _event_lines(world: Platform, instruments: list[Instrument]) -> Iterator[str]:
    """COPY text of the instruments' events: the first from ``unknown``, then each change."""
    for instrument in instruments:
        boot = uuid.uuid5(uuid.NAMESPACE_OID, instrument.id)
        previous = State.UNKNOWN
        out = io.StringIO()
        for seq, interval in enumerate(world.intervals[instrument.id], start=1):
            at = interval.start.isoformat()
            out.write(
                f"{instrument.id}\t{boot}\t{seq}\t{at}\t{at}\t{previous.value}\t"
                f"{interval.state.value}\t\\N\t{ZERO_HASH}\t{ZERO_SIGNATURE}\n"
            )
            previous = interval.state
        yield out.getvalue()


def _interval_lines(world: Platform, instruments: list[Instrument]) -> Iterator[str]:
    for instrument in instruments:
        out = io.StringIO()
        for interval in world.intervals[instrument.id]:
            end = interval.end.isoformat() if interval.end is not None else "\\N"
            out.write(f"{instrument.id}\t{interval.state.value}\t{interval.start.isoformat()}\t")
            out.write(f"{end}\n")
        yield out.getvalue()


_DAY_COLUMNS = (
    "day, on_h, on_scheduled_h, running_h, running_scheduled_h, effective_h, unknown_h, "
    "scheduled_h, working_day, day_on, known_until, basis"
)


def copy_rollups(conn: psycopg.Connection[Any], world: Platform, chunk: int = 2000) -> int:
    """Each repeated instrument's daily rollups, copied from the instrument it repeats.

    The national mode: 100,000 instrument-years of events would be ~176 M rows
    (~80 GB with intervals), more than this machine holds, so only the
    scenario's instruments get events and intervals, and their rollups are
    built from them by ``--after-load`` (the collector's own rebuild); a
    repeated instrument has the same timeline, so its rollups are the same
    rows under its id. The monthly rollups follow by trigger, as they do
    whatever writes the days. Returns the rows written.
    """
    pairs = sorted(world.repeats.items())
    written = 0
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        cur = conn.execute(
            f"""INSERT INTO daily_usage (instrument_id, {_DAY_COLUMNS})
                SELECT c.id, {", ".join(f"d.{c.strip()}" for c in _DAY_COLUMNS.split(","))}
                  FROM unnest(%s::text[], %s::text[]) AS c(id, base)
                  JOIN daily_usage d ON d.instrument_id = c.base""",
            ([p[0] for p in part], [p[1] for p in part]),
        )
        written += cur.rowcount
    if written == 0 and pairs:
        raise SystemExit("no rollups to copy: --after-load must build them (db rollups --rebuild)")
    conn.execute("VACUUM ANALYZE daily_usage")
    conn.execute("VACUUM ANALYZE monthly_usage")
    return written


@dataclass(frozen=True, slots=True)
class ReferenceRun:
    seconds: float
    read_s: float
    derive_s: float
    measure_s: float
    usage: dict[str, Usage]


def reference(conn: psycopg.Connection[Any], world: Platform) -> ReferenceRun:
    """The same numbers straight from the events: read, derive, measure (each timed)."""
    calendars = {i.id: i.calendar for i in world.institutions}
    owners = {i.id: calendars[i.institution_id] for i in world.instruments}
    started = time.perf_counter()
    read_s = derive_s = measure_s = 0.0
    usage: dict[str, Usage] = {}
    with conn.transaction(), conn.cursor(name="events") as cur:
        cur.itersize = 20_000
        cur.execute(
            """SELECT instrument_id, device_time, to_state FROM events
               ORDER BY instrument_id, device_time, seq"""
        )
        mark = time.perf_counter()
        for instrument_id, changes in _by_instrument(cur):
            got = time.perf_counter()
            intervals = derive(changes)
            derived = time.perf_counter()
            calendar = owners[instrument_id]
            usage[instrument_id] = measure(
                intervals,
                resolve(FIRST, world.last, calendar),
                world.known_until,
                calendar,
                allowances=ALLOWANCES,
            )
            done = time.perf_counter()
            read_s += got - mark
            derive_s += derived - got
            measure_s += done - derived
            mark = done
    return ReferenceRun(time.perf_counter() - started, read_s, derive_s, measure_s, usage)


def _by_instrument(
    rows: Iterator[tuple[str, datetime, str]],
) -> Iterator[tuple[str, list[tuple[datetime, State]]]]:
    """Consecutive rows of one instrument as its ``(time, new state)`` changes."""
    current: str | None = None
    changes: list[tuple[datetime, State]] = []
    for instrument_id, at, state in rows:
        if instrument_id != current:
            if current is not None:
                yield current, changes
            current, changes = instrument_id, []
        changes.append((at, State(state)))
    if current is not None:
        yield current, changes


def check_same(
    api_rows: list[dict[str, Any]], expected: dict[str, Usage], repeats: dict[str, str]
) -> None:
    """Every instrument's figures from the API equal the reference's, to rounding.

    A repeated instrument without events of its own is checked against the
    instrument it repeats.
    """
    assert len(api_rows) == len(expected.keys() | repeats.keys()), (len(api_rows), len(expected))
    for row in api_rows:
        key = row["instrument_id"]
        usage = expected[key] if key in expected else expected[repeats[key]]
        for name in COMPARED:
            assert math.isclose(row[name], getattr(usage, name), abs_tol=1e-6), (row, name)
        assert row["days_on"] == usage.days_on, row


def percentile(samples: list[float], share: float) -> float:
    """Nearest-rank percentile: with few samples p95 is the slowest, and says so honestly."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def machine(conn: psycopg.Connection[Any]) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    row = conn.execute(
        """SELECT current_setting('server_version'),
                  (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"""
    ).fetchone()
    assert row is not None
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}, PostgreSQL {row[0]}, TimescaleDB {row[1]}"
    )


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def start_api(
    database_url: str, port: int, log: Path, profile: str | None
) -> subprocess.Popen[bytes]:
    profiled = ["-m", "cProfile", "-o", profile] if profile else []
    command = [sys.executable, *profiled, "-m", "instrumetry", "api", "run", "--port", str(port)]
    env = {**os.environ, "INSTRUMETRY_DATABASE_URL": database_url}
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


def wait_ready(client: httpx.Client, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise SystemExit(f"the API exited with {api.returncode}; see its log")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("the API did not get ready in 60 s")


@dataclass(frozen=True, slots=True)
class ApiRun:
    seconds: list[float]
    body: dict[str, Any]
    loads: list[str]
    """The load average before each request: the machine is shared, so the noise is recorded."""


def time_api(
    *,
    database_url: str,
    token: str,
    query: dict[str, str],
    log: Path,
    repeat: int,
    profile: str | None,
) -> ApiRun:
    """``repeat`` timed report requests to ``instrumetry api run`` in a child process."""
    (port,) = free_ports(1)
    api = start_api(database_url, port, log, profile)
    seconds: list[float] = []
    loads = []
    body: dict[str, Any] = {}
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=3600,
        ) as client:
            wait_ready(client, api)
            for _ in range(repeat):
                loads.append(load_average())
                began = time.perf_counter()
                response = client.get("/api/v1/reports/startup-rate", params=query)
                seconds.append(time.perf_counter() - began)
                response.raise_for_status()
                body = response.json()
                print(f"  API request: {seconds[-1]:.2f} s", flush=True)
    finally:
        api.send_signal(signal.SIGINT)  # uvicorn exits cleanly, and cProfile writes its file
        api.wait(timeout=120)
    return ApiRun(seconds, body, loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365, help="from 2026-01-01")
    parser.add_argument("--repeat", type=int, default=5, help="API requests timed")
    parser.add_argument("--reference-repeat", type=int, default=2, help="reference runs timed")
    parser.add_argument("--after-load", help="shell command to run on the loaded database")
    parser.add_argument("--profile", help="run the API under cProfile, writing to this file")
    parser.add_argument(
        "--copy-rollups",
        action="store_true",
        help="national scale: only the scenario's instruments get events; the others' "
        "rollups are copied from the instrument they repeat, after --after-load built them",
    )
    args = parser.parse_args()

    began = time.perf_counter()
    world = build_platform(args.instruments, args.days)
    print(f"fleet built in {time.perf_counter() - began:.1f} s", flush=True)
    with (
        private_stack() as (work, info),
        psycopg.connect(info.database_url, autocommit=True) as conn,
    ):
        migrate(conn, report=lambda _: None)
        began = time.perf_counter()
        events = load(conn, world, repeats_too=not args.copy_rollups)
        load_s = time.perf_counter() - began
        print(f"loaded {events:,} events and intervals in {load_s:.1f} s", flush=True)
        if args.after_load:
            began = time.perf_counter()
            env = {**os.environ, "INSTRUMETRY_DATABASE_URL": info.database_url}
            subprocess.run(args.after_load, shell=True, env=env, check=True)  # noqa: S602
            print(f"--after-load took {time.perf_counter() - began:.1f} s", flush=True)
        if args.copy_rollups:
            began = time.perf_counter()
            copied = copy_rollups(conn, world)
            print(
                f"copied {copied:,} daily rollups to {len(world.repeats):,} repeated "
                f"instruments in {time.perf_counter() - began:.1f} s",
                flush=True,
            )
        _, token = create_token(conn, "bench", Role.AUDITOR, None)
        sizes = conn.execute(
            """SELECT pg_size_pretty(hypertable_size('events')),
                      pg_size_pretty(pg_total_relation_size('intervals')),
                      (SELECT count(*) FROM daily_usage),
                      pg_size_pretty(pg_total_relation_size('daily_usage')),
                      (SELECT count(*) FROM monthly_usage),
                      pg_size_pretty(pg_total_relation_size('monthly_usage'))"""
        ).fetchone()
        assert sizes is not None
        description = machine(conn)
        run = time_api(
            database_url=info.database_url,
            token=token,
            query=world.query,
            log=work / "api.log",
            repeat=args.repeat,
            profile=args.profile,
        )
        references = []
        for _ in range(args.reference_repeat):
            run.loads.append(load_average())
            references.append(reference(conn, world))
            print(f"  reference: {references[-1].seconds:.2f} s", flush=True)
    check_same(run.body["instruments"], references[-1].usage, world.repeats)

    ref_s = statistics.median(r.seconds for r in references)
    ref = sorted(references, key=lambda r: r.seconds)[(len(references) - 1) // 2]
    p50, p95 = statistics.median(run.seconds), percentile(run.seconds, 0.95)
    print(f"machine: {description}")
    print(f"load averages seen during the timed runs: {', '.join(run.loads)}")
    print(
        f"{args.instruments:,} instruments, {events:,} events and as many intervals, "
        f"{FIRST} to {world.last} "
        f"(events {sizes[0]}, intervals {sizes[1]}); loaded in {load_s:.1f} s"
    )
    print(
        f"rollups: {sizes[2]:,} days ({sizes[3]}), {sizes[4]:,} months ({sizes[5]})"
        + (
            f"; events and intervals only for the {len(world.instruments) - len(world.repeats):,}"
            " instruments of the scenario, the others' rollups copied (--copy-rollups)"
            if args.copy_rollups
            else ""
        )
    )
    print(f"API startup-rate report, {args.repeat} requests: p50 {p50:.2f} s, p95 {p95:.2f} s")
    print(
        f"reference from the events, median of {len(references)}: {ref_s:.2f} s "
        f"(read {ref.read_s:.2f} s, derive {ref.derive_s:.2f} s, measure {ref.measure_s:.2f} s)"
    )
    if args.copy_rollups:
        print(
            f"no ratio: the reference read only the {len(ref.usage):,} instruments with events; "
            "figures identical for every instrument (a repeated one: to the one it repeats)"
        )
    else:
        print(
            f"ratio reference / API p50: {ref_s / p50:.1f}x (target 50x); "
            "figures identical for every instrument"
        )


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


if __name__ == "__main__":
    main()
