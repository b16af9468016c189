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
IMPORT_PATH = "/api/v1/orders/import"
IMPORT_BATCH = 5000  # orders per request: well under the API's 32 MiB body limit
PAGE = 1000  # the reconciliation endpoint's largest page
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
    import_orders: Annotated[
        bool,
        typer.Option(help="First import the truth's orders.json (idempotent on the order id)."),
    ] = True,
) -> None:
    """Compare the API's figures with the ground truth; exit 1 if a target is missed.

    Per instrument: on, running and effective hours and the startup rate;
    per order: the reconciliation flags against the labels.
    """
    from rich.console import Console

    console = Console()
    verdict = check(console, truth, api_url, token=token, import_orders=import_orders)
    if not verdict.ok:
        raise typer.Exit(1)


def check(
    console: Console,
    truth: Path,
    api_url: str,
    *,
    token: str | None = None,
    import_orders: bool = True,
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
        imported = _import(client, truth / "orders.json") if import_orders and labels else True
        ids = [instrument.id for instrument in fleet.instruments]
        flags = _reconciled(client, period, ids) if imported else None
    verdict = compare(fleet, intervals, _measured(report), labels, flags)
    _print(console, verdict, fleet.poll_s)
    if not imported:
        console.print(
            f"orders import endpoint not available ({IMPORT_PATH} answered 404): "
            f"{len(labels)} labelled orders not checked"
        )
    elif flags is None:
        console.print(
            f"reconciliation endpoint not available ({RECONCILIATION_PATH} answered 404): "
            f"{len(labels)} labelled orders not checked"
        )
    return verdict


def _get(client: httpx.Client, path: str, params: dict[str, str]) -> bytes | None:
    return _call(client, "GET", path, params=params)


def _call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    json_body: bytes | None = None,
) -> bytes | None:
    """The body of the answer; ``None`` on 404; ``ServiceError`` on anything else."""
    import httpx

    headers = {"Content-Type": "application/json"} if json_body is not None else None
    try:
        response = client.request(method, path, params=params, content=json_body, headers=headers)
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


def _import(client: httpx.Client, orders_file: Path) -> bool:
    """POST the orders in batches; False if the API has no import endpoint."""
    try:
        orders = msgspec.json.decode(orders_file.read_bytes(), type=list[dict[str, object]])
    except (OSError, msgspec.DecodeError) as error:
        raise ServiceError(f"{orders_file}: cannot read the orders: {error}") from None
    for first in range(0, len(orders), IMPORT_BATCH):
        body = msgspec.json.encode(orders[first : first + IMPORT_BATCH])
        answer = _call(client, "POST", IMPORT_PATH, json_body=body)
        if answer is None:
            return False
        result = msgspec.json.decode(answer, type=_Imported)
        if result.errors:
            raise ServiceError(f"the API rejected orders of {orders_file}: {result.errors[0]}")
    return True


def _reconciled(
    client: httpx.Client, period: dict[str, str], instruments: list[str]
) -> dict[str, set[str]] | None:
    """Order id -> flags over the period; ``None`` if there is no endpoint.

    Asked instrument by instrument (an order's flags concern its own
    instrument only): each answer then reconciles a few hundred orders, where
    paging through a whole fleet's would reconcile all of them for every page.
    """
    flags: dict[str, set[str]] = {}
    for instrument in instruments:
        offset = 0
        while True:
            params = {**period, "instrument": instrument, "limit": str(PAGE), "offset": str(offset)}
            body = _get(client, RECONCILIATION_PATH, params)
            if body is None:
                return None
            try:
                page = msgspec.json.decode(body, type=_Page)
            except msgspec.DecodeError as error:
                raise ServiceError(
                    f"the reconciliation answer is not as expected: {error}"
                ) from None
            flags.update((item.order.order_id, set(item.flags)) for item in page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
    return flags


class _Row(msgspec.Struct):
    instrument_id: str
    on_scheduled_h: float
    running_scheduled_h: float
    effective_h: float
    startup_rate: float | None
    coverage: float | None


class _Report(msgspec.Struct):
    instruments: list[_Row]


class _Imported(msgspec.Struct):
    errors: list[dict[str, object]] = msgspec.field(default_factory=list)


class _OrderRef(msgspec.Struct):
    order_id: str


class _Reconciled(msgspec.Struct):
    order: _OrderRef
    flags: list[str]


class _Page(msgspec.Struct):
    total: int
    items: list[_Reconciled]


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
