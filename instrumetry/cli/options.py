"""Options shared by several commands, and the dev stack's env file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

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
    str,
    typer.Option(
        "--mqtt-url",
        envvar=["INSTRUMETRY_FLEET_MQTT_URL", "INSTRUMETRY_MQTT_URL"],
        help=(
            "Broker URL of the simulated fleet, mqtt://[USER:PASSWORD@]host:port; where the "
            "broker wants logins, the simulator's account (default: the one `instrumetry dev up` "
            "wrote)."
        ),
        show_default=False,
    ),
]


def load_dev_env() -> None:
    """Fill unset ``INSTRUMETRY_*`` variables from the dev stack's env file.

    ``instrumetry dev up`` writes ``<state dir>/env``; reading it here lets every
    command find the local services without flags, while real deployments set
    the variables themselves (and those always win: a broker URL set by hand is
    not overridden by the dev stack's fleet URL either).
    """
    state_dir = Path(os.environ.get("INSTRUMETRY_STATE_DIR", ".instrumetry"))
    env_file = state_dir / "env"
    if not env_file.is_file():
        return
    skipped = {"INSTRUMETRY_FLEET_MQTT_URL"} if "INSTRUMETRY_MQTT_URL" in os.environ else set()
    for line in env_file.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("INSTRUMETRY_") and name.strip() not in skipped:
            os.environ.setdefault(name.strip(), value.strip())
