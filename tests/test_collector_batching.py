"""A batch stores exactly what its messages stored one by one would: rows, verdicts, derived data.

The collector's batch path is set-based (one statement per step for every
instrument of a batch), so it must not depend on how messages happen to be
grouped. One scripted stream for a small fleet over three local days holds
what a real fleet sends at its worst: chained, signed events interleaved
across instruments, heartbeats, an agent's Last Will and a new boot, events
signed by a rogue key, an instrument with no enrolled key, a day of events
held back in an outbox and replayed two days late, broker redeliveries of
whole stretches, duplicates, swapped neighbours, a conflicting copy and an
unregistered instrument. It is stored into two databases, in batches of 97
messages and one message at a time, and every table the collector writes
must end up the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg.rows import TupleRow

from collector.ingest import Parsed, parse_message
from collector.store import store
from collector.verify import EnrolledKeys
from instrumetry.domain import topics, wire
from instrumetry.domain.states import State

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

ZONE = ZoneInfo("Asia/Shanghai")  # the institutions table's default time zone
DAYS = [date(2026, 3, 2) + timedelta(days=n) for n in range(3)]
FLEET = [f"bx-{n}" for n in range(8)]
UNENROLLED = "bx-7"
"""Registered, but no agent key is enrolled: every event is ``unknown_key``."""
ROGUE = "bx-2"
"""Every seventh event is signed by another key: ``bad_signature``, left out of usage."""
REBOOTED = "bx-4"
"""Goes offline (Last Will) in the evening of the first day, comes back with a new boot."""
HELD_BACK = ("bx-1", DAYS[1])
"""This instrument's events of this day wait in its outbox until the end of the stream."""
BOOTS = ("1" * 32, "2" * 32)

Message = tuple[str, bytes, datetime]
"""(topic, payload, receive time): what the broker hands the collector."""


class Agent:
    """Signs and chains one instrument's events as the real agent does."""

    def __init__(self, instrument: str, rng: random.Random) -> None:
        self.instrument = instrument
        self.key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.rogue = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        self.boot = BOOTS[0]
        self.seq = 0
        self.prev = wire.GENESIS

    def public(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def event(self, when: datetime, to: State, power_w: float) -> Message:
        self.seq += 1
        message = wire.Event(
            v=1,
            instrument=self.instrument,
            boot=self.boot,
            seq=self.seq,
            t=_ms(when),
            from_state=State.UNKNOWN,
            to_state=to,
            power_w=power_w,
            prev=self.prev,
        )
        rogue = self.instrument == ROGUE and self.seq % 7 == 0
        message = wire.sign(message, (self.rogue if rogue else self.key).sign)
        self.prev = wire.event_hash(message)
        return self._message(topics.Kind.EVENTS, wire.encode(message), when)

    def heartbeat(self, when: datetime) -> Message:
        message = wire.Heartbeat(
            v=1,
            instrument=self.instrument,
            boot=self.boot,
            t=_ms(when),
            state=State.STANDBY,
            last_seq=self.seq,
            samples=60,
            power_min_w=when.minute * 0.75,
            power_mean_w=when.minute * 1.25 + 0.1,
            power_max_w=when.minute * 2.5,
        )
        return self._message(topics.Kind.HEARTBEATS, wire.encode(message), when)

    def status(self, when: datetime, value: str) -> Message:
        message = wire.Status(
            v=1,
            instrument=self.instrument,
            boot=self.boot,
            status="online" if value == "online" else "offline",
            t=_ms(when),
        )
        return self._message(topics.Kind.STATUS, wire.encode(message), when)

    def _message(self, kind: topics.Kind, payload: bytes, when: datetime) -> Message:
        return (topics.topic(kind, self.instrument), payload, when + timedelta(seconds=2))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _local(day: date, minutes: int) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZONE).astimezone(UTC) + timedelta(minutes=minutes)


def stream(rng: random.Random) -> tuple[list[Message], dict[str, bytes]]:
    """The scripted stream in arrival order, and the enrolled key of each instrument."""
    agents = {instrument: Agent(instrument, rng) for instrument in FLEET}
    timed: list[tuple[datetime, Message]] = []
    held: list[Message] = []
    for instrument, agent in agents.items():
        for day in DAYS:
            if instrument == REBOOTED and day == DAYS[1]:
                agent.boot = BOOTS[1]  # the new boot after the Will of the evening before
            moment = _local(day, rng.randrange(0, 90))
            until = _local(day, 24 * 60)
            if instrument == REBOOTED and day == DAYS[0]:
                until = _local(day, 19 * 60 + 30)  # its Will; nothing more from that boot
            while moment < until:
                to = rng.choice([State.OFF, State.STANDBY, State.RUNNING])
                message = agent.event(moment, to, round(rng.uniform(0, 3000), 3))
                if (instrument, day) == HELD_BACK:
                    held.append(message)
                else:
                    timed.append((moment, message))
                moment += timedelta(minutes=rng.randrange(20, 150))
            for hour in range(2, 24, 3):
                beat = _local(day, hour * 60 + rng.randrange(60))
                if beat < until:
                    timed.append((beat, agent.heartbeat(beat)))
            if until < _local(day, 24 * 60):
                timed.append((until, agent.status(until, "offline")))
    timed.sort(key=lambda found: found[0])
    arrivals = [message for _, message in timed]
    for n in range(1, len(arrivals) - 1, 11):  # neighbours swapped by the network
        arrivals[n], arrivals[n + 1] = arrivals[n + 1], arrivals[n]
    for n in sorted(rng.sample(range(len(arrivals)), 25), reverse=True):  # duplicates
        arrivals.insert(min(len(arrivals), n + rng.randrange(1, 40)), arrivals[n])
    middle = len(arrivals) // 2
    arrivals += arrivals[middle : middle + 60]  # a stretch redelivered after a collector crash
    arrivals += held  # the outbox replay, two days late
    topic, payload, received = next(m for m in arrivals if m[0].endswith("bx-3"))
    altered = payload.replace(b'"power_w":', b'"power_w":1', 1)  # same key, other content
    arrivals.append((topic, altered, received))
    ghost = Agent("bx-ghost", rng).event(_local(DAYS[0], 600), State.RUNNING, 1.0)
    arrivals.insert(100, ghost)  # not registered: a dead letter
    enrolled = {i: a.public() for i, a in agents.items() if i != UNENROLLED}
    return arrivals, enrolled


