"""``instrumetry db``: schema management."""

from __future__ import annotations

import typer

from instrumetry.cli.options import DatabaseUrl

app = typer.Typer(no_args_is_help=True, help="Database schema.")


@app.command()
def migrate(database_url: DatabaseUrl) -> None:
    """Apply pending schema migrations (each once; running twice changes nothing)."""
    from collector import db, migrate

    with db.connect(database_url) as conn:
        applied = migrate.migrate(conn, report=typer.echo)
    typer.echo(f"database at {db.describe(database_url)} is up to date ({applied} applied)")
