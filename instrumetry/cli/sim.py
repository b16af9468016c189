"""CLI: the simulator: virtual power meters, instruments and agents."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl, MqttUrl

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


@app.command()
def fleet(
    database_url: DatabaseUrl,
    mqtt_url: MqttUrl,
    *,
    instruments: Annotated[int, typer.Option(min=1, max=5000, help="Simulated instruments.")] = 50,
    days: Annotated[int, typer.Option(min=1, max=366, help="Simulated days.")] = 7,
    first_day: Annotated[
        str | None, typer.Option(help="First simulated local day, YYYY-MM-DD (default: days ago).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fleet.")] = 1,
    work_dir: Annotated[
        Path, typer.Option(help="Where the virtual agents keep their outboxes.")
    ] = Path(".instrumetry/fleet"),
) -> None:
    """Run a fleet of virtual agents, accelerated, against a broker and collector.

    Each virtual instrument is registered, then its agent (the agent's own
    classifier, outbox, signing and publishing code, on a virtual clock) reports
    over MQTT; the command ends when the collector has acknowledged every event.
    """
    from datetime import date, timedelta

    from instrumetry.cli.fleet import progress_bars, simulate
    from instrumetry.domain.errors import ConfigError
    from sim.scenario import FleetSpec, build_fleet

    try:
        start = date.fromisoformat(first_day) if first_day else date.today() - timedelta(days)
    except ValueError:
        raise ConfigError(f"--first-day: {first_day!r} is not a date (YYYY-MM-DD)") from None
    simulated = build_fleet(
        FleetSpec(instruments=instruments, days=days, first_day=start, seed=seed)
    )
    with progress_bars() as report:
        result = simulate(
            simulated,
            database_url=database_url,
            mqtt_url=mqtt_url,
            work_dir=work_dir,
            report=report,
        )
    typer.echo(
        f"{instruments} instruments, {days} days from {start}: {result.readings:,} readings, "
        f"{result.events:,} events, all acknowledged in {result.seconds:.0f} s"
    )
