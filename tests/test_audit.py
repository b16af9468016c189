"""The pure verification rules: signatures against enrolled keys, and chain links."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from instrumetry.domain import audit, wire
from instrumetry.domain.audit import Verification
from instrumetry.domain.ed25519 import PublicKey
from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def enrolled(key: Ed25519PrivateKey, retired_ms: int | None = None) -> audit.AgentKey:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return audit.AgentKey("agent", raw, retired_ms)


def public(key: Ed25519PrivateKey) -> PublicKey:
    return enrolled(key).public


def event(seq: int, prev: str = wire.GENESIS, key: Ed25519PrivateKey = KEY) -> wire.Event:
    unsigned = wire.Event(
        v=1,
        instrument="nmr-01",
        boot="00" * 16,
        seq=seq,
        t=1_767_600_000_000 + seq,
        from_state=State.OFF,
        to_state=State.STANDBY,
        power_w=912.5,
        prev=prev,
    )
    return wire.sign(unsigned, key.sign)


def test_a_signature_verifies_only_with_its_own_key() -> None:
    signed = event(1)
    assert audit.verify_signature(signed, public(KEY))
    assert not audit.verify_signature(signed, public(OTHER))


def test_any_change_to_a_signed_event_breaks_its_signature() -> None:
    altered = msgspec.structs.replace(event(1), power_w=10.0)
    assert not audit.verify_signature(altered, public(KEY))
    garbled = msgspec.structs.replace(event(1), sig="not base64!")
    assert not audit.verify_signature(garbled, public(KEY))


def test_signature_verdicts() -> None:
    signed = event(1)
    assert audit.signed_by_any(signed, []) is Verification.UNKNOWN_KEY
    assert audit.signed_by_any(signed, [enrolled(OTHER)]) is Verification.BAD_SIGNATURE
    assert audit.signed_by_any(signed, [enrolled(OTHER), enrolled(KEY)]) is Verification.OK


def test_a_retired_key_verifies_only_events_dated_before_its_retirement() -> None:
    signed = event(1)  # t = 1_767_600_000_001
    assert audit.signed_by_any(signed, [enrolled(KEY, retired_ms=signed.t + 1)]) is Verification.OK
    for retired in (signed.t, signed.t - 1):
        retired_key = [enrolled(KEY, retired_ms=retired)]
        assert audit.signed_by_any(signed, retired_key) is Verification.BAD_SIGNATURE


def test_chain_links() -> None:
    first = event(1)
    second = event(2, prev=wire.event_hash(first))
    assert audit.chain_link(first, None) is Verification.OK
    assert audit.chain_link(event(1, prev="ab" * 32), None) is Verification.CHAIN_BREAK
    assert audit.chain_link(second, first) is Verification.OK
    assert audit.chain_link(second, None) is Verification.GAP
    assert audit.chain_link(event(2, prev="ab" * 32), first) is Verification.CHAIN_BREAK
    with pytest.raises(ValueError, match="seq - 1"):
        audit.chain_link(event(3), first)


def test_a_signature_failure_outranks_the_chain() -> None:
    forged = event(2, prev="ab" * 32, key=OTHER)
    assert audit.verdict(forged, [enrolled(KEY)], None) is Verification.BAD_SIGNATURE
    assert audit.verdict(event(2), [enrolled(KEY)], None) is Verification.GAP
    assert Verification.GAP in audit.AUTHENTIC
    assert Verification.BAD_SIGNATURE not in audit.AUTHENTIC


def test_enrolled_keys_load_from_their_raw_bytes() -> None:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert audit.verify_signature(event(1), PublicKey(raw))
    with pytest.raises(WireError, match="31 bytes is not a raw Ed25519 key"):
        audit.AgentKey("agent", raw[:31])
