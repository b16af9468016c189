"""CLI: ``instrumetry broker``, the broker's logins and topic ACL.

Writes Mosquitto's password file and ACL file (by default the ones docker
compose mounts, ``deploy/mosquitto/auth``). Each agent logs in with its
instrument id and may publish only under that instrument and read only its
own acks; collector accounts read everything and write the acks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Broker logins: one per agent, one per collector.")

_AUTH_DIR = Path("deploy/mosquitto/auth")
PasswordFile = Annotated[
    Path,
    typer.Option(
        envvar="INSTRUMETRY_BROKER_PASSWORD_FILE",
        help="Mosquitto password file (created if missing).",
    ),
]
AclFile = Annotated[
    Path,
    typer.Option(envvar="INSTRUMETRY_BROKER_ACL_FILE", help="Mosquitto ACL file (rewritten)."),
]
Password = Annotated[
    str | None,
    typer.Option(help="The password to set (default: a new random one, printed once)."),
]
_RELOAD_HINT = (
    "reload the broker to apply: `docker compose kill -s HUP mosquitto`, or SIGHUP to its pid"
)


@app.command("add-agent")
def add_agent(
    instrument: Annotated[str, typer.Argument(help="The instrument id: the agent's login.")],
    password: Password = None,
    password_file: PasswordFile = _AUTH_DIR / "passwd",
    acl_file: AclFile = _AUTH_DIR / "acl",
) -> None:
    """Create or reset the broker login of an instrument's agent.

    Put the printed username and password in the [broker] section of the
    agent's config file.
    """
    from instrumetry.devstack.broker_auth import AuthFiles

    secret = AuthFiles(password_file, acl_file).add_agent(instrument, password)
    typer.echo(f"username = {instrument!r}")
    typer.echo(f"password = {secret!r}")
    typer.echo(_RELOAD_HINT)


@app.command("add-collector")
def add_collector(
    name: Annotated[str, typer.Argument(help="The collector account's login.")] = "collector",
    password: Password = None,
    password_file: PasswordFile = _AUTH_DIR / "passwd",
    acl_file: AclFile = _AUTH_DIR / "acl",
) -> None:
    """Create or reset a collector account; use it as mqtt://NAME:PASSWORD@host:port."""
    from instrumetry.devstack.broker_auth import AuthFiles

    secret = AuthFiles(password_file, acl_file).add_collector(name, password)
    typer.echo(f"collector login {name!r}, password {secret!r}")
    typer.echo(_RELOAD_HINT)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="The login to delete (agent or collector).")],
    password_file: PasswordFile = _AUTH_DIR / "passwd",
    acl_file: AclFile = _AUTH_DIR / "acl",
) -> None:
    """Delete a login: after a reload the broker refuses it."""
    from instrumetry.devstack.broker_auth import AuthFiles

    AuthFiles(password_file, acl_file).remove(name)
    typer.echo(f"removed {name!r}; {_RELOAD_HINT}")
