"""``instrumetry audit``: verifying instruments' signed event chains, online and offline."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from instrumetry.cli.options import DatabaseUrl
from instrumetry.domain.errors import ConfigError

if TYPE_CHECKING:
    from instrumetry.domain.chain_audit import ChainReport

app = typer.Typer(no_args_is_help=True, help="Audit evidence: signatures and hash chains.")


def _bound(option: str, value: str) -> date | datetime:
    """A period bound, parsed as the API parses ``from``/``to``."""
    from api.periods import parse_bound

    try:
        return parse_bound(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


Instrument = Annotated[str, typer.Option("--instrument", help="The instrument id.")]
From = Annotated[
    str,
    typer.Option("--from", help="Date (local day of the institution) or RFC 3339 instant."),
]
To = Annotated[
    str,
    typer.Option("--to", help="Date (inclusive) or RFC 3339 instant (exclusive)."),
]


def _print(report: ChainReport) -> None:
    """The report in lines an auditor can paste into a finding."""
    seqs = f"seq {report.first_seq}..{report.last_seq}" if report.events else "no events"
    typer.echo(f"instrument {report.instrument_id}: {report.events} events, {seqs}")
    typer.echo(f"anchored: {'yes' if report.anchored else 'no (first prev not checkable)'}")
    if report.head:
        typer.echo(f"head: {report.head}")
    for seq in report.bad_signatures:
        typer.echo(f"BAD SIGNATURE: seq {seq} (altered or forged)")
    for foreign in report.foreign:
        typer.echo(f"FOREIGN: seq {foreign.seq} signed by agent {foreign.agent_id}")
    for brk in report.breaks:
        typer.echo(f"BREAK: seq {brk.seq} prev {brk.found_prev}, expected {brk.expected_prev}")
    for gap in report.gaps:
        typer.echo(f"GAP: seq {gap.first}..{gap.last} missing")
    for seq in report.duplicates:
        typer.echo(f"DUPLICATE: seq {seq} stored twice with different content")
    typer.echo("OK: the chain is intact" if report.ok else "FAILED: the chain is not intact")


@app.command()
def verify(instrument: Instrument, start: From, end: To, database_url: DatabaseUrl) -> None:
    """Verify signatures and hash chain of an instrument's events; exit 1 if not intact."""
    from api import audit
    from instrumetry.cli.asyncdb import connect

    period = _bound("--from", start), _bound("--to", end)

    async def run() -> ChainReport:
        async with connect(database_url) as conn:
            evidence = await audit.load_chain(conn, instrument, *period)
            if evidence is None:
                raise ConfigError(f"no instrument has id {instrument!r}")
            return await audit.verify(conn, evidence)

    report = asyncio.run(run())
    _print(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    instrument: Instrument,
    start: From,
    end: To,
    out: Annotated[Path, typer.Option("--out", help="The JSON-lines file to write.")],
    database_url: DatabaseUrl,
) -> None:
    """Export an instrument's events exactly as signed, with its public keys (docs/AUDIT.md)."""
    from api import audit
    from instrumetry.cli.asyncdb import connect
    from instrumetry.domain.chain_export import export_lines

    period = _bound("--from", start), _bound("--to", end)

    async def run() -> audit.ChainEvidence:
        async with connect(database_url) as conn:
            evidence = await audit.load_chain(conn, instrument, *period)
        if evidence is None:
            raise ConfigError(f"no instrument has id {instrument!r}")
        return evidence

    e = asyncio.run(run())
    out.write_bytes(b"".join(export_lines(e.instrument_id, e.period, e.keys, e.anchor, e.events)))
    typer.echo(f"{out}: {len(e.events)} events of {instrument}, {len(e.keys)} public key(s)")


@app.command(name="verify-export")
def verify_export(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An audit export.")],
    keys: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            help="A published public key (base64 of 32 raw bytes), used instead of the "
            "keys in the file; repeat for several. A retired key is KEY@TIME (ISO 8601 with "
            "offset): it verifies only events dated before TIME.",
        ),
    ] = None,
) -> None:
    """Verify an audit export offline, without any database; exit 1 if not intact."""
    from instrumetry.domain.chain_audit import verify_chain
    from instrumetry.domain.chain_export import published_key, read_export
    from instrumetry.domain.errors import WireError

    try:
        export = read_export(file.read_text(encoding="utf-8"))
        trusted = [published_key(key) for key in keys] if keys else export.keys
    except WireError as error:
        raise ConfigError(f"{file}: {error}") from None
    if not keys:
        typer.echo("note: using the keys in the file; compare them with the published keys")
    typer.echo(f"period: {export.start} to {export.end}")
    report = verify_chain(export.instrument_id, export.events, trusted, anchor=export.anchor)
    _print(report)
    if not report.ok:
        raise typer.Exit(1)
