"""Realistic load for the collector: registered instruments and their signed event streams.

Benchmarks and fault tests must feed the collector what real agents send —
Ed25519-signed, hash-chained events of enrolled instruments — or a later
signature check would turn the whole load into dead letters and the figures
into fiction. Keys travel as 32-byte seeds, so a stream can be built in
another process from a picklable description.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.rows import TupleRow

from instrumetry.domain import chain, topics, wire
from instrumetry.domain.classify import Transition
from instrumetry.domain.states import State

INSTITUTION = "bench-lab"
START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday
STEP_MS = 60_000
"""One transition a minute per instrument: busy, but a plausible instrument's day."""

# off -> standby -> running -> standby -> off ..., with a meter reading at each.
_CYCLE = (
    (State.OFF, State.STANDBY, 912.5),
    (State.STANDBY, State.RUNNING, 2480.25),
    (State.RUNNING, State.STANDBY, 905.125),
    (State.STANDBY, State.OFF, 0.0),
)


@dataclass(frozen=True, slots=True)
class Instrument:
    """An instrument and its agent's signing key seed; picklable for worker processes."""

    id: str
    seed: bytes

    @property
    def boot(self) -> str:
        """A fixed boot id, so that a stream rebuilt in another process is byte-identical."""
        return hashlib.sha256(b"boot" + self.seed).hexdigest()[:32]

    @property
    def topic(self) -> str:
        return topics.topic(topics.Kind.EVENTS, self.id)

    @property
    def heartbeat_topic(self) -> str:
        return topics.topic(topics.Kind.HEARTBEATS, self.id)

    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def public_key(self) -> bytes:
        return (
            self.key()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )


def fleet(prefix: str, count: int) -> list[Instrument]:
    """``count`` instruments named ``<prefix>-<n>`` with deterministic keys."""
    return [
        Instrument(f"{prefix}-{n}", hashlib.sha256(f"{prefix}-{n}".encode()).digest())
        for n in range(count)
    ]


def register(conn: psycopg.Connection[TupleRow], instruments: list[Instrument]) -> None:
    """Enrol ``instruments`` and their agents' public keys, as the platform would."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO institutions (id, name) VALUES (%s, 'Benchmark lab') "
            "ON CONFLICT DO NOTHING",
            (INSTITUTION,),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO instruments (id, institution_id, name) VALUES (%s, %s, %s)",
                [(i.id, INSTITUTION, f"Instrument {i.id}") for i in instruments],
            )
            cur.executemany(
                "INSERT INTO agents (id, instrument_id, public_key) VALUES (%s, %s, %s)",
                [(f"agent-{i.id}", i.id, i.public_key()) for i in instruments],
            )


def events(
    instrument: Instrument, count: int, step_ms: int = STEP_MS
) -> Iterator[tuple[int, bytes]]:
    """The first ``count`` events of ``instrument`` as ``(seq, payload)``: signed and chained,
    ``step_ms`` apart from ``START_MS`` on."""
    sign = instrument.key().sign
    head = chain.ChainHead()
    for n, (from_state, to_state, power_w) in zip(
        range(count), itertools.cycle(_CYCLE), strict=False
    ):
        transition = Transition(START_MS + n * step_ms, from_state, to_state, power_w)
        event, head = chain.append(
            head, instrument=instrument.id, boot=instrument.boot, transition=transition, signer=sign
        )
        yield event.seq, wire.encode(event)


def heartbeats(instrument: Instrument, count: int) -> Iterator[bytes]:
    """The first ``count`` heartbeats of ``instrument``, a minute apart, as payloads."""
    for n in range(count):
        yield wire.encode(
            wire.Heartbeat(
                v=1,
                instrument=instrument.id,
                boot=instrument.boot,
                t=START_MS + 30_000 + n * STEP_MS,
                state=State.STANDBY,
                last_seq=0,
                samples=12,
                power_min_w=895.0,
                power_mean_w=905.125,
                power_max_w=917.5,
            )
        )
