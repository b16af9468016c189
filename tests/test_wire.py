"""The wire format: round trips, canonical bytes, signatures, chains, and bad payloads."""

from __future__ import annotations

import itertools
import json

import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from instrumetry.domain import chain, wire
from instrumetry.domain.classify import Transition
from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

BOOT = "0123456789abcdef0123456789abcdef"
KEY = Ed25519PrivateKey.generate()


def event(**changes: object) -> wire.Event:
    base = wire.Event(
        v=1,
        instrument="nmr-600",
        boot=BOOT,
        seq=7,
        t=1_767_225_600_000,
        from_state=State.STANDBY,
        to_state=State.RUNNING,
        power_w=912.5,
        prev="a" * 64,
    )
    return msgspec.structs.replace(base, **changes)


HEARTBEAT = wire.Heartbeat(
    v=1,
    instrument="nmr-600",
    boot=BOOT,
    t=1,
    state=State.OFF,
    last_seq=0,
    samples=12,
    power_min_w=0.1,
    power_mean_w=0.4,
    power_max_w=1.2,
)
MESSAGES = [
    event(),
    wire.sign(event(power_w=None, to_state=State.UNKNOWN), KEY.sign),
    HEARTBEAT,
    wire.Status(v=1, instrument="nmr-600", boot=BOOT, status="offline", t=5),
    wire.Ack(v=1, instrument="nmr-600", seqs=[1, 2, 3]),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(message: wire.Message) -> None:
    assert wire.decode(type(message), wire.encode(message)) == message  # type: ignore[type-var]


def test_events_use_the_documented_field_names() -> None:
    payload = json.loads(wire.encode(event()))
    assert payload["from"] == "standby"
    assert payload["to"] == "running"
    assert "from_state" not in payload


def test_canonical_bytes_are_the_documented_text() -> None:
    expected = "\n".join(
        [
            "instrumetry.event.v1",
            "nmr-600",
            BOOT,
            "7",
            "1767225600000",
            "standby",
            "running",
            "912.500",
            "a" * 64,
        ]
    ).encode()
    assert wire.canonical(event()) == expected
    assert wire.canonical(event(power_w=None)).split(b"\n")[7] == b""
    assert wire.canonical(event(sig="anything")) == expected  # the signature is not signed


def test_a_signature_verifies_with_the_public_key_and_breaks_on_tampering() -> None:
    signed = wire.sign(event(), KEY.sign)
    KEY.public_key().verify(wire.signature_bytes(signed), wire.canonical(signed))

    tampered = msgspec.structs.replace(signed, power_w=100.0)
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(wire.signature_bytes(tampered), wire.canonical(tampered))
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(InvalidSignature):
        other.verify(wire.signature_bytes(signed), wire.canonical(signed))


def test_a_signature_that_is_not_base64_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="seq 7: signature is not base64"):
        wire.signature_bytes(event(sig="not base64!"))


def test_chained_events_link_by_hash_and_count_up() -> None:
    steps = [(State.UNKNOWN, State.OFF), (State.OFF, State.STANDBY), (State.STANDBY, State.RUNNING)]
    head = chain.ChainHead()
    events = []
    for i, (old, new) in enumerate(steps):
        transition = Transition(1000 * i, old, new, 12.3456)
        ev, head = chain.append(
            head, instrument="nmr-600", boot=BOOT, transition=transition, signer=KEY.sign
        )
        events.append(ev)

    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev == wire.GENESIS
    for earlier, later in itertools.pairwise(events):
        assert later.prev == wire.event_hash(earlier)
    assert head == chain.ChainHead(4, wire.event_hash(events[-1]))
    assert events[0].power_w == 12.346  # three decimals, as the canonical text has
    for ev in events:
        KEY.public_key().verify(wire.signature_bytes(ev), wire.canonical(ev))


@given(
    seq=st.integers(1, 2**63 - 1),
    t=st.integers(0, 2**53),
    power=st.none() | st.floats(0, 1e7),
    states=st.tuples(st.sampled_from(State), st.sampled_from(State)),
)
def test_any_valid_event_round_trips(
    seq: int, t: int, power: float | None, states: tuple[State, State]
) -> None:
    ev = event(seq=seq, t=t, power_w=power, from_state=states[0], to_state=states[1])
    assert wire.decode(wire.Event, wire.encode(ev)) == ev


def payload(**changes: object) -> bytes:
    """A valid event payload with fields changed; `...` drops a field."""
    raw = json.loads(wire.encode(event()))
    raw.update(changes)
    return json.dumps({k: v for k, v in raw.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        (payload(seq="7"), "`$.seq`"),
        (payload(seq=0), "`$.seq`"),
        (payload(to="exploded"), "`$.to`"),
        (payload(boot="XYZ"), "`$.boot`"),
        (payload(power_w=-1), "`$.power_w`"),
        (payload(instrument="a/b"), "`$.instrument`"),
        (payload(prev=...), None),
        (payload(t=...), "`t`"),
        (payload(colour="red"), "`colour`"),
        (payload(v=2), "unsupported schema version 2"),
        (payload(v=2, seq="x"), "unsupported schema version 2"),
        (b'{"v": 1, "instrument": ', "malformed JSON"),
        (b"[]", "Expected `object`"),
        (b" " * (wire.MAX_PAYLOAD_BYTES + 1), "exceeds"),
    ],
)
def test_bad_payloads_are_wire_errors_that_name_the_problem(bad: bytes, names: str | None) -> None:
    if names is None:  # an omitted optional field is fine
        assert wire.decode(wire.Event, bad).prev == wire.GENESIS
        return
    with pytest.raises(WireError) as raised:
        wire.decode(wire.Event, bad)
    assert names in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("field", "value"), [("last_seq", 2**63), ("samples", 2**31)])
def test_heartbeat_integers_beyond_their_columns_are_wire_errors(field: str, value: int) -> None:
    # The collector COPYs them in binary, where a too large integer would be cut, not refused.
    raw = json.loads(wire.encode(HEARTBEAT))
    with pytest.raises(WireError, match=rf"\$\.{field}"):
        wire.decode(wire.Heartbeat, json.dumps(raw | {field: value}).encode())


def test_an_ack_with_a_bad_seq_names_the_element() -> None:
    with pytest.raises(WireError, match=r"\$\.seqs\[1\]"):
        wire.decode(wire.Ack, b'{"v": 1, "instrument": "nmr-600", "seqs": [1, -2]}')
