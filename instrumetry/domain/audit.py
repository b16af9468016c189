"""Checking events against their agent's key and their instrument's hash chain.

Pure: keys and neighbouring events come in as values, verdicts go out. The
collector checks each event on arrival and stores the verdict; an auditor's
tools (the API's audit endpoint) run the same checks over stored events, so
the two can never disagree on what "verified" means.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from instrumetry.domain import wire
from instrumetry.domain.ed25519 import PublicKey
from instrumetry.domain.errors import WireError


class Verification(enum.StrEnum):
    """An event's verdict, stored in ``events.verification``.

    Only ``bad_signature`` and ``unknown_key`` events are excluded from usage:
    they may not come from the instrument's agent at all. Chain verdicts
    concern the sequence, not the event's authenticity; they are flagged for
    the auditor and the event counts.
    """

    OK = "ok"  # signed by an enrolled key; its prev is the hash of the stored seq - 1
    GAP = "gap"  # signed, but seq - 1 is not stored (yet): checked again when it arrives
    CHAIN_BREAK = "chain_break"  # signed, but prev differs from the hash of the stored seq - 1
    BAD_SIGNATURE = "bad_signature"  # no key of the instrument in force at its time signed it
    UNKNOWN_KEY = "unknown_key"  # the instrument has no enrolled agent key to check against


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

AUTHENTIC = frozenset({Verification.OK, Verification.GAP, Verification.CHAIN_BREAK})
"""Verdicts of events whose signature an enrolled key verified: these count in usage."""


def signed_message(event: wire.Event) -> tuple[bytes, bytes] | None:
    """``(signature, message)``, as ``verify_signature`` checks them; ``None`` if garbled."""
    try:
        return wire.signature_bytes(event), wire.canonical(event)
    except WireError:
        return None


def verify_signature(event: wire.Event, public_key: PublicKey) -> bool:
    """Whether ``event.sig`` is ``public_key``'s signature of the event's canonical encoding."""
    signed = signed_message(event)
    return signed is not None and public_key.verify(*signed)


@dataclass(frozen=True, slots=True)
class AgentKey:
    """A public key enrolled for an instrument's agent, current or retired.

    Re-enrolling an agent (a reinstalled PC, a new key) retires its old key
    rather than forgetting it: the old key still verifies what it signed
    before ``retired_ms`` (history under audit, an old outbox drained late)
    and nothing dated from then on.
    """

    agent_id: str
    raw: bytes
    retired_ms: int | None = None
    """Epoch ms from which the key verifies nothing; ``None`` while it is current."""
    public: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public", PublicKey(self.raw))

    def in_force(self, event: wire.Event) -> bool:
        """Whether this key was enrolled at ``event``'s time: it verifies nothing dated later."""
        return self.retired_ms is None or event.t < self.retired_ms

    def signed(self, event: wire.Event) -> bool:
        """Whether this key signed ``event`` while it was enrolled."""
        return self.in_force(event) and verify_signature(event, self.public)


def epoch_ms(when: datetime) -> int:
    """``when`` (timezone-aware) in epoch milliseconds, rounded up: a key retired at
    12:00:00.0004 still verifies an event dated 12:00:00.000."""
    return -((_EPOCH - when) // _MS)


def utc_time(ms: int) -> datetime:
    """Epoch milliseconds as a UTC time, exactly."""
    return _EPOCH + ms * _MS


def signed_by_any(event: wire.Event, keys: Iterable[AgentKey]) -> Verification:
    """``unknown_key`` without keys, ``bad_signature`` if none signed it, else ``ok``.

    An instrument may have several keys (two agents, or a re-enrolled one
    whose retired key signed the older events), so any one will do.
    """
    keys = list(keys)
    if not keys:
        return Verification.UNKNOWN_KEY
    if any(key.signed(event) for key in keys):
        return Verification.OK
    return Verification.BAD_SIGNATURE


def chain_link(event: wire.Event, previous: wire.Event | None) -> Verification:
    """How ``event`` links to ``previous``, the stored event of seq ``event.seq - 1``.

    ``previous`` is ``None`` when no such event is stored; the first event of
    an instrument (seq 1) must then carry the genesis hash.
    """
    if event.seq == 1:
        return Verification.OK if event.prev == wire.GENESIS else Verification.CHAIN_BREAK
    if previous is None:
        return Verification.GAP
    if previous.seq != event.seq - 1 or previous.instrument != event.instrument:
        raise ValueError("previous must be the same instrument's event of seq - 1")
    return Verification.OK if event.prev == wire.event_hash(previous) else Verification.CHAIN_BREAK


def verdict(
    event: wire.Event, keys: Iterable[AgentKey], previous: wire.Event | None
) -> Verification:
    """The stored verdict: a signature failure first, else how the chain links."""
    return linked(signed_by_any(event, keys), event, previous)


def linked(signed: Verification, event: wire.Event, previous: wire.Event | None) -> Verification:
    """``verdict`` of ``event`` given ``signed``, what ``signed_by_any`` said of it.

    Separate so a caller can check signatures (the costly part, needing only
    the event and the keys) apart from the chain, which needs the stored
    predecessor; both ways give the same verdict.
    """
    return signed if signed is not Verification.OK else chain_link(event, previous)
