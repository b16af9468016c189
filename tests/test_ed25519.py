"""Ed25519 checks: libsodium's speed must never change OpenSSL's answer, and enrolment
refuses keys that no key generator makes."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from instrumetry.domain.ed25519 import PublicKey, key_problem
from instrumetry.domain.errors import WireError

KEY, OTHER = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
RAW = KEY.public_key().public_bytes_raw()
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point


def point(y: int, negative_x: bool = False) -> bytes:
    """The 32-byte encoding of a y coordinate (not reduced mod P) and the sign of x."""
    return (y | negative_x << 255).to_bytes(32, "little")


# Points of order 1, 2 and 4, and two non-canonical encodings (y = P is y = 0, y = P + 1 is 1).
SMALL_ORDER = [point(1), point(P - 1), point(0), point(0, True), point(P), point(P + 1)]


def openssl(raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def libsodium(raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        crypto_sign_open(signature + message, raw)
    except BadSignatureError:
        return False
    return True


def forgeries() -> list[tuple[bytes, bytes, bytes]]:
    """Degenerate signatures (``S = 0``, ``R`` of small order) under keys of small order."""
    zero = bytes(32)
    return [
        (key, r + zero, b"event %d" % n)
        for key in SMALL_ORDER
        for r in SMALL_ORDER
        for n in range(4)
    ]


def test_honest_signatures_verify_and_altered_ones_do_not() -> None:
    key = PublicKey(RAW)
    signature = KEY.sign(b"seq 1")
    assert key.verify(signature, b"seq 1")
    assert not key.verify(signature, b"seq 2")
    assert not key.verify(OTHER.sign(b"seq 1"), b"seq 1")
    s = int.from_bytes(signature[32:], "little")
    assert not key.verify(signature[:32] + (s + L).to_bytes(32, "little"), b"seq 1")  # S >= L
    assert not key.verify(b"", b"seq 1")


def test_a_short_signature_cannot_borrow_its_last_byte_from_the_message() -> None:
    signature = KEY.sign(b"rest")
    message = signature[-1:] + b"rest"  # the key holder chose the message's first byte
    assert libsodium(RAW, signature[:-1], message)  # read together, the two verify
    assert not PublicKey(RAW).verify(signature[:-1], message)


def test_every_verdict_is_openssls_where_libsodium_disagrees() -> None:
    items = forgeries()
    disagreements = [i for i in items if openssl(*i) != libsodium(*i)]
    assert disagreements, "the fallback to OpenSSL would go untested"
    assert all(openssl(*i) and not libsodium(*i) for i in disagreements)
    assert [PublicKey(raw).verify(sig, message) for raw, sig, message in items] == [
        openssl(*i) for i in items
    ]


def test_enrolment_refuses_what_no_key_generator_makes() -> None:
    assert key_problem(RAW) is None
    assert key_problem(RAW[:31]) == "an Ed25519 public key is 32 bytes, this is 31"
    for raw in [*SMALL_ORDER, b"\xff" * 32]:
        problem = key_problem(raw)
        assert problem is not None
        assert "prime-order subgroup" in problem


def test_keys_that_are_not_32_bytes_are_refused_when_loaded() -> None:
    with pytest.raises(WireError, match="5 bytes is not a raw Ed25519 key"):
        PublicKey(b"\x01" * 5)
