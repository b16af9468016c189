"""Verifying an instrument's signed, hash-chained events, as an auditor would.

The check needs nothing but the events exactly as signed and the public keys
the agents enrolled, so it runs the same on the database (``GET
/api/v1/audit/...``) and offline on an export (docs/AUDIT.md), without
trusting whoever administers the database. What it proves, per event sorted by
seq:

- its Ed25519 signature verifies with a key enrolled for the instrument and
  in force at the event's time (``audit.AgentKey``; otherwise it was altered or
  forged, or signed with a retired key: ``bad_signatures``), or with a key
  enrolled for another instrument (``foreign``: copied from another agent);
- its ``prev`` is the SHA-256 of the canonical encoding of the event with the
  previous seq (otherwise an event was altered, removed and renumbered, or
  inserted: ``breaks``);
- seqs follow each other by one (otherwise events are missing: ``gaps``), and
  no seq appears twice with different content (``duplicates``).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from instrumetry.domain import wire
from instrumetry.domain.audit import AgentKey
from instrumetry.domain.states import State

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the collector stores it (the ``events`` table's columns)."""

    instrument_id: str
    boot_id: uuid.UUID
    seq: int
    device_time: datetime
    from_state: State
    to_state: State
    power_w: float | None
    prev_hash: bytes
    signature: bytes


def to_wire(stored: StoredEvent) -> wire.Event:
    """The event exactly as its agent signed it: boot hex, t in ms, prev hex, sig base64."""
    return wire.Event(
        v=wire.SCHEMA_VERSION,
        instrument=stored.instrument_id,
        boot=stored.boot_id.hex,
        seq=stored.seq,
        t=(stored.device_time - _EPOCH) // timedelta(milliseconds=1),
        from_state=stored.from_state,
        to_state=stored.to_state,
        power_w=stored.power_w,
        prev=stored.prev_hash.hex(),
        sig=base64.b64encode(stored.signature).decode(),
    )


@dataclass(frozen=True, slots=True)
class Break:
    """An event whose ``prev`` is not the hash of the event with the previous seq."""

    seq: int
    expected_prev: str
    found_prev: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first``..``last`` (inclusive) are missing."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Foreign:
    """An event signed with the key of another instrument's agent."""

    seq: int
    agent_id: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    instrument_id: str
    events: int
    first_seq: int | None
    last_seq: int | None
    head: str | None
    """Hash of the last event: an auditor who pins it detects any later rewrite."""
    anchored: bool
    """Whether the first event's ``prev`` could be checked (genesis, or the event before it)."""
    bad_signatures: list[int] = field(default_factory=list)
    foreign: list[Foreign] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was removed, altered or inserted in the checked range."""
        problems = (self.bad_signatures, self.foreign, self.breaks, self.gaps, self.duplicates)
        return not any(problems)


def verify_chain(
    instrument_id: str,
    events: Iterable[wire.Event],
    keys: Sequence[AgentKey],
    *,
    anchor: wire.Event | None = None,
    foreign_keys: Sequence[AgentKey] = (),
) -> ChainReport:
    """Check ``events`` of one instrument (any order) against its ``keys``, current and retired.

    ``anchor`` is the event just before the checked range (the one with the
    highest seq below it), so a period's first ``prev`` can be checked too;
    without it, a range starting at seq 1 must start from the genesis hash and
    any other start is reported as not anchored. ``foreign_keys`` (other
    instruments' agents) tell a forged event from one copied from another agent.
    """
    ordered = sorted(events, key=lambda e: e.seq)
    report = ChainReport(
        instrument_id=instrument_id,
        events=len(ordered),
        first_seq=ordered[0].seq if ordered else None,
        last_seq=ordered[-1].seq if ordered else None,
        head=wire.event_hash(ordered[-1]) if ordered else None,
        anchored=anchor is not None or (bool(ordered) and ordered[0].seq == 1),
    )
    previous = anchor
    for event in ordered:
        if not any(key.signed(event) for key in keys):
            other = next((key for key in foreign_keys if key.signed(event)), None)
            if other is None:
                report.bad_signatures.append(event.seq)
            else:
                report.foreign.append(Foreign(event.seq, other.agent_id))
        _link(report, previous, event)
        previous = event
    return report


def _link(report: ChainReport, previous: wire.Event | None, event: wire.Event) -> None:
    """Record how ``event`` follows ``previous``: a link, a gap, a break or a duplicate."""
    if previous is None:
        if event.seq == 1 and event.prev != wire.GENESIS:
            report.breaks.append(Break(event.seq, wire.GENESIS, event.prev))
        return
    if event.seq == previous.seq:
        if wire.canonical(event) != wire.canonical(previous):
            report.duplicates.append(event.seq)
        return
    if event.seq > previous.seq + 1:
        report.gaps.append(Gap(previous.seq + 1, event.seq - 1))
        return
    expected = wire.event_hash(previous)
    if event.prev != expected:
        report.breaks.append(Break(event.seq, expected, event.prev))


def fingerprint(raw_key: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw_key).hexdigest()[:16]
