"""Response bodies of the audit routes."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, Field

from api.audit import ChainEvidence
from instrumetry.domain.audit import utc_time
from instrumetry.domain.chain_audit import ChainReport, fingerprint


class EnrolledKey(BaseModel):
    agent_id: str
    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 public key.")
    fingerprint: str = Field(description="First 16 hex digits of the key's SHA-256.")
    retired_at: datetime | None = Field(
        description="When the agent was re-enrolled with another key or removed: the key "
        "verifies only events dated before it. Null for a current key."
    )


class ChainBreak(BaseModel):
    seq: int
    expected_prev: str = Field(description="SHA-256 of the previous event's canonical encoding.")
    found_prev: str


class SeqGap(BaseModel):
    first: int = Field(description="First missing seq.")
    last: int = Field(description="Last missing seq.")


class ForeignEvent(BaseModel):
    seq: int
    agent_id: str = Field(description="The agent of another instrument whose key signed it.")


class ChainAudit(BaseModel):
    """The verification of an instrument's signed, hash-chained events over a period."""

    instrument_id: str
    start: datetime = Field(description="Inclusive, UTC.")
    end: datetime = Field(description="Exclusive, UTC.")
    ok: bool = Field(description="No bad signature, foreign event, break, gap or duplicate.")
    anchored: bool = Field(
        description="The first event's `prev` was checked (genesis, or the event before it)."
    )
    events: int
    first_seq: int | None
    last_seq: int | None
    head: str | None = Field(description="Hash of the last event; pin it to detect rewrites.")
    keys: list[EnrolledKey]
    bad_signatures: list[int] = Field(description="Seqs whose signature no known key verifies.")
    foreign: list[ForeignEvent]
    breaks: list[ChainBreak]
    gaps: list[SeqGap]
    duplicates: list[int] = Field(description="Seqs stored twice with different content.")

    @classmethod
    def of(cls, evidence: ChainEvidence, report: ChainReport) -> ChainAudit:
        return cls(
            instrument_id=report.instrument_id,
            start=evidence.period[0],
            end=evidence.period[1],
            ok=report.ok,
            anchored=report.anchored,
            events=report.events,
            first_seq=report.first_seq,
            last_seq=report.last_seq,
            head=report.head,
            keys=[
                EnrolledKey(
                    agent_id=key.agent_id,
                    public_key=base64.b64encode(key.raw).decode(),
                    fingerprint=fingerprint(key.raw),
                    retired_at=None if key.retired_ms is None else utc_time(key.retired_ms),
                )
                for key in evidence.keys
            ],
            bad_signatures=report.bad_signatures,
            foreign=[ForeignEvent(seq=f.seq, agent_id=f.agent_id) for f in report.foreign],
            breaks=[
                ChainBreak(seq=b.seq, expected_prev=b.expected_prev, found_prev=b.found_prev)
                for b in report.breaks
            ],
            gaps=[SeqGap(first=g.first, last=g.last) for g in report.gaps],
            duplicates=report.duplicates,
        )
