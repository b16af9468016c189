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
