"""Batch storage against a real PostgreSQL + TimescaleDB: idempotent, ordered, lossless."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import TupleRow

from collector.ingest import DeadLetter, Parsed, Reason, parse_message
from collector.rollups import rebuild as rebuild_rollups
from collector.store import store, store_batch
from instrumetry.domain import topics, wire
from instrumetry.domain.intervals import StateInterval, derive
from instrumetry.domain.states import State
from tests.conftest import run_cli

BOOT = "0123456789abcdef0123456789abcdef"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
RECEIVED = datetime(2025, 3, 4, tzinfo=UTC)


KEYS: dict[str, Ed25519PrivateKey] = {}
"""The signing key of each instrument ``register`` enrolled."""


def register(conn: psycopg.Connection[TupleRow]) -> str:
    """A new instrument of a test institution, with an enrolled agent; each test gets its own."""
    instrument_id = f"nmr-{uuid.uuid4().hex[:10]}"
    conn.execute(
        "INSERT INTO institutions (id, name) VALUES ('lab', 'Test lab') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', 'NMR')",
        (instrument_id,),
    )
    key = KEYS[instrument_id] = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    conn.execute(
        "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
        (f"agent-{instrument_id}", instrument_id, public),
    )
    return instrument_id


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(instrument_id: str, seq: int, when: datetime, to: State, power_w: float = 50.0) -> Parsed:
    message = wire.Event(
        v=1,
        instrument=instrument_id,
        boot=BOOT,
        seq=seq,
        t=int(when.timestamp() * 1000),
        from_state=State.UNKNOWN,
        to_state=to,
        power_w=power_w,
        prev="ab" * 32,
    )
    if instrument_id in KEYS:
        message = wire.sign(message, KEYS[instrument_id].sign)
    topic = topics.topic(topics.Kind.EVENTS, instrument_id)
    return parse_message(topic, wire.encode(message), RECEIVED)


def beat(
    instrument_id: str,
    when: datetime,
    samples: int = 60,
    powers: tuple[float, float, float] | None = (4.0, 5.0, 6.0),
) -> wire.Heartbeat:
    low, mean, high = powers if powers is not None else (None, None, None)
    return wire.Heartbeat(
        v=1,
        instrument=instrument_id,
        boot=BOOT,
        t=int(when.timestamp() * 1000),
        state=State.STANDBY,
        last_seq=1,
        samples=samples,
        power_min_w=low,
        power_mean_w=mean,
        power_max_w=high,
    )


def heartbeat(instrument_id: str, when: datetime, samples: int = 60) -> Parsed:
    topic = topics.topic(topics.Kind.HEARTBEATS, instrument_id)
    return parse_message(topic, wire.encode(beat(instrument_id, when, samples)), RECEIVED)


def status(instrument_id: str, when: datetime, value: str) -> Parsed:
    payload = (
        f'{{"v":1,"instrument":"{instrument_id}","boot":"{BOOT}","status":"{value}",'
        f'"t":{int(when.timestamp() * 1000)}}}'
    ).encode()
    return parse_message(topics.topic(topics.Kind.STATUS, instrument_id), payload, RECEIVED)


def intervals(conn: psycopg.Connection[TupleRow], instrument_id: str) -> list[StateInterval]:
    rows = conn.execute(
        "SELECT state, start_time, end_time FROM intervals WHERE instrument_id = %s "
        "ORDER BY start_time",
        (instrument_id,),
    ).fetchall()
    return [StateInterval(State(state), start, end) for state, start, end in rows]


def count(conn: psycopg.Connection[TupleRow], table: str, instrument_id: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE instrument_id = %s").format(
        sql.Identifier(table)
    )
    row = conn.execute(query, (instrument_id,)).fetchone()
    assert row is not None
    return int(row[0])


def dead_letters(conn: psycopg.Connection[TupleRow], marker: str) -> list[tuple[str, str, bytes]]:
    """Reason, topic and payload of the dead letters whose topic or payload holds ``marker``."""
    rows = conn.execute(
        "SELECT reason, topic, payload FROM dead_letters "
        "WHERE position(%s in payload) > 0 OR position(%s in topic) > 0 ORDER BY id",
        (marker.encode(), marker),
    ).fetchall()
    return [(reason, topic, bytes(payload)) for reason, topic, payload in rows]


def test_a_batch_stores_every_kind_of_message(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    batch = [
        event(nmr, 1, at(0), State.STANDBY),
        event(nmr, 2, at(10), State.RUNNING),
        heartbeat(nmr, at(12)),
        status(nmr, at(1), "online"),
    ]
    result = store_batch(conn, batch)

    assert result.committed == {nmr: [1, 2]}
    assert (result.events_inserted, result.heartbeats_inserted, result.statuses) == (2, 1, 1)
    assert result.dead_letters == ()
    row = conn.execute(
        "SELECT boot_id, seq, device_time, received_at, to_state, power_w, prev_hash, "
        "length(signature), verification FROM events WHERE instrument_id = %s ORDER BY seq LIMIT 1",
        (nmr,),
    ).fetchone()
    assert row == (
        uuid.UUID(BOOT),
        1,
        at(0),
        RECEIVED,
        "standby",
        50.0,
        bytes.fromhex("ab" * 32),
        64,
        "chain_break",  # seq 1 must carry the genesis hash
    )
    assert count(conn, "heartbeats", nmr) == 1
    agent = conn.execute(
        "SELECT status, boot_id, changed_at FROM agent_status WHERE instrument_id = %s", (nmr,)
    ).fetchone()
    assert agent == ("online", uuid.UUID(BOOT), at(1))
    last_seen = conn.execute("SELECT last_seen FROM instruments WHERE id = %s", (nmr,)).fetchone()
    assert last_seen == (at(12),)
    assert intervals(conn, nmr) == [
        StateInterval(State.STANDBY, at(0), at(10)),
        StateInterval(State.RUNNING, at(10), None),
    ]


def test_redelivery_changes_nothing_and_is_acked_again(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    batch = [event(nmr, 1, at(0), State.STANDBY), heartbeat(nmr, at(1))]
    store_batch(conn, batch)
    before = intervals(conn, nmr)

    again = store_batch(conn, [*batch, *batch])

    assert again.committed == {nmr: [1]}
    assert (again.events_inserted, again.events_duplicate) == (0, 2)
    assert (again.heartbeats_inserted, again.heartbeats_duplicate) == (0, 2)
    assert again.dead_letters == ()
    assert count(conn, "events", nmr) == 1
    assert count(conn, "heartbeats", nmr) == 1
    assert intervals(conn, nmr) == before


def test_a_batch_partly_stored_before_stores_the_rest(conn: psycopg.Connection[TupleRow]) -> None:
    # Its first COPY meets a stored key and is undone; the rest must still land, once.
    nmr = register(conn)
    first = event(nmr, 1, at(0), State.STANDBY)
    store_batch(conn, [first])

    result = store_batch(
        conn, [event(nmr, 2, at(2), State.RUNNING), first, event(nmr, 3, at(3), State.STANDBY)]
    )

    assert result.committed == {nmr: [1, 2, 3]}
    assert (result.events_inserted, result.events_duplicate) == (2, 1)
    assert result.dead_letters == ()
    assert count(conn, "events", nmr) == 3
    assert intervals(conn, nmr) == [
        StateInterval(State.STANDBY, at(0), at(2)),
        StateInterval(State.RUNNING, at(2), at(3)),
        StateInterval(State.STANDBY, at(3), None),
    ]


def test_unknown_instrument_becomes_a_dead_letter(conn: psycopg.Connection[TupleRow]) -> None:
    stranger = f"ghost-{uuid.uuid4().hex[:10]}"
    result = store_batch(
        conn, [event(stranger, 1, at(0), State.RUNNING), heartbeat(stranger, at(1))]
    )

    assert result.committed == {}
    assert [letter.reason for letter in result.dead_letters] == [Reason.UNKNOWN_INSTRUMENT] * 2
    assert [reason for reason, _, _ in dead_letters(conn, stranger)] == ["unknown_instrument"] * 2
    assert count(conn, "events", stranger) == 0


def test_invalid_messages_are_kept_verbatim(conn: psycopg.Connection[TupleRow]) -> None:
    marker = uuid.uuid4().hex
    garbage = f"not json {marker}".encode()
    odd_topic = f'{{"v": 1, "m": "{marker}"}}'.encode()
    batch = [
        parse_message("instrumetry/v1/events/x", garbage, RECEIVED),
        parse_message("instrumetry/v1/events/x\x00y", odd_topic, RECEIVED),
    ]

    result = store_batch(conn, batch)

    assert [letter.reason for letter in result.dead_letters] == ["malformed", "invalid"]
    assert dead_letters(conn, marker) == [
        ("malformed", "instrumetry/v1/events/x", garbage),
        ("invalid", "instrumetry/v1/events/x\\x00y", odd_topic),
    ]


def test_a_different_event_under_a_stored_key_is_a_conflict(
    conn: psycopg.Connection[TupleRow],
) -> None:
    nmr = register(conn)
    original = event(nmr, 1, at(0), State.RUNNING, power_w=300.0)
    forged = event(nmr, 1, at(0), State.OFF, power_w=0.0)
    store_batch(conn, [original])

    result = store_batch(conn, [forged, forged])

    assert result.committed == {nmr: [1]}
    assert [letter.reason for letter in result.dead_letters] == [Reason.CONFLICT] * 2
    stored = conn.execute("SELECT to_state FROM events WHERE instrument_id = %s", (nmr,)).fetchall()
    assert stored == [("running",)]


def test_last_seen_never_moves_back(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    store_batch(conn, [heartbeat(nmr, at(30))])
    store_batch(conn, [event(nmr, 1, at(5), State.RUNNING), heartbeat(nmr, at(20))])
    assert conn.execute("SELECT last_seen FROM instruments WHERE id = %s", (nmr,)).fetchone() == (
        at(30),
    )


def test_events_at_the_same_time_keep_the_later_seq(conn: psycopg.Connection[TupleRow]) -> None:
    nmr = register(conn)
    store_batch(conn, [event(nmr, 1, at(0), State.STANDBY), event(nmr, 3, at(5), State.OFF)])
    store_batch(conn, [event(nmr, 2, at(5), State.RUNNING), event(nmr, 4, at(9), State.STANDBY)])
    assert intervals(conn, nmr) == [
        StateInterval(State.STANDBY, at(0), at(5)),
        StateInterval(State.OFF, at(5), at(9)),
        StateInterval(State.STANDBY, at(9), None),
    ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    states=st.lists(st.sampled_from(list(State)), min_size=1, max_size=12),
    data=st.data(),
)
def test_out_of_order_batches_derive_the_in_order_intervals(
    conn: psycopg.Connection[TupleRow], states: list[State], data: st.DataObject
) -> None:
    """However the events are split into batches and ordered, the intervals are the same."""
    nmr = register(conn)
    timeline = [(at(7 * index), state) for index, state in enumerate(states)]
    messages = [event(nmr, seq, when, state) for seq, (when, state) in enumerate(timeline, 1)]
    shuffled = data.draw(st.permutations(messages))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(messages)), max_size=4)))
    batches: list[Sequence[Parsed]] = [
        shuffled[start:end] for start, end in zip([0, *cuts], [*cuts, len(messages)], strict=True)
    ]

    for batch in batches:
        store_batch(conn, batch)

    assert intervals(conn, nmr) == derive(timeline)


def test_a_row_the_database_refuses_is_isolated(conn: psycopg.Connection[TupleRow]) -> None:
    """One value the database rejects must not wedge the batch it came in."""
    nmr = register(conn)
    conn.execute("ALTER TABLE heartbeats ADD CONSTRAINT test_samples CHECK (samples < 1000)")
    try:
        result = store(conn, [event(nmr, 1, at(0), State.RUNNING), heartbeat(nmr, at(1), 5000)])
    finally:
        conn.execute("ALTER TABLE heartbeats DROP CONSTRAINT test_samples")

    assert result.committed == {nmr: [1]}
    assert [letter.reason for letter in result.dead_letters] == [Reason.REJECTED]
    assert "test_samples" in result.dead_letters[0].detail
    assert count(conn, "events", nmr) == 1
    assert count(conn, "heartbeats", nmr) == 0
    assert isinstance(result.dead_letters[0], DeadLetter)


def derive_again(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> int:
    """``instrumetry db intervals --rebuild *args``; its exit code."""
    return run_cli(monkeypatch, url, "db", "intervals", "--rebuild", *args)


def test_intervals_derived_again_are_those_the_batches_derived(
    database: str,
    conn: psycopg.Connection[TupleRow],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    nmr = register(conn)
    changes = [(0, State.STANDBY), (10, State.RUNNING), (20, State.STANDBY), (1445, State.OFF)]
    store_batch(conn, [event(nmr, seq, at(t), to) for seq, (t, to) in enumerate(changes, 1)])
    rebuild_rollups(conn, nmr)  # the open day too, as deriving again writes it
    derived, days = intervals(conn, nmr), daily(conn, nmr)
    conn.execute("UPDATE intervals SET state = 'off' WHERE instrument_id = %s", (nmr,))
    conn.execute("DELETE FROM daily_usage WHERE instrument_id = %s", (nmr,))

    assert derive_again(monkeypatch, database, "--instrument", nmr) == 0

    said = capsys.readouterr().out
    assert said == "derived 4 interval(s) and 2 day(s) again for 1 instrument(s)\n"
    assert intervals(conn, nmr) == derived
    assert daily(conn, nmr) == days
    conn.execute("UPDATE intervals SET state = 'off' WHERE instrument_id = %s", (nmr,))
    only = ("--instrument", nmr, "--from", "2025-03-04")
    assert derive_again(monkeypatch, database, *only) == 0
    # From the interval in force at 00:00 on: the two before it are left as they were.
    states = [State.OFF, State.OFF, *(interval.state for interval in derived[2:])]
    assert [interval.state for interval in intervals(conn, nmr)] == states


def test_deriving_again_names_bad_arguments(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert derive_again(monkeypatch, database, "--instrument", "nope") == 1
    assert "no instrument has id 'nope'" in capsys.readouterr().err
    assert derive_again(monkeypatch, database, "--from", "March") == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


def daily(conn: psycopg.Connection[TupleRow], instrument_id: str) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT day, on_h, running_h, effective_h, unknown_h, known_until FROM daily_usage "
        "WHERE instrument_id = %s ORDER BY day",
        (instrument_id,),
    ).fetchall()


def test_an_unusable_calendar_stops_only_its_institutions_rollups(
    conn: psycopg.Connection[TupleRow], caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = register(conn), register(conn)
    conn.execute(
        "INSERT INTO institutions (id, name, tz) VALUES ('mars', 'Mars lab', 'Mars/Olympus') "
        "ON CONFLICT DO NOTHING"
    )
    conn.execute("UPDATE instruments SET institution_id = 'mars' WHERE id = %s", (bad,))
    batch = [
        event(instrument_id, seq, at(minutes), State.RUNNING if seq == 1 else State.OFF)
        for instrument_id in (good, bad)
        for seq, minutes in ((1, 0), (2, 1500))  # the next day: the first one is finished
    ]

    result = store_batch(conn, batch)

    assert result.events_inserted == 4
    assert result.dead_letters == ()
    assert [day[0] for day in daily(conn, good)] == [T0.date()]
    assert daily(conn, bad) == []
    assert len(intervals(conn, bad)) == 2  # measured all the same
    assert "institution mars: bad calendar" in caplog.text
