"""From one MQTT message to one typed row, or to a dead letter saying why not.

Sans-I/O on purpose: no broker, no database, no clock (the receive time is
passed in), so every way a payload can be wrong is testable with plain
values, and the same core serves the service, the benchmarks and the tests.
``parse_message`` never raises on input: the collector never crashes on a
message and never drops one silently.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from instrumetry.domain import topics, wire
from instrumetry.domain.errors import WireError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Reason(enum.StrEnum):
    """Why a message became a dead letter; stored in ``dead_letters.reason``."""

    MALFORMED = "malformed"  # not JSON at all
    SCHEMA_VERSION = "schema_version"  # JSON, but not a version this build reads
    INVALID = "invalid"  # a v1 message with a missing, unknown or out-of-range field
    TOPIC_MISMATCH = "topic_mismatch"  # the payload names another instrument than its topic
    OVERSIZED = "oversized"  # larger than wire.MAX_PAYLOAD_BYTES
    UNKNOWN_INSTRUMENT = "unknown_instrument"  # decided by the store: not in `instruments`
    CONFLICT = "conflict"  # decided by the store: same event key, different content
    REJECTED = "rejected"  # valid on the wire, but the database refused the row


@dataclass(frozen=True, slots=True)
class Received:
    """A message as it came off the wire, kept verbatim for any dead letter."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    """A valid event; ``event`` stays whole so its signature can be checked later."""

    source: Received
    event: wire.Event
    device_time: datetime
    signature: bytes
    boot_id: uuid.UUID
    """``event.boot`` as the database stores it, made here, before the storing thread."""

    @property
    def instrument_id(self) -> str:
        return self.event.instrument


@dataclass(frozen=True, slots=True)
class HeartbeatRow:
    """A valid heartbeat."""

    source: Received
    heartbeat: wire.Heartbeat
    device_time: datetime
    boot_id: uuid.UUID

    @property
    def instrument_id(self) -> str:
        return self.heartbeat.instrument


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A valid online/offline status announcement."""

    source: Received
    status: wire.Status
    device_time: datetime
    boot_id: uuid.UUID

    @property
    def instrument_id(self) -> str:
        return self.status.instrument


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the collector keeps but cannot accept, with the reason."""

    source: Received
    reason: Reason
    detail: str


Row = EventRow | HeartbeatRow | StatusRow
Parsed = Row | DeadLetter

_DECODERS: dict[topics.Kind, Callable[[bytes], wire.Event | wire.Heartbeat | wire.Status]] = {
    topics.Kind.EVENTS: functools.partial(wire.decode, wire.Event),
    topics.Kind.HEARTBEATS: functools.partial(wire.decode, wire.Heartbeat),
    topics.Kind.STATUS: functools.partial(wire.decode, wire.Status),
}
"""What the collector accepts, by topic kind: ``acks`` flow the other way."""


def parse_message(topic: str, payload: bytes, received_at: datetime) -> Parsed:
    """Validate one message against its topic; never raises on input."""
    source = Received(topic, payload, received_at)
    try:
        return _accept(source)
    except _Rejected as rejection:
        return DeadLetter(source, rejection.reason, rejection.detail)


class _Rejected(Exception):
    """The first problem ``_accept`` found, carried out as a reason and a detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _accept(source: Received) -> Row:
    """The row ``source`` stands for, or ``_Rejected`` with the first problem found."""
    if len(source.payload) > wire.MAX_PAYLOAD_BYTES:
        detail = f"payload of {len(source.payload)} bytes exceeds {wire.MAX_PAYLOAD_BYTES}"
        raise _Rejected(Reason.OVERSIZED, detail)
    try:
        kind, topic_instrument = topics.parse(source.topic)
    except WireError as error:
        raise _Rejected(Reason.INVALID, str(error)) from None
    decode = _DECODERS.get(kind)
    if decode is None:
        raise _Rejected(Reason.INVALID, f"the collector does not accept {kind} messages")
    try:
        message = decode(source.payload)
    except WireError as error:
        raise _Rejected(_decode_failure(source.payload), str(error)) from None
    if message.instrument != topic_instrument:
        raise _Rejected(
            Reason.TOPIC_MISMATCH,
            f"payload instrument {message.instrument!r} differs from topic instrument "
            f"{topic_instrument!r}",
        )
    try:
        return _row(source, message)
    except WireError as error:
        raise _Rejected(Reason.INVALID, str(error)) from None


def _decode_failure(payload: bytes) -> Reason:
    """Tell apart a payload that is no JSON, one of another version, and an invalid v1 one.

    Mirrors ``wire.decode``: a JSON object whose ``v`` is missing or not the
    supported version is a version problem, whatever else is wrong with it.
    """
    try:
        document = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return Reason.MALFORMED
    if isinstance(document, dict) and document.get("v") != wire.SCHEMA_VERSION:
        return Reason.SCHEMA_VERSION
    return Reason.INVALID


def _row(source: Received, message: wire.Event | wire.Heartbeat | wire.Status) -> Row:
    """The row of a decoded message.

    Raises ``WireError`` for values the wire allows but the database cannot hold.
    """
    device_time = _device_time(message.t)
    boot_id = uuid.UUID(hex=message.boot)  # 32 hex digits (wire.BootId): always a UUID
    match message:
        case wire.Event():
            signature = wire.signature_bytes(message)
            return EventRow(source, message, device_time, signature, boot_id)
        case wire.Heartbeat():
            return HeartbeatRow(source, message, device_time, boot_id)
        case wire.Status():
            return StatusRow(source, message, device_time, boot_id)


def _device_time(epoch_ms: int) -> datetime:
    """Epoch milliseconds as an aware datetime; the wire allows years Python cannot hold."""
    try:
        return _EPOCH + timedelta(milliseconds=epoch_ms)
    except OverflowError:
        raise WireError(f"device time {epoch_ms} ms is out of range") from None
