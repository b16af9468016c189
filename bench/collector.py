"""Collector benchmarks, all in one run against a private broker and database.

``python -m bench.collector [--events 50000] [--history-years N] [--record]``

1. Throughput: the same backlog of signed events is queued in the persistent
   session of each consumer, which then drains it alone: the collector (one
   process), a bare paho subscriber, ``mosquitto_sub`` (C), and a naive
   ingester that INSERTs and commits per message. Draining a queued backlog
   measures each consumer's own ceiling; a live stream on two cores would
   mostly measure the load generator competing with it. The naive ingester
   drains only the first ``--naive-events`` (it is that slow); the whole
   comparison runs ``--repeat`` times and the medians are reported.
2. One collector, then two on one shared subscription, each draining a backlog
   of the same size and shape queued in their persistent sessions (the order
   alternates between rounds): the ratio two / one, each one's share, every
   event counted exactly once, and what their database sessions were doing.
3. Latency from first publish to the collector's Ack (sent after the commit)
   at a paced 1,000 events/s, against an echo that acks without a database.
4. Heartbeats, the bulk of a real fleet's messages: a backlog from a wide
   fleet (``--heartbeat-instruments``, 10,000 by default, so a batch holds
   about one per instrument) drained by the collector and by a bare paho
   subscriber; the rate says how many instruments one collector keeps up with.

``--history-years`` first fills the database with years of an older fleet's
events, for the costs that grow with history. Each prints its figures and the
ratio to the reference of the same run;
``--record`` appends them with the machine description to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from bench import load, machine, references, workload
from bench.process import CollectorProcess
from collector.settings import CollectorSettings
from instrumetry.devstack.stack import DevStack
from instrumetry.domain import topics

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
_BATCH_MAX = CollectorSettings.model_fields["batch_max"].default
_WORKLOAD_START = datetime.fromtimestamp(workload.START_MS / 1000, UTC)
_DEFAULT_INSTRUMENTS = 200
_HISTORY_INSTRUMENTS = 500
# One event per instrument every 12 hours: unsigned and unregistered, nothing
# reads them but the planner and the look-ups that probe every chunk.
_HISTORY = f"""
INSERT INTO events (instrument_id, boot_id, seq, device_time, received_at, from_state, to_state,
                    power_w, prev_hash, signature, verification)
SELECT 'history-' || i, '00000000-0000-4000-8000-000000000001', n, t, t, 'standby', 'running',
       100.0, decode(repeat('00', 32), 'hex'), '\\x00', 'ok'
  FROM generate_series(1, {_HISTORY_INSTRUMENTS}) AS i,
       LATERAL (SELECT row_number() OVER () AS n, t
                  FROM generate_series(%(since)s::timestamptz, %(until)s, '12 hours') AS t) AS s
"""
_CHUNKS = """
SELECT (SELECT count(*) FROM events),
       (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'events')
"""
_BATCH_NEW = {
    topics.Kind.EVENTS: re.compile(rb"batch of \d+: (\d+) events new"),
    topics.Kind.HEARTBEATS: re.compile(rb"batch of \d+: .*?; (\d+) heartbeats new"),
}
_DEFAULT_HEARTBEATS, _DEFAULT_HEARTBEAT_INSTRUMENTS = 100_000, 10_000
_STATES = """
SELECT CASE WHEN wait_event_type = 'Lock' THEN 'lock wait' ELSE state END, count(*)
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND datname = current_database()
   AND pid <> pg_backend_pid()
 GROUP BY 1
"""


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain of a backlog by a group of collectors."""

    rate: float
    """Events committed per second, first receive to all rows visible."""
    split: tuple[int, ...]
    """New events stored by each collector."""
    distinct: int
    extra: int
    states: dict[str, float]
    """Mean number of the collectors' database sessions in each state (pg_stat_activity)."""
    loads: tuple[float, float]
    """One-minute load average when the drain started and ended."""

    def __str__(self) -> str:
        states = ", ".join(f"{state} {n:.2f}" for state, n in sorted(self.states.items()))
        return (
            f"{self.rate:,.0f} events/s, split {' / '.join(f'{n:,}' for n in self.split)}, "
            f"{self.distinct:,} stored once, {self.extra} duplicated; sessions: {states}; "
            f"load {self.loads[0]:.1f} to {self.loads[1]:.1f}"
        )


