"""The audit export: an instrument's events exactly as signed, with its public keys.

JSON lines, so an auditor can read it with any tool and verify it offline
(docs/AUDIT.md) without access to, or trust in, the platform's database:

- line 1, the header: ``{"format": "instrumetry.audit.export.v1", "instrument": ...,
  "from": ..., "to": ..., "keys": [{"agent": ..., "public_key": <base64 of the 32
  raw bytes>, "retired": <ISO 8601 time or null>}], "anchor_seq": <seq or null>}``;
  a retired key (its agent was re-enrolled or removed) verifies only events
  dated before its ``retired`` time;
- every further line, one event in its wire form (docs/PROTOCOL.md), in seq
  order. When ``anchor_seq`` is set, the first of them is the event just before
  the period, which lets the period's first ``prev`` be checked.

The keys in the file are only as trustworthy as the file: an auditor compares
them with the keys the platform publishes (or passes those instead).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from instrumetry.domain import wire
from instrumetry.domain.audit import AgentKey, epoch_ms, utc_time
from instrumetry.domain.errors import WireError

FORMAT: Final = "instrumetry.audit.export.v1"


@dataclass(frozen=True, slots=True)
class ChainExport:
    instrument_id: str
    start: str
    end: str
    keys: list[AgentKey]
    anchor: wire.Event | None
    events: list[wire.Event]


def export_lines(
    instrument_id: str,
    period: tuple[datetime, datetime],
    keys: Sequence[AgentKey],
    anchor: wire.Event | None,
    events: Sequence[wire.Event],
) -> Iterator[bytes]:
    """The export, one encoded line (with its newline) at a time."""
    header = {
        "format": FORMAT,
        "instrument": instrument_id,
        "from": period[0].isoformat(),
        "to": period[1].isoformat(),
        "keys": [
            {
                "agent": key.agent_id,
                "public_key": base64.b64encode(key.raw).decode(),
                "retired": _iso(key.retired_ms),
            }
            for key in keys
        ],
        "anchor_seq": None if anchor is None else anchor.seq,
    }
    yield json.dumps(header, ensure_ascii=False).encode() + b"\n"
    for event in [anchor, *events] if anchor is not None else events:
        yield wire.encode(event) + b"\n"


def read_export(text: str) -> ChainExport:
    """Parse an export, or raise ``WireError`` naming the line and the problem."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise WireError("empty export: expected a header line")
    header = _header(lines[0][1])
    events = []
    for number, line in lines[1:]:
        try:
            events.append(wire.decode(wire.Event, line.encode()))
        except WireError as error:
            raise WireError(f"line {number}: {error}") from None
    anchor = None
    if header["anchor_seq"] is not None:
        if not events or events[0].seq != header["anchor_seq"]:
            raise WireError(f"line 2: expected the anchor event, seq {header['anchor_seq']}")
        anchor, events = events[0], events[1:]
    return ChainExport(
        instrument_id=header["instrument"],
        start=header["from"],
        end=header["to"],
        keys=header["keys"],
        anchor=anchor,
        events=events,
    )


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError as error:
        raise WireError(f"line 1: malformed JSON header: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise WireError(f"line 1: not an Instrumetry audit export (expected format {FORMAT})")
    missing = [k for k in ("instrument", "from", "to", "keys", "anchor_seq") if k not in header]
    if missing:
        raise WireError(f"line 1: header lacks {', '.join(missing)}")
    anchor_seq = header["anchor_seq"]
    if anchor_seq is not None and (not isinstance(anchor_seq, int) or anchor_seq < 1):
        raise WireError(f"line 1: anchor_seq must be a seq or null, got {anchor_seq!r}")
    try:
        header["keys"] = parse_keys(header["keys"])
    except WireError as error:
        raise WireError(f"line 1: {error}") from None
    return header


def parse_keys(entries: object) -> list[AgentKey]:
    """``[{"agent": ..., "public_key": base64, "retired": ISO time or null}]`` as keys."""
    if not isinstance(entries, list):
        raise WireError("keys must be a list of {agent, public_key, retired}")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("public_key"), str):
            raise WireError(f"bad key entry {entry!r}")
        keys.append(
            AgentKey(
                agent_id=str(entry.get("agent", "")),
                raw=decode_key(entry["public_key"]),
                retired_ms=_retired_ms(entry.get("retired")),
            )
        )
    return keys


def published_key(text: str) -> AgentKey:
    """A key given by hand: ``BASE64`` or, for a retired one, ``BASE64@ISO-8601-TIME``."""
    raw, _, retired = text.partition("@")
    return AgentKey("", decode_key(raw), _retired_ms(retired or None))


def _iso(ms: int | None) -> str | None:
    return None if ms is None else utc_time(ms).isoformat()


def _retired_ms(text: object) -> int | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise WireError(f"key retired {text!r}: not an ISO 8601 time with an offset")
    return epoch_ms(when)


def decode_key(text: str) -> bytes:
    """A public key given as base64 of its 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise WireError(f"public key {text!r} is not base64") from None
    if len(raw) != 32:
        raise WireError(f"public key {text!r}: an Ed25519 key is 32 raw bytes, got {len(raw)}")
    return raw
