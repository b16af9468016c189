"""The benchmark and fault-test load is what real agents send: valid, signed, chained events.

If it were not, a collector that checks signatures would turn the whole load
into dead letters, and every figure measured with it would be fiction.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench import workload
from instrumetry.domain import topics, wire


def test_events_are_signed_by_the_enrolled_key_and_chained() -> None:
    instrument = workload.fleet("nmr", 2)[1]
    public_key = Ed25519PublicKey.from_public_bytes(instrument.public_key())
    prev = wire.GENESIS
    for expected_seq, (seq, payload) in enumerate(workload.events(instrument, 9), start=1):
        event = wire.decode(wire.Event, payload)
        assert (seq, event.seq, event.instrument) == (expected_seq, expected_seq, "nmr-1")
        assert event.prev == prev
        public_key.verify(base64.b64decode(event.sig), wire.canonical(event))  # raises if forged
        assert event.from_state != event.to_state
        prev = wire.event_hash(event)
    assert topics.parse(instrument.topic) == (topics.Kind.EVENTS, "nmr-1")


def test_a_stream_rebuilt_in_another_process_is_byte_identical() -> None:
    """Load processes and resending senders rebuild streams; a resend must be a duplicate."""
    first, again = workload.fleet("xrd", 1)[0], workload.fleet("xrd", 1)[0]
    assert list(workload.events(first, 5)) == list(workload.events(again, 5))
    assert workload.fleet("xrd", 2)[1].seed != first.seed
