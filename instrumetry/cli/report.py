"""``instrumetry report``: usage reports in the terminal and annual reports as files."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from instrumetry.cli.options import DatabaseUrl

if TYPE_CHECKING:
    from api.annual import AnnualReport
    from api.queries import InstrumentRecord
    from instrumetry.domain.metrics import Usage
    from instrumetry.domain.timeset import Span

app = typer.Typer(no_args_is_help=True, help="Usage reports from the measured data.")

Institution = Annotated[
    str | None, typer.Option("--institution", help="Only this institution's instruments.")
]


def _bound(option: str, value: str) -> date | datetime:
    from api.periods import parse_bound

    try:
        return parse_bound(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


@app.command(name="startup-rate")
def startup_rate(
    start: Annotated[str, typer.Option("--from", help="Date (local day) or RFC 3339 instant.")],
    end: Annotated[str, typer.Option("--to", help="Date (inclusive) or RFC 3339 instant.")],
    database_url: DatabaseUrl,
    institution: Institution = None,
) -> None:
    """Startup rate, utilisation, effective hours and coverage per instrument, as a table."""
    from rich.console import Console
    from rich.table import Table

    from api import annual, periods
    from instrumetry.cli.asyncdb import connect

    first, last = _bound("--from", start), _bound("--to", end)
    periods.check(first, last)

    async def run() -> list[tuple[InstrumentRecord, Span, Usage]]:
        async with connect(database_url) as conn:
            return await annual.usage_by_instrument(conn, first, last, institution)

    table = Table(title=f"Startup rate {start} to {end}", caption=_CAPTION)
    for column in ("instrument", "name", "institution", "startup rate", "days on", "utilisation"):
        table.add_column(column, justify="left" if column in {"instrument", "name"} else "right")
    for column in ("effective h", "external h", "coverage"):
        table.add_column(column, justify="right")
    for record, _, usage in asyncio.run(run()):
        table.add_row(
            record.instrument.id,
            record.instrument.name,
            record.institution.id,
            _pct(usage.startup_rate),
            _pct(usage.days_on_share),
            _pct(usage.utilisation),
            f"{usage.effective_h:.1f}",
            f"{usage.external_h:.1f}",
            _pct(usage.coverage),
        )
    Console().print(table)


_CAPTION = (
    "startup rate = |ON ∩ W ∩ P| / |W ∩ P|; unknown time is never counted as off: "
    "read every rate with its coverage"
)


@app.command()
def annual(
    institution: Annotated[str, typer.Option("--institution", help="The institution id.")],
    year: Annotated[int, typer.Option("--year", min=2000, max=2100, help="Calendar year.")],
    out: Annotated[Path, typer.Option("--out", help="The file to write.")],
    database_url: DatabaseUrl,
    report_format: Annotated[
        Literal["csv", "pdf"], typer.Option("--format", help="csv or pdf.")
    ] = "csv",
) -> None:
    """The annual report of an institution, as CSV or PDF (as the API serves it)."""
    from api.annual import annual_report
    from api.annual_csv import render_csv
    from api.annual_pdf import render_pdf
    from instrumetry.cli.asyncdb import connect

    async def run() -> AnnualReport:
        async with connect(database_url) as conn:
            return await annual_report(conn, institution, year)

    report = asyncio.run(run())
    out.write_bytes(render_csv(report) if report_format == "csv" else render_pdf(report))
    typer.echo(
        f"{out}: {report_format} report of {institution} for {year}, {len(report.rows)} instruments"
    )