_ROLES = ("collector", "receiver child", "signature child", "PostgreSQL", "Mosquitto")
_CpuSample = dict[int, tuple[str, float]]
"""By pid, a process's role and its CPU seconds so far."""


class CpuUse:
    """CPU seconds of the processes a drain runs on, by role, between two samples.

    The collector process (all its threads), its receiving child (paho), its
    signature children, PostgreSQL (every process of the private server: the
    collector's session, this benchmark's polling one, the background writers)
    and the broker: what one event costs each, and so how many events two
    cores could take.
    """

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack

    def sample(self, collector_pid: int) -> _CpuSample:
        """By pid, each process's role and CPU seconds so far."""
        status = self.stack.status()
        roles = {collector_pid: "collector"} | {
            child.pid: _child_role(child) for child in _descendants(collector_pid)
        }
        services = ((status.postgres.pid, "PostgreSQL"), (status.mosquitto.pid, "Mosquitto"))
        for root, role in services:
            if root is not None:
                roles |= {child.pid: role for child in _descendants(root)} | {root: role}
        sample: _CpuSample = {}
        for pid, role in roles.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                sample[pid] = (role, times.user + times.system)
        return sample

    @staticmethod
    def used(before: _CpuSample, after: _CpuSample) -> dict[str, float]:
        """CPU seconds per role from ``before`` to ``after``; a process new since counts from 0."""
        used = dict.fromkeys(_ROLES, 0.0)
        for pid, (role, seconds) in after.items():
            used[role] += seconds - before.get(pid, (role, 0.0))[1]
        return used


def _child_role(child: psutil.Process) -> str:
    """A collector's child: the one that receives (paho), or one that checks signatures."""
    with contextlib.suppress(psutil.Error):
        if "collector.receiver" in child.cmdline():
            return "receiver child"
    return "signature child"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


