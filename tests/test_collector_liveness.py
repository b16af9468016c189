"""Verification and liveness in the store, against a real PostgreSQL + TimescaleDB.

Forged events are kept but never reach the intervals; offline periods nobody
measured become ``unknown`` intervals, which the usage math counts as lost
coverage rather than idle time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg.rows import TupleRow

from collector import liveness, sigcheck
from collector.ingest import EventRow, Parsed, parse_message
from collector.store import store_batch
from collector.verify import EnrolledKeys
from instrumetry.domain import topics, wire
from instrumetry.domain.intervals import StateInterval, timeline
from instrumetry.domain.states import State

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
OLD, NEW = "a" * 32, "b" * 32


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Agent:
    """An enrolled agent that signs and chains its events as the real one does."""

    def __init__(self, conn: psycopg.Connection[TupleRow]) -> None:
        self.instrument = f"sem-{uuid.uuid4().hex[:10]}"
        self.key = Ed25519PrivateKey.generate()
        self.prev = wire.GENESIS
        conn.execute(
            "INSERT INTO institutions (id, name) VALUES ('lab', 'Lab') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', 'SEM')",
            (self.instrument,),
        )
        conn.execute(
            "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
            (
                f"agent-{self.instrument}",
                self.instrument,
                self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            ),
        )

    def event(
        self,
        seq: int,
        when: datetime,
        to: State,
        *,
        boot: str = OLD,
        key: Ed25519PrivateKey | None = None,
    ) -> Parsed:
        message = wire.Event(
            v=1,
            instrument=self.instrument,
            boot=boot,
            seq=seq,
            t=ms(when),
            from_state=State.UNKNOWN,
            to_state=to,
            prev=self.prev,
        )
        message = wire.sign(message, (key or self.key).sign)
        self.prev = wire.event_hash(message)
        return self._parse(topics.Kind.EVENTS, wire.encode(message), when)

    def heartbeat(
        self, when: datetime, *, boot: str = OLD, received: datetime | None = None
    ) -> Parsed:
        message = wire.Heartbeat(
            v=1, instrument=self.instrument, boot=boot, t=ms(when), state=State.STANDBY, last_seq=0
        )
        return self._parse(topics.Kind.HEARTBEATS, wire.encode(message), received or when)

    def status(
        self, when: datetime, value: str, *, boot: str = OLD, received: datetime | None = None
    ) -> Parsed:
        message = wire.Status(
            v=1,
            instrument=self.instrument,
            boot=boot,
            status="online" if value == "online" else "offline",
            t=ms(when),
        )
        return self._parse(topics.Kind.STATUS, wire.encode(message), received or when)

    def _parse(self, kind: topics.Kind, payload: bytes, received: datetime) -> Parsed:
        return parse_message(topics.topic(kind, self.instrument), payload, received)


def intervals(conn: psycopg.Connection[TupleRow], instrument: str) -> list[StateInterval]:
    rows = conn.execute(
        "SELECT state, start_time, end_time FROM intervals WHERE instrument_id = %s "
        "ORDER BY start_time",
        (instrument,),
    ).fetchall()
    return [StateInterval(State(state), start, end) for state, start, end in rows]


def verifications(conn: psycopg.Connection[TupleRow], instrument: str) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT seq, verification FROM events WHERE instrument_id = %s ORDER BY seq",
        (instrument,),
    ).fetchall()
    return [(seq, verdict) for seq, verdict in rows]


def test_forged_events_are_kept_flagged_and_left_out_of_usage(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    genuine = agent.event(1, at(0), State.STANDBY)
    forged = agent.event(2, at(10), State.RUNNING, key=Ed25519PrivateKey.generate())

    result = store_batch(conn, [genuine, forged])

    assert result.committed == {agent.instrument: [1, 2]}  # kept: the agent may forget it
    assert result.verdicts == {"ok": 1, "bad_signature": 1}
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "bad_signature")]
    assert intervals(conn, agent.instrument) == [StateInterval(State.STANDBY, at(0), None)]


def never_enrolled(conn: psycopg.Connection[TupleRow], agent: Agent) -> None:
    """Forget ``agent``'s enrolment altogether, key history included."""
    conn.execute("DELETE FROM agents WHERE instrument_id = %s", (agent.instrument,))
    conn.execute("DELETE FROM agent_keys WHERE instrument_id = %s", (agent.instrument,))


