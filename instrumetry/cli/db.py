"""``instrumetry db``: schema management."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl

app = typer.Typer(no_args_is_help=True, help="Database schema.")

OnlyInstrument = Annotated[str | None, typer.Option("--instrument", help="Only this instrument.")]


@app.command()
def migrate(database_url: DatabaseUrl) -> None:
    """Apply pending schema migrations (each once; running twice changes nothing)."""
    from collector import db, migrate

    with db.connect(database_url) as conn:
        applied = migrate.migrate(conn, report=typer.echo)
    typer.echo(f"database at {db.describe(database_url)} is up to date ({applied} applied)")


@app.command()
def rollups(
    database_url: DatabaseUrl,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Recompute the stored days (else only report what is stored)."
        ),
    ] = False,
    instrument: OnlyInstrument = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First local day (YYYY-MM-DD) to recompute; default: the instrument's first.",
        ),
    ] = None,
) -> None:
    """The daily usage rollups: report them, or rebuild them from the intervals.

    The collector keeps them up to date as events arrive; rebuild after
    importing data stored before rollups existed, or after an institution's
    calendar (time zone, working hours, holidays) changed.
    """
    from collector import db
    from collector import rollups as stored

    first = _rebuild_from(rebuild, instrument, start)
    with db.connect(database_url) as conn:
        if rebuild:
            instruments, days = stored.rebuild(conn, instrument, first)
            _found(instrument, instruments)
            typer.echo(f"recomputed {days} day(s) of {instruments} instrument(s)")
            return
        row = conn.execute(
            "SELECT count(*), count(DISTINCT instrument_id), min(day), max(day) FROM daily_usage"
        ).fetchone()
    days, instruments, earliest, latest = row if row else (0, 0, None, None)
    span = f", {earliest} to {latest}" if days else ""
    typer.echo(f"{days} day(s) stored for {instruments} instrument(s){span}")


@app.command()
def intervals(
    database_url: DatabaseUrl,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="Derive them again (else only report what is stored)."),
    ] = False,
    instrument: OnlyInstrument = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Day (YYYY-MM-DD, from 00:00 UTC) to derive them again from; "
            "default: the instrument's first event.",
        ),
    ] = None,
) -> None:
    """The state intervals derived from events: report them, or derive them again.

    The collector derives them as events arrive; derive them again after
    upgrading from a collector that derived them under older rules (before
    migration 0014 a restart whose Last Will was stored late was not made
    unknown time). The daily rollups after them are recomputed too.
    """
    from collector import db
    from collector import rebuild as derived

    first = _rebuild_from(rebuild, instrument, start)
    since = None if first is None else datetime.combine(first, time(), UTC)
    with db.connect(database_url) as conn:
        if rebuild:
            instruments, written, days = derived.rederive(conn, instrument, since)
            _found(instrument, instruments)
            typer.echo(
                f"derived {written} interval(s) and {days} day(s) again "
                f"for {instruments} instrument(s)"
            )
            return
        row = conn.execute(
            "SELECT count(*), count(DISTINCT instrument_id), min(start_time), max(start_time) "
            "FROM intervals"
        ).fetchone()
    count, instruments, earliest, latest = row if row else (0, 0, None, None)
    span = f", the first from {earliest:%Y-%m-%d %H:%M} UTC, the last from {latest:%Y-%m-%d %H:%M}"
    span = span if count else ""
    typer.echo(f"{count} interval(s) stored for {instruments} instrument(s){span}")


_HEARTBEAT_CHUNKS = """
SELECT count(*), min(range_start), max(range_end) FROM timescaledb_information.chunks
 WHERE hypertable_schema = current_schema() AND hypertable_name = 'heartbeats'
"""
_HEARTBEAT_SIZE = """
SELECT approximate_row_count('heartbeats'), pg_size_pretty(hypertable_size('heartbeats')),
       greatest(reltuples, 0)::bigint, pg_size_pretty(pg_total_relation_size(oid))
  FROM pg_class WHERE oid = 'power_hourly'::regclass
"""


@app.command()
def heartbeats(
    database_url: DatabaseUrl,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Drop the day chunks past --keep-days now (else only report what is stored).",
        ),
    ] = False,
    keep_days: Annotated[
        int,
        typer.Option(
            "--keep-days",
            envvar="INSTRUMETRY_HEARTBEAT_RETENTION_DAYS",
            min=0,
            help="Days of raw heartbeats to keep, as the collector's retention window "
            "(0: for good).",
        ),
    ] = 30,
) -> None:
    """The raw heartbeats and their hourly power statistics: report them, or prune now.

    The collector drops the heartbeat chunks past its retention window once an
    hour (INSTRUMETRY_HEARTBEAT_RETENTION_DAYS, 0: never); the hourly power
    statistics (``power_hours``) are kept for good.
    """
    from collector import db, power

    if prune and not keep_days:
        raise typer.BadParameter(
            "0 keeps heartbeats for good: give the days to keep", param_hint="--keep-days"
        )
    with db.connect(database_url, autocommit=True) as conn:
        if prune:
            before = datetime.now(UTC) - timedelta(days=keep_days)
            dropped = power.drop_heartbeats(conn, before)
            typer.echo(
                f"dropped {len(dropped)} heartbeat chunk(s) holding nothing from "
                f"{before:%Y-%m-%d %H:%M} UTC on (keeping {keep_days} days)"
            )
        chunks, first, last = conn.execute(_HEARTBEAT_CHUNKS).fetchone() or (0, None, None)
        rows, size, hours, hours_size = conn.execute(_HEARTBEAT_SIZE).fetchone() or (0, "", 0, "")
    span = f" from {first:%Y-%m-%d} to {last:%Y-%m-%d}" if chunks else ""
    typer.echo(
        f"heartbeats: about {rows} row(s) in {chunks} day chunk(s){span}, {size}; "
        f"hours of power kept: about {hours} row(s), {hours_size}"
    )


def _rebuild_from(rebuild: bool, instrument: str | None, start: str | None) -> date | None:
    """The ``--from`` day, checked like the options that only go with ``--rebuild``."""
    first: date | None = None
    if start is not None:
        try:
            first = date.fromisoformat(start)
        except ValueError:
            raise typer.BadParameter(
                f"expected a date (YYYY-MM-DD), got {start!r}", param_hint="--from"
            ) from None
    if not rebuild and (instrument is not None or first is not None):
        raise typer.BadParameter("only with --rebuild", param_hint="--instrument/--from")
    return first


def _found(instrument: str | None, instruments: int) -> None:
    """Exit 1 naming ``--instrument`` if it matched no instrument."""
    if instrument is not None and not instruments:
        typer.echo(f"error: no instrument has id {instrument!r}", err=True)
        raise typer.Exit(1)
