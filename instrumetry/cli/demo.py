"""``instrumetry demo``: the whole system, end to end, on this machine.

Starts the local services, migrates a fresh demo database, runs the collector
and the API as child processes, drives a simulated fleet through the agent's
own code, then prints the startup-rate report next to the simulator's ground
truth and keeps everything running until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from instrumetry.domain.errors import ServiceError

if TYPE_CHECKING:
    from rich.console import Console

    from instrumetry.cli.fleet import FleetResult
    from sim.scenario import Fleet

DEMO_DB = "instrumetry_demo"


def demo(
    *,
    instruments: Annotated[int, typer.Option(min=1, max=5000, help="Simulated instruments.")] = 50,
    days: Annotated[int, typer.Option(min=1, max=366, help="Simulated days.")] = 7,
    seed: Annotated[int, typer.Option(help="Seed of the simulated fleet.")] = 1,
    state_dir: Annotated[
        Path, typer.Option(envvar="INSTRUMETRY_STATE_DIR", help="Where local services keep state.")
    ] = Path(".instrumetry"),
    pg_port: Annotated[int, typer.Option(envvar="INSTRUMETRY_DEV_PG_PORT")] = 55432,
    mqtt_port: Annotated[int, typer.Option(envvar="INSTRUMETRY_DEV_MQTT_PORT")] = 18883,
    api_port: Annotated[int, typer.Option(help="Port of the demo's API.")] = 8000,
    metrics_port: Annotated[
        int, typer.Option(help="Port of the collector's Prometheus /metrics.")
    ] = 9464,
    wait: Annotated[
        bool, typer.Option(help="Keep the stack running until Ctrl-C after the report.")
    ] = True,
) -> None:
    """Run the local stack and a simulated fleet, then print the startup-rate report."""
    from rich.console import Console

    from instrumetry.devstack.stack import DevStack

    console = Console()
    _check_port_free(api_port, "--api-port")
    _check_port_free(metrics_port, "--metrics-port")
    stack = DevStack(state_dir, pg_port=pg_port, mqtt_port=mqtt_port)
    with ExitStack() as cleanup:
        cleanup.enter_context(_stop_signals_as_ctrl_c())
        console.print(f"[bold]Starting local services[/] in {stack.state_dir}")
        info = stack.up()
        cleanup.callback(stack.down)
        database_url = _fresh_database(info.superuser_dsn, info.database_url)
        env = {
            **os.environ,
            "INSTRUMETRY_DATABASE_URL": database_url,
            "INSTRUMETRY_MQTT_URL": info.mqtt_url,
            "INSTRUMETRY_METRICS_PORT": str(metrics_port),
            "INSTRUMETRY_METRICS_HOST": "127.0.0.1",
            # Keep the raw heartbeats of every simulated day, however far back it goes.
            "INSTRUMETRY_HEARTBEAT_RETENTION_DAYS": str(max(days + 1, 30)),
        }
        logs = stack.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        logging.basicConfig(
            filename=logs / "fleet.log",
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        cleanup.enter_context(
            _child(["collector", "run"], env, logs / "collector.log", ready="storing messages")
        )
        cleanup.enter_context(
            _child(
                ["api", "run", "--port", str(api_port)],
                env,
                logs / "api.log",
                ready="Application startup complete",
            )
        )
        api_url = f"http://127.0.0.1:{api_port}"
        first_day = date.today() - timedelta(days=days)
        result, fleet = _run_fleet(
            console,
            instruments=instruments,
            days=days,
            seed=seed,
            first_day=first_day,
            database_url=database_url,
            mqtt_url=info.fleet_mqtt_url,
            state_dir=stack.state_dir,
        )
        console.print(
            f"Simulated {instruments} instruments over {days} days: {result.readings:,} meter "
            f"readings, {result.events:,} signed events, all acknowledged "
            f"in {result.seconds:.0f} s"
        )
        token = _demo_token(database_url, "auditor")
        report = _fetch_report(api_url, token, first_day, first_day + timedelta(days=days - 1))
        _print_report(console, report, fleet)
        from instrumetry.cli.verify import check

        # Importing the simulated service orders takes an admin token.
        check(console, stack.state_dir / "truth", api_url, token=_demo_token(database_url, "admin"))
        console.print(
            f"\nAPI: {api_url}/docs   report: {api_url}/api/v1/reports/startup-rate"
            f"?from={first_day}&to={first_day + timedelta(days=days - 1)}"
        )
        console.print(f"API token (auditor, send as 'Authorization: Bearer ...'): {token}")
        console.print(f"Collector metrics: http://127.0.0.1:{metrics_port}/metrics")
        console.print(f"Logs: {logs}   database: {database_url.rsplit('@', 1)[-1]}")
        if wait:
            console.print("[bold]The stack is running. Press Ctrl-C to stop it.[/]")
            _wait_for_interrupt()
        console.print("Stopping the collector, the API and the local services ...")


def _run_fleet(
    console: Console,
    *,
    instruments: int,
    days: int,
    seed: int,
    first_day: date,
    database_url: str,
    mqtt_url: str,
    state_dir: Path,
) -> tuple[FleetResult, Fleet]:
    """The bundled demo scenario over the last ``days`` days, in sparse mode."""
    import shutil

    from instrumetry.cli.fleet import default_workers, prepare, progress_bars, simulate
    from sim.fleet import Pace

    scenario, fleet = prepare(
        "demo",
        state_dir / "truth",
        instruments=instruments,
        days=days,
        first_day=first_day,
        seed=seed,
    )
    work_dir = state_dir / "fleet"
    shutil.rmtree(work_dir, ignore_errors=True)  # a fresh database wants fresh agents
    poll_ms = round(scenario.poll_s * 1000)
    with progress_bars(console) as report:
        result = simulate(
            fleet,
            database_url=database_url,
            mqtt_url=mqtt_url,
            work_dir=work_dir,
            pace=Pace(poll_ms, max(poll_ms, round(scenario.heartbeat_s * 1000))),
            heartbeat_s=scenario.heartbeat_s,
            report=report,
            workers=default_workers(),
        )
    return result, fleet


def _fresh_database(superuser_dsn: str, database_url: str) -> str:
    """Drop and recreate the demo database, so each demo starts from nothing."""
    import psycopg
    from psycopg import sql

    from collector import db, migrate

    with psycopg.connect(superuser_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DB))
        )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER instrumetry").format(sql.Identifier(DEMO_DB))
        )
    demo_url = database_url.rsplit("/", 1)[0] + f"/{DEMO_DB}"
    with psycopg.connect(
        superuser_dsn.replace("dbname=instrumetry", f"dbname={DEMO_DB}"), autocommit=True
    ) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    with db.connect(demo_url) as conn:
        migrate.migrate(conn, report=lambda _: None)
    return demo_url


class _child:
    """A CLI child process (collector, API) with its output in a log file.

    Entering waits until the child logs its ``ready`` line: the collector must
    be subscribed before the fleet publishes, the API serving before it is asked.
    """

    def __init__(
        self, args: list[str], env: dict[str, str], log: Path, *, ready: str, timeout_s: float = 30
    ) -> None:
        self.args, self.env, self.log = args, env, log
        self.ready, self.timeout_s = ready, timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __enter__(self) -> _child:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instrumetry", *self.args],
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        command = f"`instrumetry {' '.join(self.args)}`"
        deadline = time.monotonic() + self.timeout_s
        while self.ready not in self.log.read_text(encoding="utf-8", errors="replace")[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise ServiceError(f"{command} did not start; see {self.log}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None and self._log_file is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def _check_port_free(port: int, option: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ServiceError(
                f"port {port} is already in use; choose another with {option}"
            ) from None


def _demo_token(database_url: str, role: str) -> str:
    """A token of ``role`` for the demo's own calls and for whoever explores its API."""
    from api import auth
    from collector import db

    with db.connect(database_url) as conn:
        _, token = auth.create_token(conn, f"demo {role}", auth.Role(role), None)
    return token