def test_events_of_an_instrument_without_an_enrolled_key_are_unknown_key(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    never_enrolled(conn, agent)
    store_batch(conn, [agent.event(1, at(0), State.RUNNING)])
    assert verifications(conn, agent.instrument) == [(1, "unknown_key")]
    assert intervals(conn, agent.instrument) == []


def test_a_gap_is_settled_when_the_missing_event_arrives(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    first, second, third = (agent.event(seq, at(seq), State.STANDBY) for seq in (1, 2, 3))
    store_batch(conn, [first, third])
    assert verifications(conn, agent.instrument) == [(1, "ok"), (3, "gap")]

    store_batch(conn, [second])
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "ok"), (3, "ok")]


def test_an_inserted_or_altered_link_is_a_chain_break(conn: psycopg.Connection[TupleRow]) -> None:
    agent = Agent(conn)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)])
    agent.prev = "ab" * 32  # the agent's chain head was tampered with
    store_batch(conn, [agent.event(2, at(5), State.RUNNING)])
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "chain_break")]
    assert len(intervals(conn, agent.instrument)) == 2  # authentic: it counts, flagged


def enroll(conn: psycopg.Connection[TupleRow], agent: Agent, key: Ed25519PrivateKey) -> None:
    """Re-enroll ``agent`` with ``key``, as the registry does when an agent PC is replaced."""
    agent.key = key
    conn.execute(
        "UPDATE agents SET public_key = %s WHERE instrument_id = %s",
        (key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), agent.instrument),
    )


def test_a_re_enrolled_key_is_picked_up_before_a_bad_signature(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent, keys = Agent(conn), EnrolledKeys(ttl_s=3600)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    enroll(conn, agent, Ed25519PrivateKey.generate())
    store_batch(conn, [agent.event(2, at(5), State.RUNNING)], keys)
    forged = agent.event(3, at(9), State.OFF, key=Ed25519PrivateKey.generate())
    store_batch(conn, [forged], keys)
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "ok"), (3, "bad_signature")]


def test_a_key_enrolled_later_is_picked_up_before_unknown_key(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent, keys = Agent(conn), EnrolledKeys(ttl_s=3600)
    never_enrolled(conn, agent)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    conn.execute(
        "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
        (
            f"agent-{agent.instrument}",
            agent.instrument,
            agent.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        ),
    )
    store_batch(conn, [agent.event(2, at(5), State.RUNNING)], keys)
    assert verifications(conn, agent.instrument) == [(1, "unknown_key"), (2, "ok")]


def test_a_retired_key_verifies_later_events_until_the_cache_expires(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """Re-enrolment retires the old key: it keeps what it signed before, not what comes after.

    The cache bounds how long the collector still takes the old key for events
    dated after the re-enrolment.
    """
    now = [0.0]
    agent, keys = Agent(conn), EnrolledKeys(ttl_s=10, clock=lambda: now[0])
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    old = agent.key
    enroll(conn, agent, Ed25519PrivateKey.generate())
    after = datetime.now(UTC) + timedelta(hours=1)  # dated after the retirement
    store_batch(conn, [agent.event(2, at(5), State.RUNNING, key=old)], keys)  # before it
    store_batch(conn, [agent.event(3, after, State.OFF, key=old)], keys)  # cache: still current
    now[0] = 10.0
    late = agent.event(4, after + timedelta(minutes=5), State.STANDBY, key=old)
    store_batch(conn, [late, agent.event(5, at(7), State.OFF, key=old)], keys)
    assert verifications(conn, agent.instrument) == [
        (1, "ok"),
        (2, "ok"),
        (3, "ok"),
        (4, "bad_signature"),
        (5, "ok"),
    ]


def offline_periods(
    conn: psycopg.Connection[TupleRow], instrument: str
) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT start_time, end_time, reason, boot_id, resumed_boot_id FROM offline_periods "
        "WHERE instrument_id = %s ORDER BY start_time",
        (instrument,),
    ).fetchall()


def test_an_agent_restart_after_its_will_is_unknown_time(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(30))])
    result = store_batch(conn, [agent.status(at(1), "offline")])  # the Will: connect time
    assert result.offline_opened == 1
    assert intervals(conn, agent.instrument)[-1] == StateInterval(State.UNKNOWN, at(30), None)

    store_batch(
        conn,
        [agent.status(at(90), "online", boot=NEW), agent.event(2, at(95), State.RUNNING, boot=NEW)],
    )

    assert offline_periods(conn, agent.instrument) == [
        (at(30), at(90), "offline_status", uuid.UUID(OLD), uuid.UUID(NEW))
    ]
    stored = intervals(conn, agent.instrument)
    assert stored == [
        StateInterval(State.STANDBY, at(0), at(30)),
        StateInterval(State.UNKNOWN, at(30), at(95)),
        StateInterval(State.RUNNING, at(95), None),
    ]
    line = timeline(stored, (at(0), at(120)), known_until=at(120))
    assert line.unknown == [(at(30), at(95))]  # coverage 55/120, not idle standby