class _BatchLog:
    """What a ``--verbose`` collector's log says it stored, from a byte offset on."""

    def __init__(self, path: Path, offset: int = 0, kind: topics.Kind = topics.Kind.EVENTS) -> None:
        self.path = path
        self.offset = offset
        self.new = 0
        self._pattern = _BATCH_NEW[kind]

    def new_rows(self) -> int:
        """New events (or heartbeats) in the batch lines so far; each call reads on."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read()
        complete = text.rfind(b"\n") + 1  # a line being written is read at the next call
        self.offset += complete
        self.new += sum(int(match[1]) for match in self._pattern.finditer(text, 0, complete))
        return self.new


class Bench:
    """One private stack and the figures gathered on it."""

    def __init__(
        self,
        work: Path,
        stack: DevStack,
        mqtt_port: int,
        database_url: str,
        args: argparse.Namespace,
    ):
        self.work = work
        self.cpu = CpuUse(stack)
        self.host, self.port = "127.0.0.1", mqtt_port
        self.database_url = database_url
        self.args = args
        self.lines: list[str] = []
        self.conn: psycopg.Connection[TupleRow] = psycopg.connect(database_url, autocommit=True)
        self.history = False

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def collector(
        self, name: str, group: str, *, verbose: bool = False, batch_ms: int = 200
    ) -> CollectorProcess:
        return CollectorProcess(
            self.work / f"{name}.log",
            database_url=self.database_url,
            mqtt_url=f"mqtt://{self.host}:{self.port}",
            client_id=name,
            share_group=group,
            verbose=verbose,
            batch_ms=str(batch_ms),
            metrics_port="0",  # several collectors share this host: no /metrics listener
        )

    def fleet(self, prefix: str, count: int) -> list[workload.Instrument]:
        instruments = workload.fleet(prefix, count)
        workload.register(self.conn, instruments)
        return instruments

    def add_history(self, years: int) -> None:
        """Fill ``events`` with ``years`` of an older fleet's events, up to the workload's.

        What a platform running for that long holds, for what grows with it:
        the chunks every look-up by instrument and seq may probe.
        """
        started = time.monotonic()
        until = _WORKLOAD_START - timedelta(hours=12)
        self.conn.execute(_HISTORY, {"since": until - timedelta(days=365 * years), "until": until})
        self.conn.execute("ANALYZE events")
        row = self.conn.execute(_CHUNKS).fetchone()
        assert row is not None
        self.history = True
        self.say(
            f"- history: {row[0]:,} events of {_HISTORY_INSTRUMENTS} instruments over {years} "
            f"years before the workload's, in {row[1]} chunks (inserted in "
            f"{time.monotonic() - started:.0f} s); the runs below store theirs after it"
        )

    def empty_events(self) -> None:
        """Remove what a run stored; the history, if any, stays."""
        self.conn.execute("TRUNCATE intervals, dead_letters")
        if not self.history:
            self.conn.execute("TRUNCATE events")
            return
        self.conn.execute("DELETE FROM events WHERE device_time >= %s", (_WORKLOAD_START,))
        self.conn.execute("VACUUM events")  # the next run starts without dead rows

    def wait_for_rows(
        self, logs: list[_BatchLog], count: int, table: str = "events", timeout: float = 600
    ) -> tuple[float, float, dict[str, float]]:
        """Wait until the collectors of ``logs`` committed ``count`` new rows of ``table``.

        Returns the wall-clock times of the first receive and of when the
        last commit was seen, and what the other sessions of the database
        were doing: at each poll, the number of them in each state (``lock
        wait``: waiting for a lock), averaged over the polls. The collectors'
        ``--verbose`` logs tell what they committed, a line per batch:
        counting the rows at each poll instead cost PostgreSQL about 4 µs per
        event stored, a tenth of what storing it costs there.
        """
        deadline = time.monotonic() + timeout
        states: Counter[str] = Counter()
        polls = 0
        while (new := sum(log.new_rows() for log in logs)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {new} of {count} {table} stored")
            states.update(dict(self.conn.execute(_STATES).fetchall()))
            polls += 1
            time.sleep(0.1)
        done = time.time()
        row = self.conn.execute(
            sql.SQL("SELECT min(received_at) FROM {} WHERE device_time >= %s").format(
                sql.Identifier(table)
            ),
            (_WORKLOAD_START,),
        ).fetchone()
        assert row is not None
        return row[0].timestamp(), done, {s: n / max(polls, 1) for s, n in states.items()}

    def exactly_once(self, count: int) -> tuple[int, int]:
        """(distinct (instrument, seq) stored, rows beyond one per key); should be (count, 0)."""
        row = self.conn.execute(
            "SELECT count(DISTINCT (instrument_id, seq)), count(*) - count(DISTINCT "
            "(instrument_id, seq)) FROM events WHERE device_time >= %s",
            (_WORKLOAD_START,),
        ).fetchone()
        assert row is not None
        distinct, extra = row
        if distinct != count or extra:
            self.say(f"  LOSS OR DUPLICATES: {distinct} of {count} stored, {extra} extra rows")
        return distinct, extra

    # --- 1. throughput ------------------------------------------------------

    def throughput(self) -> None:
        n_instruments, repeat = self.args.instruments, self.args.repeat
        total = self.args.events // n_instruments * n_instruments
        naive_total = min(total, self.args.naive_events)
        self.say(
            f"### 1. Throughput: a backlog of {total:,} events drained by each consumer "
            f"(the naive ingester: its first {naive_total:,}), {repeat} rounds"
        )
        rounds = [self._throughput_round(n, naive_total) for n in range(1, repeat + 1)]

        def median(name: str) -> float:
            return statistics.median(r[name] for r in rounds)

        def ratios(name: str, reference: str) -> str:
            each = ", ".join(f"{r[name] / r[reference]:.2f}" for r in rounds)
            return f"{median(name) / median(reference):.2f} (rounds: {each})"

        self.say(
            f"- medians over {repeat} rounds, each ratio of medians with the per-round ratios:"
        )
        self.say(f"- collector (1 process): **{median('collector'):,.0f} events/s committed**")
        self.say(
            f"- bare paho subscriber: {median('bare'):,.0f} msg/s; "
            f"collector / bare paho = **{ratios('collector', 'bare')}** (target 0.7)"
        )
        self.say(
            f"- mosquitto_sub (C): {median('msub'):,.0f} msg/s; collector / mosquitto_sub = "
            f"{ratios('collector', 'msub')}; bare paho / mosquitto_sub = {ratios('bare', 'msub')}"
        )
        self.say(
            f"- naive INSERT+commit per message: {median('naive'):,.0f} events/s; "
            f"collector / naive = **{ratios('collector', 'naive')}** (target 4)"
        )
        cpu = {name: median(name) for name in rounds[0] if name.startswith("cpu ")}
        self.say(f"- while the collector drained, medians: {_cpu_line(cpu)}")

    def _throughput_round(self, n: int, naive_total: int) -> dict[str, float]:
        """Queue one backlog for all four consumers, then let each drain it alone; rates."""
        n_instruments, processes = self.args.instruments, self.args.publishers
        each = self.args.events // n_instruments
        total = each * n_instruments
        subscribers = {"bare": "bench-bare", "naive": "bench-naive"}
        for group, client_id in subscribers.items():
            references.register_session(self.host, self.port, client_id, group)
        self._mosquitto_sub(["-E"])  # registers its session and leaves
        one = self.collector("bench-one", "one", verbose=True)
        one.start()
        one.stop()
        instruments = self.fleet(f"tput{n}", n_instruments)
        published = load.run_load(self.host, self.port, instruments, each, processes)
        span = max(p.finished for p in published) - min(p.started for p in published)

        started = time.time()
        self._mosquitto_sub(["-C", str(total)])
        rates = {"load": total / span, "msub": total / (time.time() - started)}
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            first, last = pool.submit(
                references.bare_subscriber, self.host, self.port, "bench-bare", total
            ).result()
        rates["bare"] = total / (last - first)

        with one:  # killed if anything here fails, never left running
            log = _BatchLog(one.log_file, one.launch())
            one.wait_ready(log.offset)
            assert one.process is not None
            before = self.cpu.sample(one.process.pid)
            first, done, _ = self.wait_for_rows([log], total)
            used = self.cpu.used(before, self.cpu.sample(one.process.pid))
            one.stop()
        rates["collector"] = total / (done - first)
        rates |= {f"cpu {role}": seconds * 1e6 / total for role, seconds in used.items()}
        self.exactly_once(total)
        self.empty_events()

        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            first, last = pool.submit(
                references.naive_ingester,
                self.host,
                self.port,
                "bench-naive",
                naive_total,
                self.database_url,
            ).result()
        rates["naive"] = naive_total / (last - first)
        self.empty_events()
        for client_id in [*subscribers.values(), "bench-msub", "bench-one"]:
            references.forget_session(self.host, self.port, client_id)
        self.say(
            f"- round {n}: load {rates['load']:,.0f}/s published ({processes} processes, "
            f"every PUBACK received); collector {rates['collector']:,.0f}/s, bare paho "
            f"{rates['bare']:,.0f}/s, mosquitto_sub {rates['msub']:,.0f}/s, naive "
            f"{rates['naive']:,.0f}/s; {_cpu_line(rates)}"
        )
        return rates

    def _mosquitto_sub(self, options: list[str]) -> None:
        subprocess.run(
            [
                "mosquitto_sub",
                *("-h", self.host, "-p", str(self.port), "-V", "mqttv5", "-q", "1"),
                *("-c", "-x", "3600", "-i", "bench-msub"),
                *("-t", f"$share/msub/{topics.subscription(topics.Kind.EVENTS)}"),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=600,
        )

    # --- 2. one and two collectors ------------------------------------------

    def shared(self) -> None:
        n_instruments, repeat = self.args.instruments, self.args.repeat
        total = self.args.events // n_instruments * n_instruments
        self.say(
            f"### 2. One and two collectors on one shared subscription: the same backlog of "
            f"{total:,} events ({n_instruments} instruments, interleaved) drained, {repeat} rounds"
        )
        rounds: list[dict[int, Drain]] = []
        for n in range(1, repeat + 1):
            order = (1, 2) if n % 2 else (2, 1)  # alternate, so drift favours neither
            drains = {size: self._drain(f"r{n}x{size}", size) for size in order}
            rounds.append(drains)
            for size in order:
                self.say(f"- round {n}, {size} collector{'s' * (size > 1)}: {drains[size]}")
        one = statistics.median(r[1].rate for r in rounds)
        two = statistics.median(r[2].rate for r in rounds)
        each = ", ".join(f"{r[2].rate / r[1].rate:.2f}" for r in rounds)
        self.say(
            f"- medians: one collector **{one:,.0f} events/s**, two **{two:,.0f} events/s** "
            f"combined; two / one = **{two / one:.2f}** (rounds: {each})"
        )
        lost = sum(total - d.distinct for r in rounds for d in r.values())
        extra = sum(d.extra for r in rounds for d in r.values())
        self.say(f"- over all {2 * repeat} drains: {lost} events lost, {extra} duplicated")

    def _drain(self, name: str, size: int) -> Drain:
        """``size`` collectors of one share group drain a backlog queued in their sessions."""
        n_instruments, processes = self.args.instruments, self.args.publishers
        each = self.args.events // n_instruments
        total = each * n_instruments
        group = [self.collector(f"bench-{name}-{k}", name, verbose=True) for k in range(size)]
        with ExitStack() as running:  # killed if anything here fails, never left running
            for collector in group:
                running.enter_context(collector)
            self._start(group)  # registers each session in the group, to queue the backlog
            for collector in group:
                collector.stop()
            load.run_load(self.host, self.port, self.fleet(name, n_instruments), each, processes)
            loads = [os.getloadavg()[0]]
            offsets = self._start(group)
            logs = [_BatchLog(c.log_file, at) for c, at in zip(group, offsets, strict=True)]
            first, done, states = self.wait_for_rows(logs, total)
            loads.append(os.getloadavg()[0])
            for collector in group:
                collector.stop()
        distinct, extra = self.exactly_once(total)
        for collector in group:
            references.forget_session(self.host, self.port, collector.env["INSTRUMETRY_CLIENT_ID"])
        self.empty_events()
        return Drain(
            rate=total / (done - first),
            split=tuple(_BatchLog(collector.log_file).new_rows() for collector in group),
            distinct=distinct,
            extra=extra,
            states=states,
            loads=(loads[0], loads[1]),
        )

    @staticmethod
    def _start(group: list[CollectorProcess]) -> list[int]:
        """Start ``group`` together; the log offsets they started at."""
        offsets = [collector.launch() for collector in group]
        for collector, offset in zip(group, offsets, strict=True):
            collector.wait_ready(offset)
        return offsets

    # --- 3. latency ---------------------------------------------------------

    def heartbeats(self) -> None:
        """A wide fleet's heartbeats, the bulk of what a real fleet sends: drained like events."""
        n_instruments, repeat = self.args.heartbeat_instruments, self.args.repeat
        each = max(1, self.args.heartbeats // n_instruments)
        total = each * n_instruments
        self.say(
            f"### 4. Heartbeats: a backlog of {total:,} from {n_instruments:,} instruments "
            f"({each} each, a minute apart, interleaved) drained, {repeat} rounds"
        )
        rounds = [
            self._heartbeat_round(n, self.fleet(f"beat{n}", n_instruments), each)
            for n in range(1, repeat + 1)
        ]
        collector = statistics.median(r["collector"] for r in rounds)
        bare = statistics.median(r["bare"] for r in rounds)
        cpu = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        self.say(
            f"- medians: collector **{collector:,.0f} heartbeats/s stored**, bare paho "
            f"{bare:,.0f}/s, collector / bare paho = {collector / bare:.2f}; at a heartbeat a "
            f"minute, one collector keeps up with about {collector * 60:,.0f} instruments"
        )
        self.say(f"- while the collector drained, medians: {_cpu_line(cpu, 'heartbeat')}")

    def _heartbeat_round(
        self, n: int, instruments: list[workload.Instrument], each: int
    ) -> dict[str, float]:
        total = each * len(instruments)
        beats = topics.Kind.HEARTBEATS
        references.register_session(self.host, self.port, "bench-bare", "bare", beats)
        one = self.collector("bench-beats", "beats", verbose=True)
        one.start()
        one.stop()
        load.run_load(self.host, self.port, instruments, each, self.args.publishers, kind=beats)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            first, last = pool.submit(
                references.bare_subscriber, self.host, self.port, "bench-bare", total
            ).result()
        rates = {"bare": total / (last - first)}
        with one:
            log = _BatchLog(one.log_file, one.launch(), beats)
            one.wait_ready(log.offset)
            assert one.process is not None
            before = self.cpu.sample(one.process.pid)
            first, done, _ = self.wait_for_rows([log], total, "heartbeats")
            used = self.cpu.used(before, self.cpu.sample(one.process.pid))
            one.stop()
        rates["collector"] = total / (done - first)
        rates |= {f"cpu {role}": seconds * 1e6 / total for role, seconds in used.items()}
        row = self.conn.execute(
            "SELECT count(*), count(DISTINCT (instrument_id, device_time)) FROM heartbeats"
        ).fetchone()
        if row != (total, total):
            self.say(f"  LOSS OR DUPLICATES: {row} heartbeats stored of {total}")
        self.conn.execute("TRUNCATE heartbeats, power_hourly, power_current")
        for client_id in ("bench-bare", "bench-beats"):
            references.forget_session(self.host, self.port, client_id)
        self.say(
            f"- round {n}: collector {rates['collector']:,.0f}/s, bare paho "
            f"{rates['bare']:,.0f}/s; {_cpu_line(rates, 'heartbeat')}"
        )
        return rates

    def latency(self) -> None:
        rate, seconds = self.args.latency_rate, self.args.latency_seconds
        n_instruments = 100
        each = int(rate * seconds) // n_instruments
        total = each * n_instruments
        self.say(f"### 3. Latency, first publish to Ack, {total:,} events paced at {rate:,}/s")
        references.register_session(self.host, self.port, "bench-echo", "echo")
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            echoing = pool.submit(references.echo, self.host, self.port, "bench-echo", total)
            echoed = self.fleet("echo", n_instruments)
            e50, e99 = _percentiles(load.run_paced(self.host, self.port, echoed, each, rate))
            echoing.result()
        references.forget_session(self.host, self.port, "bench-echo")
        self.say(f"- echo without database: p50 {e50 * 1000:.1f} ms, p99 {e99 * 1000:.1f} ms")
        for batch_ms in self.args.latency_batch_ms:
            name = f"bench-lat-{batch_ms}"
            with self.collector(name, name, batch_ms=batch_ms) as collector:
                collector.start()
                paced = self.fleet(name, n_instruments)
                measured = load.run_paced(self.host, self.port, paced, each, rate)
                collector.stop()
            references.forget_session(self.host, self.port, name)
            self.exactly_once(total)
            self.empty_events()
            p50, p99 = _percentiles(measured)
            self.say(
                f"- collector, batch_ms {batch_ms} (batch_max {_BATCH_MAX}): "
                f"**p50 {p50 * 1000:.0f} ms, "
                f"p99 {p99 * 1000:.0f} ms**, max {max(measured) * 1000:.0f} ms; "
                f"p50 over the echo's: +{(p50 - e50) * 1000:.0f} ms"
            )


def _cpu_line(rates: dict[str, float], unit: str = "event") -> str:
    """The CPU microseconds per ``unit`` of each role, their sum and the rate two cores allow."""
    each = {role: rates[f"cpu {role}"] for role in _ROLES}
    total = sum(each.values())
    parts = ", ".join(f"{role} {us:.0f}" for role, us in each.items())
    ceiling = f"{2e6 / total:,.0f}" if total else "?"
    return (
        f"CPU per {unit} (us): {parts}; {total:.0f} in all, at most {ceiling} {unit}s/s on 2 cores"
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def _options(args: argparse.Namespace) -> str:
    """The options of this run that shape its figures, as typed."""
    events = args.only is None or set(args.only) - {"heartbeats"}
    shown = [f"--events {args.events}"] if events else []
    if args.instruments != _DEFAULT_INSTRUMENTS:
        shown.append(f"--instruments {args.instruments}")
    if args.history_years:
        shown.append(f"--history-years {args.history_years}")
    if args.heartbeats != _DEFAULT_HEARTBEATS:
        shown.append(f"--heartbeats {args.heartbeats}")
    if args.heartbeat_instruments != _DEFAULT_HEARTBEAT_INSTRUMENTS:
        shown.append(f"--heartbeat-instruments {args.heartbeat_instruments}")
    shown += [f"--only {name}" for name in args.only or ()]
    return " ".join(shown)


def _free_ports(count: int) -> list[int]:
    """Ports free right now, all held at once so they differ."""
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def record(lines: list[str], description: list[str], args: argparse.Namespace) -> None:
    """Append this run's section to docs/BENCHMARKS.md, creating it with a header if absent."""
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmarks\n\nFigures measured by the benchmarks in `bench/`; each section says "
            "how to re-run it and on what machine it ran.\n",
            encoding="utf-8",
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = [
        "",
        f"## Collector (`python -m bench.collector {_options(args)}`), {stamp}",
        "",
        *(f"- {fact}" for fact in description),
        *([f"- note: {args.note}"] if args.note else []),
        "",
        *(f"\n{line}" if line.startswith("#") else line for line in lines),
        "",
    ]
    with RESULTS.open("a", encoding="utf-8") as results:  # a blank line before each heading
        results.write(re.sub(r"\n{3,}", "\n\n", "\n".join(section)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.collector", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events per throughput run")
    parser.add_argument(
        "--instruments", type=int, default=_DEFAULT_INSTRUMENTS, help="instruments sending them"
    )
    parser.add_argument("--publishers", type=int, default=2, help="load processes")
    parser.add_argument("--repeat", type=int, default=3, help="throughput rounds (median)")
    parser.add_argument(
        "--naive-events", type=int, default=10_000, help="events the naive ingester drains"
    )
    parser.add_argument("--latency-rate", type=int, default=1000, help="events/s, paced")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-batch-ms",
        type=int,
        nargs="+",
        default=[200, 50],
        help="collector batch_ms values to measure latency with (200 is the default)",
    )
    parser.add_argument(
        "--history-years",
        type=int,
        default=0,
        help="first fill the database with this many years of an older fleet's events",
    )
    parser.add_argument(
        "--heartbeats", type=int, default=_DEFAULT_HEARTBEATS, help="heartbeats per heartbeat run"
    )
    parser.add_argument(
        "--heartbeat-instruments",
        type=int,
        default=_DEFAULT_HEARTBEAT_INSTRUMENTS,
        help="instruments sending them",
    )
    parser.add_argument(
        "--only", choices=["throughput", "shared", "latency", "heartbeats"], action="append"
    )
    parser.add_argument("--record", action="store_true", help=f"append results to {RESULTS}")
    parser.add_argument("--note", default="", help="a remark recorded with the results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="instrumetry-bench-") as work:
        stack = DevStack(Path(work) / "stack", *_free_ports(2))
        try:
            info = stack.up()
            bench = Bench(Path(work), stack, info.mqtt_port, info.database_url, args)
            migrated = bench.collector("bench-migrate", "migrate")
            migrated.start()  # the collector migrates the database on start
            migrated.stop()
            references.forget_session(bench.host, bench.port, "bench-migrate")
            description = machine.describe(info.database_url)
            for line in description:
                print(line)
            if args.history_years:
                bench.add_history(args.history_years)
            runs: dict[str, Callable[[], None]] = {
                "throughput": bench.throughput,
                "shared": bench.shared,
                "latency": bench.latency,
                "heartbeats": bench.heartbeats,
            }
            for name, run in runs.items():
                if args.only is None or name in args.only:
                    run()
            bench.conn.close()
        finally:
            stack.purge()
    if args.record:
        record(bench.lines, description, args)


if __name__ == "__main__":
    main()