def register(conn: psycopg.Connection[TupleRow], enrolled: dict[str, bytes]) -> None:
    conn.execute("INSERT INTO institutions (id, name) VALUES ('lab', 'Lab')")
    for instrument in FLEET:
        conn.execute(
            "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', %s)",
            (instrument, instrument),
        )
    for instrument, public in enrolled.items():
        conn.execute(
            "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
            (f"agent-{instrument}", instrument, public),
        )


TABLES = {
    "events": """SELECT instrument_id, boot_id, seq, device_time, received_at, from_state,
                        to_state, power_w, prev_hash, signature, verification
                   FROM events ORDER BY instrument_id, seq, boot_id, device_time""",
    "intervals": """SELECT instrument_id, state, start_time, end_time
                      FROM intervals ORDER BY instrument_id, start_time""",
    # known_until is when a day was computed: figures, not the moment, must agree.
    "daily_usage": """SELECT instrument_id, day, on_h, on_scheduled_h, running_h,
                             running_scheduled_h, effective_h, unknown_h, scheduled_h,
                             working_day, day_on, basis
                        FROM daily_usage ORDER BY instrument_id, day""",
    "dead_letters": """SELECT reason, topic, payload, detail, received_at
                         FROM dead_letters ORDER BY reason, topic, payload, detail""",
    "heartbeats": "SELECT * FROM heartbeats ORDER BY instrument_id, device_time",
    # Sums in another order may differ in the last bits: compared to a millionth of a watt.
    "power_hours": """SELECT instrument_id, hour, heartbeats, samples,
                             round(power_sum_w::numeric, 6), power_min_w, power_max_w
                        FROM power_hours ORDER BY instrument_id, hour""",
    "offline_periods": """SELECT instrument_id, start_time, end_time, reason, boot_id,
                                 resumed_boot_id
                            FROM offline_periods ORDER BY instrument_id, start_time""",
    "instruments": """SELECT id, last_seen, last_heard_at, last_boot_id, clock_skew_ms
                        FROM instruments ORDER BY id""",
    "agent_status": """SELECT instrument_id, status, boot_id, changed_at, received_at
                         FROM agent_status ORDER BY instrument_id""",
}


def contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(query).fetchall() for table, query in TABLES.items()}


@pytest.fixture(scope="module", params=[97, 100_000], ids=["batches_of_97", "one_batch"])
def stored(
    make_database: MakeDatabase, request: pytest.FixtureRequest
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The tables after storing the stream in batches, and after storing it message by message.

    In one batch, every copy of an event (duplicates, the conflicting one) is
    in the same batch as the events that follow it.
    """
    size: int = request.param
    arrivals, enrolled = stream(random.Random(4))
    parsed: list[Parsed] = [parse_message(*message) for message in arrivals]
    with make_database("test_batches") as batched, make_database("test_singly") as singly:
        with psycopg.connect(batched, autocommit=True) as conn:
            register(conn, enrolled)
            keys = EnrolledKeys()  # one per collector, kept across its batches
            for start in range(0, len(parsed), size):
                store(conn, parsed[start : start + size], keys)
        with psycopg.connect(singly, autocommit=True) as conn:
            register(conn, enrolled)
            for item in parsed:
                store(conn, [item])
        yield contents(batched), contents(singly)


def test_batches_store_what_single_messages_store(
    stored: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    batched, singly = stored
    for table in TABLES:
        assert batched[table] == singly[table], table


def test_the_stream_exercises_every_case(stored: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Guards the script: each case the comparison is meant to cover is really in it."""
    batched, _ = stored
    verdicts = {(row[0], row[-1]) for row in batched["events"]}
    assert (ROGUE, "bad_signature") in verdicts
    assert (UNENROLLED, "unknown_key") in verdicts
    assert {verdict for _, verdict in verdicts} == {"ok", "bad_signature", "unknown_key"}
    assert {row[0] for row in batched["dead_letters"]} == {"conflict", "unknown_instrument"}
    assert [row[0] for row in batched["offline_periods"]] == [REBOOTED]
    assert sum(row[2] for row in batched["power_hours"]) == len(batched["heartbeats"]) > 0
    assert any(row[0] == REBOOTED and row[1] == "unknown" for row in batched["intervals"])
    days = {(row[0], row[1]) for row in batched["daily_usage"]}
    assert (HELD_BACK[0], HELD_BACK[1]) in days
    assert set(DAYS[:-1]) <= {day for _, day in days}
    assert DAYS[-1] not in {day for _, day in days}  # the open day: readers measure it