def test_what_a_restarted_agent_replays_of_its_old_boot_still_counts(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """Cut off after 30, the old boot measured a change at 40 and died; its outbox has it."""
    agent = Agent(conn)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(30))])
    store_batch(conn, [agent.status(at(1), "offline")])
    back = [
        agent.status(at(90), "online", boot=NEW),
        agent.event(2, at(40), State.RUNNING),  # replayed from the outbox: the old boot's
        agent.event(3, at(95), State.OFF, boot=NEW),
    ]
    store_batch(conn, back)

    assert intervals(conn, agent.instrument) == [
        StateInterval(State.STANDBY, at(0), at(40)),
        StateInterval(State.UNKNOWN, at(40), at(95)),
        StateInterval(State.OFF, at(95), None),
    ]


@pytest.mark.parametrize("reverse", [False, True], ids=["one-way", "other-way"])
def test_a_restart_is_unknown_time_whichever_batch_commits_first(
    conn: psycopg.Connection[TupleRow], reverse: bool
) -> None:
    """Two collectors of a shared subscription commit an agent's messages in either order.

    The old boot's replayed event, the Will and the new boot's messages may be
    stored in any order; the restart is the same unknown time in each.
    """
    replay, will = Agent(conn), Agent(conn)
    for agent in (replay, will):
        store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(30))])
    store_batch(conn, [replay.status(at(1), "offline")])
    old_boot = [replay.event(2, at(40), State.RUNNING)]  # its outbox, replayed late
    new_boot = [
        replay.status(at(90), "online", boot=NEW),
        replay.event(3, at(95), State.OFF, boot=NEW),
    ]
    goodbye = [will.status(at(1), "offline")]  # the Will of the old boot
    back = [will.status(at(90), "online", boot=NEW), will.event(2, at(95), State.RUNNING, boot=NEW)]
    batches = [old_boot, goodbye, new_boot, back]
    for batch in reversed(batches) if reverse else batches:
        store_batch(conn, batch)

    assert intervals(conn, replay.instrument) == [
        StateInterval(State.STANDBY, at(0), at(40)),
        StateInterval(State.UNKNOWN, at(40), at(95)),
        StateInterval(State.OFF, at(95), None),
    ]
    assert intervals(conn, will.instrument) == [
        StateInterval(State.STANDBY, at(0), at(30)),
        StateInterval(State.UNKNOWN, at(30), at(95)),
        StateInterval(State.RUNNING, at(95), None),
    ]
    # The Will is recorded either way; the period ends at the first of the new boot's
    # messages stored (the online status at 90, or its first event at 95 when it came late).
    ((start, _, reason, *boots),) = offline_periods(conn, will.instrument)
    assert (start, reason, boots) == (at(30), "offline_status", [uuid.UUID(OLD), uuid.UUID(NEW)])


