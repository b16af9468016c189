"""Options shared by several commands, and the dev stack's env file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from instrumetry.domain.errors import ConfigError

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar="INSTRUMETRY_DATABASE_URL",
        help="PostgreSQL URL (default: the one `instrumetry dev up` wrote).",
        show_default=False,
    ),
]
MqttUrl = Annotated[
    str,
    typer.Option(
        "--mqtt-url",
        envvar="INSTRUMETRY_MQTT_URL",
        help=(
            "Broker URL, mqtt://[USER:PASSWORD@]host:port "
            "(default: the one `instrumetry dev up` wrote)."
        ),
        show_default=False,
    ),
]

FleetMqttUrl = Annotated[
    str | None,
    typer.Option(
        "--mqtt-url",
        help=(
            "Broker URL, mqtt://[USER:PASSWORD@]host:port (default: INSTRUMETRY_FLEET_MQTT_URL "
            "if it names the broker of INSTRUMETRY_MQTT_URL, as `instrumetry dev up` writes "
            "them, else INSTRUMETRY_MQTT_URL)."
        ),
        show_default=False,
    ),
]


def fleet_mqtt_url(given: str | None) -> str:
    """The broker URL a simulated fleet connects with: ``FleetMqttUrl``'s rule.

    A dev stack with broker logins writes the collector's login in
    ``INSTRUMETRY_MQTT_URL`` and the simulator's in ``INSTRUMETRY_FLEET_MQTT_URL``.
    A fleet URL of another broker, left over from an env file, never wins over
    a broker URL set by hand.
    """
    if given is not None:
        return given
    broker = os.environ.get("INSTRUMETRY_MQTT_URL")
    if broker is None:
        raise ConfigError(
            "no broker URL: give --mqtt-url or set INSTRUMETRY_MQTT_URL "
            "(`instrumetry dev up` writes it)"
        )
    fleet = os.environ.get("INSTRUMETRY_FLEET_MQTT_URL")
    return fleet if fleet is not None and _same_broker(fleet, broker) else broker


def _same_broker(one: str, other: str) -> bool:
    """Whether two MQTT URLs name the same host and port; a malformed one names none."""
    from collector.settings import parse_mqtt_url

    try:
        first, second = parse_mqtt_url(one), parse_mqtt_url(other)
    except ValueError:
        return False
    return (first.host, first.port) == (second.host, second.port)


def load_dev_env() -> None:
    """Fill unset ``INSTRUMETRY_*`` variables from the dev stack's env file.

    ``instrumetry dev up`` writes ``<state dir>/env``; reading it here lets every
    command find the local services without flags, while real deployments set
    the variables themselves (and those always win).
    """
    state_dir = Path(os.environ.get("INSTRUMETRY_STATE_DIR", ".instrumetry"))
    env_file = state_dir / "env"
    if not env_file.is_file():
        return
    for line in env_file.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("INSTRUMETRY_"):
            os.environ.setdefault(name.strip(), value.strip())
