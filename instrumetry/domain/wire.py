"""The wire format of ``instrumetry/v1`` messages (see docs/PROTOCOL.md).

Payloads are JSON objects decoded with msgspec, which validates types and
ranges in one pass and names the offending field in its error. Events are
signed with Ed25519 over a canonical text encoding, and chained per instrument
by the SHA-256 of the previous event's canonical encoding, so an auditor can
prove that no event was removed, altered or inserted.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Annotated, Final, Literal, TypeVar, cast

import msgspec

from instrumetry.domain.errors import WireError
from instrumetry.domain.states import State

SCHEMA_VERSION: Final = 1
GENESIS: Final = "0" * 64
"""The ``prev`` of the first event an instrument ever sends."""
MAX_PAYLOAD_BYTES: Final = 16_384

InstrumentId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
BootId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Watts = Annotated[float, msgspec.Meta(ge=0, le=1e7)]


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One state transition of one instrument, signed by its agent."""

    v: int
    instrument: InstrumentId
    boot: BootId
    seq: Seq
    t: EpochMs
    from_state: State = msgspec.field(name="from")
    to_state: State = msgspec.field(name="to")
    power_w: Watts | None = None
    prev: Sha256Hex = GENESIS
    sig: str = ""


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Liveness and power statistics since the previous heartbeat."""

    v: int
    instrument: InstrumentId
    boot: BootId
    t: EpochMs
    state: State
    last_seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    samples: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    """Bounded like every integer here by the column that stores it (``bigint``, ``integer``)."""
    power_min_w: Watts | None = None
    power_mean_w: Watts | None = None
    power_max_w: Watts | None = None


class Status(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Retained agent status; the ``offline`` one is the agent's MQTT Last Will."""

    v: int
    instrument: InstrumentId
    boot: BootId
    status: Literal["online", "offline"]
    t: EpochMs


class Ack(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The collector's word that these events of an instrument are committed."""

    v: int
    instrument: InstrumentId
    seqs: list[Seq]


Message = Event | Heartbeat | Status | Ack
M = TypeVar("M", Event, Heartbeat, Status, Ack)

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Message], msgspec.json.Decoder[Message]] = {}


def encode(message: Message) -> bytes:
    """Serialise a message to its JSON payload."""
    return _encoder.encode(message)


class _Versioned(msgspec.Struct):
    v: object = None


def decode(kind: type[M], payload: bytes) -> M:
    """Parse and validate a payload, or raise ``WireError`` naming the problem."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        message = decoder.decode(payload)
    except msgspec.ValidationError as error:
        _check_version(payload)
        raise WireError(f"invalid {kind.__name__.lower()}: {error}") from None
    except msgspec.DecodeError as error:
        raise WireError(f"malformed JSON: {error}") from None
    if message.v != SCHEMA_VERSION:
        _check_version(payload)
    return cast(M, message)


def _check_version(payload: bytes) -> None:
    """Name a wrong schema version before any field error it would explain."""
    try:
        version = msgspec.json.decode(payload, type=_Versioned).v
    except msgspec.MsgspecError:
        return
    if version != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {version!r} (this build reads v1)")


def canonical(event: Event) -> bytes:
    """The exact bytes that are signed and hashed (docs/PROTOCOL.md, "Signing").

    A newline-separated text form rather than JSON, so a PLC or a shell script
    can produce it without a canonical-JSON library. Power has three decimals.
    """
    power = "" if event.power_w is None else f"{event.power_w:.3f}"
    fields = (
        "instrumetry.event.v1",
        event.instrument,
        event.boot,
        str(event.seq),
        str(event.t),
        event.from_state.value,
        event.to_state.value,
        power,
        event.prev,
    )
    return "\n".join(fields).encode()


def event_hash(event: Event) -> str:
    """The chain link: hex SHA-256 of the event's canonical encoding."""
    return hashlib.sha256(canonical(event)).hexdigest()


def sign(event: Event, signer: Callable[[bytes], bytes]) -> Event:
    """Return ``event`` with its signature (``signer`` is an Ed25519 private key's sign)."""
    signature = base64.b64encode(signer(canonical(event))).decode()
    return msgspec.structs.replace(event, sig=signature)


def signature_bytes(event: Event) -> bytes:
    """The raw signature, or ``WireError`` if it is not valid base64."""
    try:
        return base64.b64decode(event.sig, validate=True)
    except ValueError:
        raise WireError(f"event seq {event.seq}: signature is not base64") from None
