"""CLI: ``instrumetry broker``, the broker's logins and topic ACL.

Writes Mosquitto's password file and ACL file (by default the ones docker
compose mounts, ``deploy/mosquitto/auth``). Each agent logs in with its
instrument id and may publish only under that instrument and read only its
own acks; collector accounts read everything and write the acks; simulator
accounts, for a simulated fleet only, publish for every instrument and read
every instrument's acks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from instrumetry.domain.broker_auth import Account

app = typer.Typer(
    no_args_is_help=True,
    help="Broker logins: one per agent, one per collector, one per simulated fleet.",
)

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
    _add_account(Account.COLLECTOR, name, password, password_file, acl_file)


@app.command("add-simulator")
def add_simulator(
    name: Annotated[str, typer.Argument(help="The simulator account's login.")] = "simulator",
    password: Password = None,
    password_file: PasswordFile = _AUTH_DIR / "passwd",
    acl_file: AclFile = _AUTH_DIR / "acl",
) -> None:
    """Create or reset the account of `instrumetry sim fleet`: mqtt://NAME:PASSWORD@host:port.

    Its virtual agents share a few connections, so this login may publish for
    every instrument and read every instrument's acks. It cannot forge a real
    instrument's events (the collector checks each signature against the
    enrolled key), but heartbeats and status are unsigned: create it only where
    a simulated fleet is wanted, and `remove` it afterwards.
    """
    _add_account(Account.SIMULATOR, name, password, password_file, acl_file)


def _add_account(
    kind: Account, name: str, password: str | None, password_file: Path, acl_file: Path
) -> None:
    from instrumetry.devstack.broker_auth import AuthFiles

    secret = AuthFiles(password_file, acl_file).add_account(kind, name, password)
    typer.echo(f"{kind} login {name!r}, password {secret!r}")
    typer.echo(_RELOAD_HINT)


@app.command()
def remove(
    name: Annotated[
        str, typer.Argument(help="The login to delete (agent, collector or simulator).")
    ],
    password_file: PasswordFile = _AUTH_DIR / "passwd",
    acl_file: AclFile = _AUTH_DIR / "acl",
) -> None:
    """Delete a login: after a reload the broker refuses it."""
    from instrumetry.devstack.broker_auth import AuthFiles

    AuthFiles(password_file, acl_file).remove(name)
    typer.echo(f"removed {name!r}; {_RELOAD_HINT}")
