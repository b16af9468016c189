"""CLI: ``instrumetry dev up|down|status``, the local PostgreSQL + Mosquitto stack.

The stack itself lives in ``instrumetry.devstack`` (imported inside each
command, so other commands never load it); this module only maps options
to a ``DevStack`` and prints what it reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from instrumetry.devstack.stack import DevStack, StackStatus

app = typer.Typer(
    no_args_is_help=True,
    help="Run real PostgreSQL + TimescaleDB and Mosquitto locally, in a state folder.",
)

# Same defaults as instrumetry.devstack.stack, repeated so --help needs no psycopg import.
DEFAULT_STATE_DIR = Path(".instrumetry")
DEFAULT_PG_PORT = 55432
DEFAULT_MQTT_PORT = 18883

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="INSTRUMETRY_STATE_DIR",
        help="Folder holding the services' data, logs, credentials and the env file.",
    ),
]
PgPort = Annotated[
    int,
    typer.Option(
        "--pg-port",
        envvar="INSTRUMETRY_DEV_PG_PORT",
        min=1,
        max=65535,
        help="TCP port of PostgreSQL on 127.0.0.1.",
    ),
]
MqttPort = Annotated[
    int,
    typer.Option(
        "--mqtt-port",
        envvar="INSTRUMETRY_DEV_MQTT_PORT",
        min=1,
        max=65535,
        help="TCP port of Mosquitto on 127.0.0.1.",
    ),
]


def _stack(
    state_dir: Path, pg_port: int, mqtt_port: int, broker_auth: bool | None = None
) -> DevStack:
    from instrumetry.devstack.stack import DevStack

    return DevStack(state_dir, pg_port=pg_port, mqtt_port=mqtt_port, broker_auth=broker_auth)


def _print_status(status: StackStatus) -> None:
    for service in status.services:
        state = f"running  pid {service.pid}" if service.running else "stopped"
        typer.echo(f"{service.name:<10} {state:<20} port {service.port}  log {service.log_file}")


@app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    pg_port: PgPort = DEFAULT_PG_PORT,
    mqtt_port: MqttPort = DEFAULT_MQTT_PORT,
    broker_auth: Annotated[
        bool | None,
        typer.Option(
            "--broker-auth/--no-broker-auth",
            help="Require broker logins and apply the topic ACL, as production does; add agents "
            "with `instrumetry broker add-agent --password-file STATE/mosquitto/passwd "
            "--acl-file STATE/mosquitto/acl`. Default: as the stack was last brought up "
            "(no logins for a new one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the stack (idempotent), create the database, and write the env file."""
    stack = _stack(state_dir, pg_port, mqtt_port, broker_auth)
    info = stack.up()
    _print_status(stack.status())
    typer.echo(f"INSTRUMETRY_DATABASE_URL={info.database_url}")
    typer.echo(f"INSTRUMETRY_MQTT_URL={info.mqtt_url}")
    typer.echo(f"Both are in {info.env_file}; load them with: set -a; . {info.env_file}; set +a")


@app.command()
def down(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    pg_port: PgPort = DEFAULT_PG_PORT,
    mqtt_port: MqttPort = DEFAULT_MQTT_PORT,
) -> None:
    """Stop the stack (idempotent); the data stays for the next up."""
    stack = _stack(state_dir, pg_port, mqtt_port)
    stack.down()
    _print_status(stack.status())
    typer.echo(f"Data kept in {stack.state_dir}.")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    pg_port: PgPort = DEFAULT_PG_PORT,
    mqtt_port: MqttPort = DEFAULT_MQTT_PORT,
) -> None:
    """Show whether each service is running, with its pid and port."""
    _print_status(_stack(state_dir, pg_port, mqtt_port).status())
