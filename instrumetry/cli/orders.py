"""``instrumetry orders``: importing the sharing platform's service orders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl
from instrumetry.domain.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Service orders billed by the sharing platform.")


@app.command(name="import")
def import_orders(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON (array) or CSV file.")
    ],
    database_url: DatabaseUrl,
    file_format: Annotated[
        str, typer.Option("--format", help="json, csv, or auto (by the file's suffix).")
    ] = "auto",
) -> int:
    """Import orders, idempotent on the order id; bad rows are listed and skipped.

    Exits 1 when some rows were rejected (the others are stored all the same).
    """
    from api.orders import import_orders as store
    from instrumetry.cli.asyncdb import connect
    from instrumetry.domain.orders import parse_csv, parse_json

    kind = file.suffix.lower().lstrip(".") if file_format == "auto" else file_format
    if kind not in {"json", "csv"}:
        raise ConfigError(f"{file}: cannot tell JSON from CSV; pass --format json or --format csv")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{file}: not UTF-8 (byte {error.start}); save it as UTF-8") from None
    parsed = parse_json(text) if kind == "json" else parse_csv(text)

    async def run() -> None:
        async with connect(database_url) as conn:
            result = await store(conn, parsed)
        typer.echo(
            f"{file}: {result.received} rows: {result.inserted} new, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.rejected_rows} rejected"
        )
        for error in result.errors:
            where = f"{file}:{error.row}" + (f": {error.field}" if error.field else "")
            typer.echo(f"{where}: {error.message}", err=True)
        if result.errors:
            raise typer.Exit(1)

    asyncio.run(run())
    return 0
