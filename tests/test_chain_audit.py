"""Chain verification as an auditor runs it: signatures, links, gaps, foreign events, exports."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain import chain, wire
from instrumetry.domain.audit import AgentKey
from instrumetry.domain.chain_audit import Break, Foreign, Gap, StoredEvent, to_wire, verify_chain
from instrumetry.domain.chain_export import export_lines, published_key, read_export
from instrumetry.domain.classify import Transition
from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

BOOT = "00112233445566778899aabbccddeeff"
T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


KEY, OTHER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def enrolled(
    key: Ed25519PrivateKey, agent: str = "agent-1", retired_ms: int | None = None
) -> AgentKey:
    return AgentKey(agent, raw(key), retired_ms)


def events(count: int, key: Ed25519PrivateKey = KEY, instrument: str = "nmr-1") -> list[wire.Event]:
    head = chain.ChainHead()
    out = []
    states = [State.OFF, State.STANDBY, State.RUNNING]
    for i in range(count):
        transition = Transition(T0 + i * 60_000, states[i % 3], states[(i + 1) % 3], 10.5 * i)
        event, head = chain.append(
            head, instrument=instrument, boot=BOOT, transition=transition, signer=key.sign
        )
        out.append(event)
    return out


def test_an_intact_chain_is_ok_and_anchored_at_genesis() -> None:
    found = events(5)
    report = verify_chain("nmr-1", reversed(found), [enrolled(KEY)])
    assert report.ok and report.anchored
    assert (report.events, report.first_seq, report.last_seq) == (5, 1, 5)
    assert report.head == wire.event_hash(found[-1])


def test_an_altered_event_fails_its_signature_and_breaks_the_next_link() -> None:
    found = events(4)
    found[1] = msgspec.structs.replace(found[1], to_state=State.OFF)
    report = verify_chain("nmr-1", found, [enrolled(KEY)])
    assert not report.ok
    assert report.bad_signatures == [2]
    assert [b.seq for b in report.breaks] == [3]


def test_a_removed_event_is_a_gap() -> None:
    found = events(6)
    del found[2:4]
    report = verify_chain("nmr-1", found, [enrolled(KEY)])
    assert report.gaps == [Gap(3, 4)]
    assert (report.breaks, report.bad_signatures) == ([], [])


def test_a_removed_and_renumbered_event_is_a_break() -> None:
    found = events(4)
    renumbered = wire.sign(msgspec.structs.replace(found[3], seq=3), KEY.sign)
    report = verify_chain("nmr-1", [*found[:2], renumbered], [enrolled(KEY)])
    assert report.breaks == [Break(3, wire.event_hash(found[1]), found[3].prev)]


def test_an_event_signed_by_another_instruments_agent_is_foreign() -> None:
    found = events(3)
    copied = wire.sign(found[2], OTHER.sign)
    report = verify_chain(
        "nmr-1", [*found[:2], copied], [enrolled(KEY)], foreign_keys=[enrolled(OTHER, "agent-xrd")]
    )
    assert report.foreign == [Foreign(3, "agent-xrd")]
    assert report.bad_signatures == []


def test_a_period_is_anchored_by_the_event_before_it() -> None:
    found = events(5)
    assert not verify_chain("nmr-1", found[2:], [enrolled(KEY)]).anchored
    report = verify_chain("nmr-1", found[2:], [enrolled(KEY)], anchor=found[1])
    assert report.ok and report.anchored
    wrong = verify_chain("nmr-1", found[3:], [enrolled(KEY)], anchor=found[1])
    assert wrong.gaps == [Gap(3, 3)]


def test_a_first_event_not_starting_from_genesis_is_a_break() -> None:
    first = wire.sign(msgspec.structs.replace(events(1)[0], prev="1" * 64), KEY.sign)
    assert verify_chain("nmr-1", [first], [enrolled(KEY)]).breaks == [
        Break(1, wire.GENESIS, "1" * 64)
    ]


def test_one_seq_with_two_contents_is_a_duplicate() -> None:
    found = events(3)
    fork = wire.sign(msgspec.structs.replace(found[2], power_w=1.0), KEY.sign)
    assert verify_chain("nmr-1", [*found, fork], [enrolled(KEY)]).duplicates == [3]


def test_stored_rows_give_back_the_signed_event() -> None:
    (event,) = events(1)
    stored = StoredEvent(
        instrument_id=event.instrument,
        boot_id=uuid.UUID(hex=event.boot),
        seq=event.seq,
        device_time=datetime(2026, 3, 2, tzinfo=UTC),
        from_state=event.from_state,
        to_state=event.to_state,
        power_w=event.power_w,
        prev_hash=bytes.fromhex(event.prev),
        signature=wire.signature_bytes(event),
    )
    assert to_wire(stored) == event


@given(st.integers(0, 2**45))
def test_device_time_round_trips_to_milliseconds(t: int) -> None:
    """As the collector stores it: the epoch plus ``t`` milliseconds."""
    device_time = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t)
    stored = StoredEvent(
        "x", uuid.UUID(int=0), 1, device_time, State.OFF, State.OFF, None, bytes(32), b""
    )
    assert to_wire(stored).t == t


def test_an_export_reads_back_and_verifies_offline() -> None:
    found = events(4)
    period = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    text = b"".join(export_lines("nmr-1", period, [enrolled(KEY)], found[0], found[1:]))
    export = read_export(text.decode())
    assert export.anchor == found[0]
    assert export.events == found[1:]
    assert export.keys == [enrolled(KEY)]
    report = verify_chain(export.instrument_id, export.events, export.keys, anchor=export.anchor)
    assert report.ok and report.anchored


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty export"),
        ("{", "line 1: malformed JSON"),
        ('{"format": "other"}', "not an Instrumetry audit export"),
        ('{"format": "instrumetry.audit.export.v1"}', "header lacks instrument"),
    ],
)
def test_a_bad_export_names_the_line(text: str, message: str) -> None:
    with pytest.raises(WireError, match=message):
        read_export(text)


def test_a_bad_event_line_is_named() -> None:
    period = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    text = b"".join(export_lines("nmr-1", period, [enrolled(KEY)], None, events(1)))
    with pytest.raises(WireError, match="line 3: malformed JSON"):
        read_export(text.decode() + "{oops\n")


def test_a_retired_key_verifies_what_it_signed_before_it_was_retired_and_nothing_after() -> None:
    """A re-enrolled agent: the old key signed seqs 1-3, the new one 4-5."""
    old = events(3)
    head = chain.ChainHead(next_seq=4, prev=wire.event_hash(old[-1]))
    new = []
    for i in (3, 4):
        transition = Transition(T0 + i * 60_000, State.OFF, State.STANDBY, 1.0)
        event, head = chain.append(
            head, instrument="nmr-1", boot=BOOT, transition=transition, signer=OTHER.sign
        )
        new.append(event)
    retired = T0 + 3 * 60_000  # the moment of re-enrolment: seq 4's time
    keys = [enrolled(KEY, retired_ms=retired), enrolled(OTHER)]
    assert verify_chain("nmr-1", [*old, *new], keys).ok
    # The retired key signing after its retirement (a stolen old key) is not accepted.
    late = wire.sign(new[1], KEY.sign)
    assert verify_chain("nmr-1", [*old, new[0], late], keys).bad_signatures == [5]


def test_an_export_keeps_the_retirement_of_its_keys() -> None:
    period = (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    keys = [enrolled(KEY, retired_ms=T0 + 90_001), enrolled(OTHER, "agent-2")]
    text = b"".join(export_lines("nmr-1", period, keys, None, events(1))).decode()
    assert '"retired": "2026-03-02T00:01:30.001000+00:00"' in text
    assert read_export(text).keys == keys


def test_a_published_key_may_carry_its_retirement() -> None:
    text = base64.b64encode(raw(KEY)).decode()
    assert published_key(text) == AgentKey("", raw(KEY))
    assert published_key(f"{text}@2026-03-02T00:01:30+00:00").retired_ms == T0 + 90_000
    with pytest.raises(WireError, match="not an ISO 8601 time with an offset"):
        published_key(f"{text}@2026-03-02 00:01")
