"""CLI: the simulator: virtual power meters, instruments and agents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl, FleetMqttUrl, fleet_mqtt_url
from instrumetry.cli.verify import verify
from instrumetry.domain.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Simulate meters, instruments and agents.")


@app.command()
def modbus(
    *,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free).")] = 15020,
    units: Annotated[
        int, typer.Option(min=1, max=247, help="Virtual meters, served as unit ids 1..N.")
    ] = 3,
    model: Annotated[
        str, typer.Option(help="Meter model: sdm120, sdm630, ddsu666 or dtsu666.")
    ] = "sdm120",
    serial: Annotated[
        str | None,
        typer.Option(help="Speak Modbus RTU on this serial device instead of TCP.", metavar="DEV"),
    ] = None,
    baudrate: Annotated[int, typer.Option(min=300, help="Serial speed, with --serial.")] = 9600,
    acceleration: Annotated[
        float, typer.Option(min=0.001, help="Virtual seconds per real second.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the noise and schedule offsets.")] = 1,
) -> None:
    """Serve virtual power meters over Modbus TCP (or RTU with --serial) until Ctrl-C.

    Each unit measures a virtual instrument that cycles through off, standby
    and runs, with realistic noise; point an agent at one unit to watch it
    classify the states.
    """
    from sim.meters import meter_bank
    from sim.modbus_server import SerialLine, serve_meters

    # A server that cannot start is reported below, in one line; pymodbus's own
    # log line about it would come first, on stderr.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    meters = meter_bank(units, model=model, start=time.time(), acceleration=acceleration, seed=seed)
    first = meters[1]

    def announce(bound: int) -> None:
        power = first.map.power
        typer.echo(f"serving {units} virtual meters: {first.map.description}")
        where = f"RTU on {serial} at {baudrate} baud, 8N1" if serial else f"{host}:{bound}"
        typer.echo(f"  on {where}, unit ids 1..{units}")
        typer.echo(
            f"  active power: {power.table} register {power.address:#06x}, {power.data_type}, "
            f"{power.word_order}-endian words, x{power.scale:g} = W"
        )
        typer.echo(f"  each instrument cycles off/standby/running at {acceleration:g}x real time")
        typer.echo("press Ctrl-C to stop")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still interrupts
                loop.add_signal_handler(signum, stop.set)
        line = SerialLine(serial, baudrate=baudrate) if serial else None
        await serve_meters(meters, host, port, stop, serial=line, on_ready=announce)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    typer.echo("stopped")


Scenario = Annotated[
    str,
    typer.Option(help="Scenario file (TOML), or the name of a bundled one: demo, city-year."),
]


@app.command()
def fleet(
    database_url: DatabaseUrl,
    *,
    mqtt_url: FleetMqttUrl = None,
    scenario: Scenario = "demo",
    instruments: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="Override the scenario's instruments.")
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, max=3660, help="Override the scenario's days.")
    ] = None,
    first_day: Annotated[
        str | None, typer.Option(help="Override the first simulated local day, YYYY-MM-DD.")
    ] = None,
    sparse: Annotated[
        bool,
        typer.Option(help="Read meters densely only around transitions (same events, faster)."),
    ] = True,
    truth: Annotated[
        Path, typer.Option(help="Folder for the ground truth, orders and labels.")
    ] = Path(".instrumetry/truth"),
    work_dir: Annotated[
        Path, typer.Option(help="Where the virtual agents keep their outboxes (tmpfs is fastest).")
    ] = Path(".instrumetry/fleet"),
    state_dir: Annotated[
        Path,
        typer.Option(
            envvar="INSTRUMETRY_STATE_DIR",
            help="The dev stack whose broker a scenario's broker_restart faults restart.",
        ),
    ] = Path(".instrumetry"),
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes the agents are dealt out to (default: one per CPU)."),
    ] = None,
) -> None:
    """Run a scenario's fleet of virtual agents, accelerated, against a broker and collector.

    Writes the ground truth, the service orders and their labels to --truth
    first; then each virtual instrument is registered and its agent (the
    agent's own classifier, outbox, signing and publishing code, on a virtual
    clock) reports over MQTT. Ends when the collector has acknowledged every
    event; check the result with `instrumetry sim verify`.
    """
    import logging
    import shutil
    import threading

    from instrumetry.cli.fleet import (
        FleetStopped,
        default_workers,
        prepare,
        progress_bars,
        simulate,
    )
    from instrumetry.stopping import calling_on_stop_signals
    from sim.fleet import Pace

    broker_url = fleet_mqtt_url(mqtt_url)
    started = time.monotonic()
    loaded, simulated = prepare(
        scenario, truth, instruments=instruments, days=days, first_day=first_day
    )
    prepared_s = time.monotonic() - started
    restart = _broker_restarter(state_dir) if simulated.faults.broker_restarts else None
    poll_ms = round(loaded.poll_s * 1000)
    stride_ms = max(poll_ms, round(loaded.heartbeat_s * 1000)) if sparse else None
    shutil.rmtree(work_dir, ignore_errors=True)  # fresh agents: a new fleet has new keys
    try:
        work_dir.mkdir(parents=True)
    except OSError as error:
        raise ConfigError(f"{work_dir}: cannot make the agents' folder: {error.strerror}") from None
    # Thousands of agents each log a broker restart: into a file, not over the progress bars.
    logging.basicConfig(
        filename=work_dir / "fleet.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    try:
        # Signals by sigwait: the MQTT threads could keep Ctrl-C from the main thread.
        with calling_on_stop_signals(lambda _name: stop.set()), progress_bars() as report:
            result = simulate(
                simulated,
                database_url=database_url,
                mqtt_url=broker_url,
                work_dir=work_dir,
                pace=Pace(poll_ms, stride_ms),
                heartbeat_s=loaded.heartbeat_s,
                drain_timeout_s=600.0,
                report=report,
                restart_broker=restart,
                workers=workers or default_workers(),
                stop=stop,
            )
    except FleetStopped as stopped:
        typer.echo(f"stopped: {stopped}; the truth in {truth} is complete", err=True)
        raise typer.Exit(130) from None
    spec = loaded.spec
    typer.echo(
        f"{loaded.name}: {len(simulated.instruments)} instruments, {spec.days} days from "
        f"{spec.first_day}: {result.readings:,} readings, {result.events:,} events, "
        f"all acknowledged in {result.seconds:.0f} s; truth in {truth}"
    )
    typer.echo(
        f"time: truth and orders {prepared_s:.1f} s, agents until the last reading "
        f"{result.simulated_s:.1f} s, then waiting for acks "
        f"{result.seconds - result.simulated_s:.1f} s"
    )


def _broker_restarter(state_dir: Path) -> Callable[[], None]:
    """Stop and start the dev stack's broker: only a local stack can be restarted from here."""
    from instrumetry.devstack.stack import DevStack

    stack = DevStack(state_dir)

    def restart() -> None:
        stack.stop_mosquitto()
        stack.start_mosquitto()

    return restart


app.command()(verify)