def test_a_lost_connection_of_a_measuring_agent_costs_no_coverage(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(30))])
    store_batch(conn, [agent.status(at(1), "offline")])
    # Back with the same boot: its outbox replays what happened meanwhile.
    store_batch(conn, [agent.status(at(90), "online"), agent.event(2, at(60), State.RUNNING)])

    assert offline_periods(conn, agent.instrument) == [
        (at(30), at(90), "offline_status", uuid.UUID(OLD), uuid.UUID(OLD))
    ]
    assert intervals(conn, agent.instrument) == [
        StateInterval(State.STANDBY, at(0), at(60)),
        StateInterval(State.RUNNING, at(60), None),
    ]


def test_one_batch_that_closes_a_period_and_opens_the_next_stores_both(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """Written in one statement: the open period is closed before the next one opens."""
    agent = Agent(conn)
    store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(30))])
    assert store_batch(conn, [agent.status(at(1), "offline")]).offline_opened == 1
    back_and_gone = [
        agent.status(at(90), "online"),
        agent.heartbeat(at(100)),
        agent.status(at(90), "offline"),  # its Will again, a connection later
    ]
    assert store_batch(conn, back_and_gone).offline_opened == 1
    assert offline_periods(conn, agent.instrument) == [
        (at(30), at(90), "offline_status", uuid.UUID(OLD), uuid.UUID(OLD)),
        (at(100), None, "offline_status", uuid.UUID(OLD), None),
    ]


def test_a_silent_agent_times_out_and_is_closed_when_heard(make_database: MakeDatabase) -> None:
    """In a database of its own: a sweep looks at every instrument."""
    with make_database("test_sweep") as url, psycopg.connect(url, autocommit=True) as conn:
        agent = Agent(conn)
        store_batch(conn, [agent.event(1, at(0), State.STANDBY), agent.heartbeat(at(10))])

        assert liveness.sweep(conn, at(12), timedelta(minutes=3)) == []
        assert liveness.sweep(conn, at(14), timedelta(minutes=3)) == [agent.instrument]
        assert liveness.sweep(conn, at(15), timedelta(minutes=3)) == []  # already open
        assert intervals(conn, agent.instrument)[-1] == StateInterval(State.UNKNOWN, at(10), None)

        store_batch(
            conn, [agent.heartbeat(at(40), boot=NEW), agent.event(2, at(41), State.OFF, boot=NEW)]
        )
        timed_out = [(at(10), at(40), "heartbeat_timeout", uuid.UUID(OLD), uuid.UUID(NEW))]
        assert offline_periods(conn, agent.instrument) == timed_out
        assert intervals(conn, agent.instrument) == [
            StateInterval(State.STANDBY, at(0), at(10)),
            StateInterval(State.UNKNOWN, at(10), at(41)),
            StateInterval(State.OFF, at(41), None),
        ]

        # The old boot's Will, stored late (two collectors): the timeout recorded its period.
        assert store_batch(conn, [agent.status(at(1), "offline")]).offline_opened == 0
        assert offline_periods(conn, agent.instrument) == timed_out


def test_clock_skew_is_measured_on_heartbeats(conn: psycopg.Connection[TupleRow]) -> None:
    agent = Agent(conn)
    late = at(10) + timedelta(seconds=95)
    will = agent.status(at(1), "offline", received=late)  # stamped at connect: no clock reading
    result = store_batch(conn, [agent.heartbeat(at(10), received=late), will])
    assert result.clock_skews == ((agent.instrument, timedelta(seconds=95)),)
    row = conn.execute(
        "SELECT clock_skew_ms, last_heard_at, last_boot_id FROM instruments WHERE id = %s",
        (agent.instrument,),
    ).fetchone()
    assert row == (95_000, at(10) + timedelta(seconds=95), uuid.UUID(OLD))


def test_preloaded_keys_precheck_an_instruments_first_batch(
    conn: psycopg.Connection[TupleRow],
) -> None:
    agent = Agent(conn)
    first = agent.event(1, at(0), State.STANDBY)
    assert isinstance(first, EventRow)
    assert EnrolledKeys().precheck([first], sigcheck.check) == {}  # nothing cached yet
    keys = EnrolledKeys()
    assert keys.preload(conn) >= 1
    (verified_by,) = keys.precheck([first], sigcheck.check).values()
    assert {key.agent_id for key in verified_by} == {f"agent-{agent.instrument}"}
    store_batch(conn, [first], keys, {id(first): verified_by})
    assert verifications(conn, agent.instrument) == [(1, "ok")]