def _fetch_report(api_url: str, token: str, first: date, last: date) -> dict[str, Any]:
    import httpx

    response = httpx.get(
        f"{api_url}/api/v1/reports/startup-rate",
        params={"from": first.isoformat(), "to": last.isoformat()},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    if response.status_code != 200:
        raise ServiceError(f"the API answered {response.status_code}: {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


def _print_report(console: Console, report: dict[str, Any], fleet: Fleet) -> None:
    from rich.table import Table

    from sim.truth import true_usage

    truth = {vi.instrument.id: vi for vi in fleet.instruments}
    calendars = {i.id: i.calendar for i in fleet.institutions}
    table = Table(
        title="Startup rate, measured vs simulated truth "
        "(working hours and holidays of each institution's calendar)"
    )
    for column in ("instrument", "name", "institution"):
        table.add_column(column)
    for column in ("startup", "truth", "utilisation", "truth", "effective h", "coverage"):
        table.add_column(column, justify="right")
    errors = []
    for row in report["instruments"]:
        vi = truth[row["instrument_id"]]
        real = true_usage(vi, fleet.period, calendars[vi.instrument.institution_id])
        if row["startup_rate"] is not None and real.startup_rate is not None:
            errors.append(abs(row["startup_rate"] - real.startup_rate))
        table.add_row(
            row["instrument_id"],
            row["name"],
            row["institution_id"],
            _pct(row["startup_rate"]),
            _pct(real.startup_rate),
            _pct(row["utilisation"]),
            _pct(real.utilisation),
            f"{row['effective_h']:.1f}",
            _pct(row["coverage"]),
        )
    console.print(table)
    if errors:
        console.print(
            f"Startup rate vs truth: mean absolute error {100 * sum(errors) / len(errors):.2f} "
            f"points, worst {100 * max(errors):.2f} points"
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@contextmanager
def _stop_signals_as_ctrl_c() -> Iterator[None]:
    """Make SIGTERM (``kill``) and SIGHUP (a closed terminal) stop the demo as Ctrl-C does.

    Their default action ends the process at once, which would leave the
    collector and the API (in sessions of their own) and the local services
    running with nobody to stop them.
    """
    previous = {
        signum: signal.signal(signum, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return
