"""Building an instrument's signed, hash-chained event stream.

The agent keeps a ``ChainHead`` (next sequence number and the hash of the last
event) on disk next to its outbox; each transition becomes the next event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from instrumetry.domain import wire
from instrumetry.domain.classify import Transition


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where an instrument's chain stands: the next seq and the last event's hash."""

    next_seq: int = 1
    prev: str = wire.GENESIS


def append(
    head: ChainHead,
    *,
    instrument: str,
    boot: str,
    transition: Transition,
    signer: Callable[[bytes], bytes],
) -> tuple[wire.Event, ChainHead]:
    """The signed event for ``transition`` and the chain head after it."""
    event = wire.sign(
        wire.Event(
            v=wire.SCHEMA_VERSION,
            instrument=instrument,
            boot=boot,
            seq=head.next_seq,
            t=transition.at_ms,
            from_state=transition.from_state,
            to_state=transition.to_state,
            power_w=None if transition.power_w is None else round(transition.power_w, 3),
            prev=head.prev,
        ),
        signer,
    )
    return event, ChainHead(head.next_seq + 1, wire.event_hash(event))