def test_a_precheck_stands_only_while_the_registry_keeps_the_keys_it_used(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """The collector checks a batch's signatures against its cached keys before storing it;
    if the instrument was re-enrolled meanwhile, the store checks again."""
    now = [0.0]
    agent, keys = Agent(conn), EnrolledKeys(ttl_s=10, clock=lambda: now[0])
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    now[0] = 30.0  # expired: still used to precheck, read again when stored
    second = agent.event(2, at(5), State.RUNNING)
    prechecked = keys.precheck(event_rows([second]), sigcheck.check)
    store_batch(conn, [second], keys, prechecked)
    old = agent.key
    late = agent.event(3, datetime.now(UTC) + timedelta(hours=1), State.OFF, key=old)
    prechecked = keys.precheck(event_rows([late]), sigcheck.check)
    assert len(prechecked) == 1  # the cached key verifies it...
    enroll(conn, agent, Ed25519PrivateKey.generate())  # ...but is retired before it is stored
    now[0] = 60.0
    store_batch(conn, [late], keys, prechecked)
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "ok"), (3, "bad_signature")]


def test_keys_stay_cached_for_prechecks_until_the_instrument_is_silent_for_kept_s(
    conn: psycopg.Connection[TupleRow],
) -> None:
    now = [0.0]
    agent = Agent(conn)
    keys = EnrolledKeys(ttl_s=10, clock=lambda: now[0], kept_s=60)
    assert keys.precheck(event_rows([agent.event(1, at(0), State.STANDBY)]), sigcheck.check) == {}
    agent.prev = wire.GENESIS
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    now[0] = 65.0
    assert len(keys.precheck(event_rows([agent.event(2, at(1), State.OFF)]), sigcheck.check)) == 1
    now[0] = 75.0
    store_batch(conn, [agent.heartbeat(at(2))], keys)  # a batch without events prunes too
    assert keys.precheck(event_rows([agent.event(3, at(3), State.STANDBY)]), sigcheck.check) == {}


def event_rows(batch: list[Parsed]) -> list[EventRow]:
    rows = [row for row in batch if isinstance(row, EventRow)]
    assert len(rows) == len(batch)
    return rows


def test_a_predecessor_far_from_its_successor_in_time_is_still_found(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """Predecessors are looked for near their successor first, then anywhere: an
    instrument idle for three months and a device clock set back ten days still chain."""
    agent, keys = Agent(conn), EnrolledKeys()
    store_batch(conn, [agent.event(1, at(0), State.STANDBY)], keys)
    store_batch(conn, [agent.event(2, at(0) + timedelta(days=90), State.RUNNING)], keys)
    store_batch(conn, [agent.event(3, at(0) + timedelta(days=80), State.OFF)], keys)
    late = agent.event(5, at(0) + timedelta(days=200), State.STANDBY)
    store_batch(conn, [late], keys)  # seq 4 is not stored anywhere: a gap
    assert verifications(conn, agent.instrument) == [(1, "ok"), (2, "ok"), (3, "ok"), (5, "gap")]


def test_intervals_rebuilt_after_months_offline_keep_the_state_from_before(
    conn: psycopg.Connection[TupleRow],
) -> None:
    """A rebuild that starts four months after the event in force there (beyond the month
    where it is looked for first) still derives every interval from it on."""
    agent, day = Agent(conn), timedelta(days=1)
    store_batch(conn, [agent.event(1, T0, State.STANDBY), agent.heartbeat(T0 + 120 * day)])
    store_batch(conn, [agent.status(T0 + 2 * day, "offline")])  # the Will: connect time
    store_batch(conn, [agent.status(T0 + 180 * day, "online", boot=NEW)])
    # Rebuilt from the unknown interval's start, where the first event is in force:
    store_batch(conn, [agent.event(2, T0 + 190 * day, State.RUNNING, boot=NEW)])
    assert intervals(conn, agent.instrument) == [
        StateInterval(State.STANDBY, T0, T0 + 120 * day),
        StateInterval(State.UNKNOWN, T0 + 120 * day, T0 + 190 * day),
        StateInterval(State.RUNNING, T0 + 190 * day, None),
    ]
