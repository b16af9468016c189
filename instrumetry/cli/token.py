"""``instrumetry token``: API tokens for admins, auditors and institutions.

The token is printed once, at creation; the database keeps only its hash, so
a lost token is revoked and replaced, never recovered.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl

app = typer.Typer(no_args_is_help=True, help="API access tokens (stored hashed).")


class RoleChoice(enum.StrEnum):
    """The roles of docs/API.md (mirrors api.auth.Role, which the CLI imports lazily)."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    INSTITUTION = "institution"


@app.command()
def create(
    database_url: DatabaseUrl,
    role: Annotated[
        RoleChoice,
        typer.Option(help="admin: all; auditor: read all; institution: read its own."),
    ],
    name: Annotated[str, typer.Option(help="Who or what holds the token, for `token list`.")],
    institution: Annotated[
        str | None, typer.Option(help="The institution id (only, and required, for that role).")
    ] = None,
) -> None:
    """Create a token and print it once; store it now, it cannot be shown again."""
    from api import auth
    from collector import db

    with db.connect(database_url) as conn:
        record, token = auth.create_token(conn, name, auth.Role(role.value), institution)
    typer.echo(f"created token {record.id} ({record.role}) for {record.name!r}", err=True)
    typer.echo(token)


@app.command(name="list")
def list_(database_url: DatabaseUrl) -> None:
    """List tokens (never their secrets): id, role, institution, name, created, revoked."""
    from api import auth
    from collector import db

    with db.connect(database_url) as conn:
        records = auth.list_tokens(conn)
    for r in records:
        revoked = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "live"
        typer.echo(
            f"{r.id}\t{r.role}\t{r.institution_id or '-'}\t{r.name}\t"
            f"created {r.created_at:%Y-%m-%d %H:%M}\t{revoked}"
        )


@app.command()
def revoke(
    database_url: DatabaseUrl,
    token_id: Annotated[int, typer.Argument(help="The id `token list` shows.", min=1)],
) -> None:
    """Revoke a token: requests with it are refused (401) from now on."""
    from api import auth
    from collector import db

    with db.connect(database_url) as conn:
        record = auth.revoke_token(conn, token_id)
    typer.echo(f"revoked token {record.id} ({record.role}, {record.name!r})")
