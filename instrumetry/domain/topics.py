"""MQTT topic names: pure string logic, kept apart from any client.

Every topic lives under ``instrumetry/v1/`` and ends with the instrument id,
so a broker ACL can pin each agent to its own instrument with one pattern.
"""

from __future__ import annotations

import enum
import re

from instrumetry.domain.errors import WireError

ROOT = "instrumetry/v1"
INSTRUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Instrument ids are safe in topics, URLs, file names and CSV cells."""


class Kind(enum.StrEnum):
    """What a topic carries; the second level of the topic tree."""

    EVENTS = "events"  # agent -> collector: signed state transitions (QoS 1)
    HEARTBEATS = "heartbeats"  # agent -> collector: liveness and power statistics
    STATUS = "status"  # agent (and its Last Will) -> anyone: retained online/offline
    ACKS = "acks"  # collector -> agent: which events are committed in the database


def check_instrument_id(instrument_id: str) -> str:
    """Return ``instrument_id`` if it is valid, else raise a ``WireError`` naming it."""
    if not INSTRUMENT_ID.fullmatch(instrument_id):
        raise WireError(
            f"instrument id {instrument_id!r} is invalid: use 1-64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return instrument_id


def topic(kind: Kind, instrument_id: str) -> str:
    """The topic of ``kind`` for one instrument."""
    return f"{ROOT}/{kind}/{check_instrument_id(instrument_id)}"


def subscription(kind: Kind) -> str:
    """The wildcard that matches ``kind`` for every instrument."""
    return f"{ROOT}/{kind}/+"


def parse(topic_name: str) -> tuple[Kind, str]:
    """Split a topic into its kind and instrument id, or raise ``WireError``."""
    parts = topic_name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise WireError(f"topic {topic_name!r} is not of the form {ROOT}/<kind>/<instrument>")
    try:
        kind = Kind(parts[2])
    except ValueError:
        raise WireError(f"topic {topic_name!r}: unknown kind {parts[2]!r}") from None
    return kind, check_instrument_id(parts[3])
