"""The sans-I/O ingest core: every message becomes a row or a dead letter, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.ingest import (
    DeadLetter,
    EventRow,
    HeartbeatRow,
    Reason,
    Received,
    StatusRow,
    parse_message,
)
from instrumetry.domain import topics, wire
from instrumetry.domain.states import State

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
BOOT = "0123456789abcdef0123456789abcdef"
EVENTS = topics.topic(topics.Kind.EVENTS, "nmr-1")
EVENT = {
    "v": 1,
    "instrument": "nmr-1",
    "boot": BOOT,
    "seq": 7,
    "t": 1_741_000_000_000,
    "from": "standby",
    "to": "running",
    "power_w": 812.5,
    "prev": "ab" * 32,
    "sig": "c2ln",
}


def payload(**changes: object) -> bytes:
    return json.dumps(EVENT | changes).encode()


def reason_of(topic: str, body: bytes) -> Reason:
    parsed = parse_message(topic, body, NOW)
    assert isinstance(parsed, DeadLetter), parsed
    assert parsed.source == Received(topic, body, NOW), "a dead letter keeps the message verbatim"
    assert parsed.detail
    return parsed.reason


def test_a_valid_event_becomes_an_event_row() -> None:
    parsed = parse_message(EVENTS, payload(), NOW)
    assert isinstance(parsed, EventRow)
    assert parsed.instrument_id == "nmr-1"
    assert parsed.event.to_state is State.RUNNING
    assert parsed.device_time == datetime(2025, 3, 3, 11, 6, 40, tzinfo=UTC)
    assert parsed.signature == b"sig"
    assert parsed.source.received_at == NOW


def test_a_valid_heartbeat_and_status_become_rows() -> None:
    beat = wire.Heartbeat(v=1, instrument="nmr-1", boot=BOOT, t=0, state=State.OFF, last_seq=3)
    status = wire.Status(v=1, instrument="nmr-1", boot=BOOT, status="offline", t=5)
    heartbeats = topics.topic(topics.Kind.HEARTBEATS, "nmr-1")
    assert isinstance(parse_message(heartbeats, wire.encode(beat), NOW), HeartbeatRow)
    statuses = topics.topic(topics.Kind.STATUS, "nmr-1")
    assert isinstance(parse_message(statuses, wire.encode(status), NOW), StatusRow)


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        (EVENTS, b"{not json", Reason.MALFORMED),
        (EVENTS, b"\xff\xfe", Reason.MALFORMED),
        (EVENTS, payload(v=2), Reason.SCHEMA_VERSION),
        (EVENTS, b'{"instrument": "nmr-1"}', Reason.SCHEMA_VERSION),
        (EVENTS, payload(seq=0), Reason.INVALID),
        (EVENTS, payload(to="exploded"), Reason.INVALID),
        (EVENTS, payload(extra=1), Reason.INVALID),
        (EVENTS, payload(sig="not base64!"), Reason.INVALID),
        (EVENTS, payload(t=2**53), Reason.INVALID),
        (EVENTS, b"[1, 2]", Reason.INVALID),
        (EVENTS, payload(instrument="nmr-2"), Reason.TOPIC_MISMATCH),
        (EVENTS, payload(power_w=1.0) + b" " * wire.MAX_PAYLOAD_BYTES, Reason.OVERSIZED),
        ("instrumetry/v1/events/bad id", payload(), Reason.INVALID),
        ("instrumetry/v1/acks/nmr-1", payload(), Reason.INVALID),
        ("instrumetry/v2/events/nmr-1", payload(), Reason.INVALID),
    ],
)
def test_each_problem_has_its_reason(topic: str, body: bytes, reason: Reason) -> None:
    assert reason_of(topic, body) == reason


def test_heartbeat_counters_beyond_the_database_columns_are_invalid() -> None:
    beat = wire.Heartbeat(
        v=1, instrument="nmr-1", boot=BOOT, t=0, state=State.OFF, last_seq=2**63, samples=1
    )
    heartbeats = topics.topic(topics.Kind.HEARTBEATS, "nmr-1")
    assert reason_of(heartbeats, wire.encode(beat)) == Reason.INVALID


@given(topic=st.text(max_size=80), body=st.binary(max_size=300))
def test_never_raises_on_arbitrary_input(topic: str, body: bytes) -> None:
    parsed = parse_message(topic, body, NOW)
    assert isinstance(parsed, DeadLetter | EventRow | HeartbeatRow | StatusRow)


@given(
    changes=st.dictionaries(
        st.sampled_from(sorted(EVENT)),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
        max_size=3,
    )
)
def test_never_raises_on_mutated_events(changes: dict[str, object]) -> None:
    parsed = parse_message(EVENTS, json.dumps(EVENT | changes).encode(), NOW)
    assert isinstance(parsed, DeadLetter | EventRow)
