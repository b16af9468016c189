"""Ed25519 verification at libsodium's speed, with OpenSSL's answers.

Checking signatures is most of the collector's CPU time: every event's is
checked on arrival. libsodium (PyNaCl) verifies in about half the time of
OpenSSL (``cryptography``), but the two do not accept exactly the same
signatures: libsodium also refuses keys and ``R`` points of small order,
which OpenSSL's cofactorless check lets through when the equation holds.
Whatever libsodium accepts, OpenSSL accepts too (both compare the encoding of
``[S]B - [h]A`` with ``R``, and libsodium checks more before), so a signature
libsodium accepts is valid, and one it refuses is asked of OpenSSL, whose
word is final. The verdict is therefore always OpenSSL's, as an auditor
checking an export with ``cryptography`` or ``openssl pkeyutl`` gets it
(docs/AUDIT.md); only forged or degenerate signatures pay for both checks.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.bindings import (
    crypto_core_ed25519_is_valid_point,
    crypto_sign_BYTES,
    crypto_sign_open,
    crypto_sign_PUBLICKEYBYTES,
)
from nacl.exceptions import BadSignatureError

from instrumetry.domain.errors import WireError


class PublicKey:
    """An Ed25519 public key from its 32 raw bytes; ``WireError`` if they are not one."""

    __slots__ = ("_openssl", "raw")

    def __init__(self, raw: bytes) -> None:
        try:
            self._openssl = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise WireError(f"public key of {len(raw)} bytes is not a raw Ed25519 key") from None
        self.raw = raw

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``, as OpenSSL decides."""
        # A shorter signature would take its last bytes from the message: libsodium
        # reads the two concatenated.
        if len(signature) == crypto_sign_BYTES:
            try:
                crypto_sign_open(signature + message, self.raw)
            except BadSignatureError:
                pass
            else:
                return True
        try:
            self._openssl.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_problem(raw: bytes) -> str | None:
    """What makes ``raw`` unfit to enroll as an agent's public key; ``None`` if it is fit.

    A key that an Ed25519 key generator made is a point of the curve's
    prime-order subgroup, encoded canonically; enrolment refuses anything
    else. A key of small order is worse than useless: OpenSSL accepts, for
    any message, signatures that anyone can make (``S = 0``, ``R`` the
    identity), so it would let anyone sign events for the instrument.
    """
    if len(raw) != crypto_sign_PUBLICKEYBYTES:
        return f"an Ed25519 public key is {crypto_sign_PUBLICKEYBYTES} bytes, this is {len(raw)}"
    if not crypto_core_ed25519_is_valid_point(raw):
        return (
            "these 32 bytes are no Ed25519 public key that a key generator makes "
            "(not a point of the curve's prime-order subgroup)"
        )
    return None
