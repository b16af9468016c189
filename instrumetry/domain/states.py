"""Instrument states, as the agent derives them and every report counts them."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """What an instrument is doing, as far as its agent can tell.

    ``UNKNOWN`` means no data (agent offline, meter unreachable). It is never
    counted as ``OFF``: "agent offline" and "instrument off" are different facts.
    """

    OFF = "off"
    STANDBY = "standby"
    RUNNING = "running"
    UNKNOWN = "unknown"


ON_STATES = frozenset({State.STANDBY, State.RUNNING})
"""Powered on: the startup rate counts these."""
