"""``instrumetry sim verify``: what the API reports, against the simulator's ground truth.

Reads a truth folder written by ``sim fleet`` (or the demo), asks the API for
the startup-rate report over exactly the simulated period and, if the API has
one, for its reconciliation of the service orders, and prints the error
distribution. Exits 1 when a target is missed (see ``sim.verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from instrumetry.domain.errors import ServiceError

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from sim.verify import Measured, Verdict

RECONCILIATION_PATH = "/api/v1/reconciliation"
PROBLEMS_SHOWN = 20


def verify(
    *,
    truth: Annotated[
        Path, typer.Option(help="Truth folder written by `sim fleet` or the demo.")
    ] = Path(".instrumetry/truth"),
    api_url: Annotated[str, typer.Option(help="Base URL of the API.")] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(envvar="INSTRUMETRY_API_TOKEN", help="API token (Bearer), if it needs one."),
    ] = None,
    reconciliation_path: Annotated[
        str, typer.Option(help="Path of the API's order reconciliation endpoint.")
    ] = RECONCILIATION_PATH,
) -> None:
    """Compare the API's figures with the ground truth; exit 1 if a target is missed.

    Per instrument: on, running and effective hours and the startup rate;
    per order: the reconciliation flags against the labels.
    """
    from rich.console import Console

    console = Console()
    verdict = check(console, truth, api_url, token=token, reconciliation_path=reconciliation_path)
    if not verdict.ok:
        raise typer.Exit(1)


def check(
    console: Console,
    truth: Path,
    api_url: str,
    *,
    token: str | None = None,
    reconciliation_path: str = RECONCILIATION_PATH,
) -> Verdict:
    """Fetch, compare and print; return the verdict (the demo calls this too)."""
    import httpx

    from sim.truth_files import load_fleet, load_intervals, load_labels
    from sim.verify import compare

    fleet = load_fleet(truth)
    intervals = load_intervals(truth)
    labels = load_labels(truth)
    period = {"from": fleet.start.isoformat(), "to": fleet.end.isoformat()}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=300) as client:
        report = _get(client, "/api/v1/reports/startup-rate", period)
        if report is None:
            raise ServiceError(f"{api_url}: no startup-rate report (404)")
        orders = _get(client, reconciliation_path, period)
    flags = None if orders is None else _flags(orders)
    verdict = compare(fleet, intervals, _measured(report), labels, flags)
    _print(console, verdict, fleet.poll_s)
    if orders is None:
        console.print(
            f"reconciliation endpoint not available ({reconciliation_path} answered 404): "
            f"{len(labels)} labelled orders not checked"
        )
    return verdict


def _get(client: httpx.Client, path: str, params: dict[str, str]) -> bytes | None:
    """The body of GET ``path``; ``None`` on 404; ``ServiceError`` on anything else."""
    import httpx

    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as error:
        raise ServiceError(f"{client.base_url}{path}: {error}") from None
    if response.status_code == 404:
        return None
    if response.status_code in (401, 403):
        raise ServiceError(f"{client.base_url}{path}: refused ({response.status_code}); --token?")
    if response.status_code != 200:
        raise ServiceError(
            f"{client.base_url}{path}: answered {response.status_code}: {response.text[:200]}"
        )
    return response.content


class _Row(msgspec.Struct):
    instrument_id: str
    on_scheduled_h: float
    running_scheduled_h: float
    effective_h: float
    startup_rate: float | None
    coverage: float | None


class _Report(msgspec.Struct):
    instruments: list[_Row]


class _Flag(msgspec.Struct):
    flag: str


class _Reconciled(msgspec.Struct):
    order_id: str
    flags: list[str | _Flag] = msgspec.field(default_factory=list)


class _Reconciliation(msgspec.Struct):
    orders: list[_Reconciled]


def _measured(body: bytes) -> list[Measured]:
    from sim.verify import Measured

    try:
        report = msgspec.json.decode(body, type=_Report)
    except msgspec.DecodeError as error:
        raise ServiceError(f"the startup-rate report is not as expected: {error}") from None
    return [
        Measured(
            r.instrument_id,
            r.on_scheduled_h,
            r.running_scheduled_h,
            r.effective_h,
            r.startup_rate,
            r.coverage,
        )
        for r in report.instruments
    ]


def _flags(body: bytes) -> dict[str, set[str]]:
    """Order id -> flags, from ``[...]`` or ``{"orders": [...]}`` of orders with ``flags``.

    A flag may be a string or an object with a ``flag`` field (its evidence alongside).
    """
    try:
        decoded = msgspec.json.decode(body, type=list[_Reconciled] | _Reconciliation)
    except msgspec.DecodeError as error:
        raise ServiceError(f"the reconciliation answer is not as expected: {error}") from None
    rows = decoded.orders if isinstance(decoded, _Reconciliation) else decoded
    return {row.order_id: {f if isinstance(f, str) else f.flag for f in row.flags} for row in rows}


def _print(console: Console, verdict: Verdict, poll_s: float) -> None:
    from rich.table import Table

    spread = Table(title="Measured vs knowable truth, absolute error per instrument")
    spread.add_column("metric")
    for column in ("mean", "p50", "p95", "max", "within allowance"):
        spread.add_column(column, justify="right")
    for row in verdict.spreads:
        scale, unit = (100.0, " pt") if row.metric == "startup_rate" else (60.0, " min")
        spread.add_row(
            row.metric,
            *(f"{scale * v:.2f}{unit}" for v in (row.mean, row.p50, row.p95, row.max)),
            f"{row.within}/{row.count}",
        )
    console.print(spread)
    console.print(f"(allowance: one {poll_s:g} s poll per transition and fault boundary)")
    totals = Table(title="Fleet totals (target: within 0.1%)")
    for column in ("metric", "measured h", "knowable truth h", "error", "real truth h"):
        totals.add_column(column, justify="right")
    for total in verdict.totals:
        totals.add_row(
            total.metric,
            f"{total.measured:,.2f}",
            f"{total.truth:,.2f}",
            f"{100 * total.relative_error:.4f}%",
            f"{total.real_truth:,.2f}",
        )
    console.print(totals)
    console.print(
        f"coverage: measured {100 * verdict.coverage_measured:.3f}%, "
        f"expected from the faults {100 * verdict.coverage_expected:.3f}%"
    )
    orders = verdict.orders
    if orders.available:
        console.print(
            f"orders: {orders.bad_flagged}/{orders.bad} labelled bad ones flagged, "
            f"{orders.honest_flagged}/{orders.honest} honest ones flagged, "
            f"{orders.missing} missing"
        )
    for problem in verdict.problems[:PROBLEMS_SHOWN]:
        console.print(f"[red]MISSED[/] {problem}")
    if len(verdict.problems) > PROBLEMS_SHOWN:
        console.print(f"... and {len(verdict.problems) - PROBLEMS_SHOWN} more")
    console.print("[green]all targets met[/]" if verdict.ok else "[red]targets missed[/]")
