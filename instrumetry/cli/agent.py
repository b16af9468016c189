"""CLI: the agent that runs beside an instrument."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Run and set up the agent beside an instrument.")

ConfigFile = Annotated[
    Path, typer.Option("--config", "-c", help="The agent's TOML file.", show_default=False)
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]


@app.command()
def run(config: ConfigFile, verbose: Verbose = False) -> None:
    """Poll the meter, report state transitions and heartbeats, until SIGTERM or Ctrl-C.

    Logs go to stderr, or to the rotated JSON-lines file set in the config's
    [log] section.
    """
    from agents.config import load_config
    from agents.logs import setup_logging
    from agents.runner import run_agent

    settings = load_config(config)
    setup_logging(settings.log, verbose=verbose)
    run_agent(settings)


@app.command()
def enroll(
    *,
    instrument: Annotated[
        str, typer.Option(help="Instrument id, as registered on the platform.", show_default=False)
    ],
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://host:port or mqtts://host:port.")],
    meter_host: Annotated[
        str | None, typer.Option(help="Modbus TCP address of the power meter (or its gateway).")
    ] = None,
    meter_port: Annotated[int, typer.Option(help="Modbus TCP port of the meter.")] = 502,
    meter_device: Annotated[
        str | None,
        typer.Option(help="Serial device of a Modbus RTU meter: /dev/ttyUSB0, COM3."),
    ] = None,
    meter_baudrate: Annotated[int, typer.Option(help="Baud rate of the RTU meter.")] = 9600,
    meter_unit: Annotated[int, typer.Option(help="Modbus unit id of the meter.")] = 1,
    model: Annotated[
        str, typer.Option(help="Meter model: sdm120, sdm630, ddsu666 or dtsu666.")
    ] = "sdm120",
    out: Annotated[Path, typer.Option(help="Config file to write.")] = Path("agent.toml"),
    broker_password_file: Annotated[
        Path | None,
        typer.Option(
            envvar="INSTRUMETRY_BROKER_PASSWORD_FILE",
            help="Mosquitto password file to add the agent's login to (with its ACL file "
            "beside it); without it, the command to add the login is printed.",
        ),
    ] = None,
) -> None:
    """Create this agent's signing key, broker login and a ready-to-run config file.

    The meter is reached over Modbus TCP (--meter-host) or RTU on a serial
    line (--meter-device). Writes --out and a private key next to it (same
    name, .key), both created with mode 0600 and never overwritten. The agent
    logs in to the broker as its instrument id with a new random password,
    which goes into the config file and, with --broker-password-file, into the
    broker's password and ACL files. Prints the public key to register with
    the platform.
    """
    import secrets

    from agents.config import parse_config, render_config
    from agents.keys import generate_key, public_key_b64
    from instrumetry.domain.errors import ConfigError

    if (meter_host is None) == (meter_device is None):
        raise ConfigError(
            "agent enroll: give either --meter-host (Modbus TCP) or --meter-device (Modbus RTU)"
        )
    meter: dict[str, object] = {"unit": meter_unit, "model": model}
    if meter_device is None:
        meter |= {"host": meter_host, "port": meter_port}
    else:
        meter |= {"kind": "rtu", "device": meter_device, "baudrate": meter_baudrate}
    key_path = out.with_suffix(".key")
    password = secrets.token_urlsafe(24)
    config = parse_config(
        {
            "instrument_id": instrument,
            "key_file": key_path.name,
            "state_dir": f"{out.stem}-state",
            "broker": {"url": broker, "username": instrument, "password": password},
            "meter": meter,
        },
        "agent enroll",
    )
    if out.exists():
        raise ConfigError(f"{out}: already exists; choose another --out or remove it")
    if broker_password_file is not None:
        from instrumetry.devstack.broker_auth import AuthFiles

        auth = AuthFiles(broker_password_file, broker_password_file.parent / "acl")
        auth.add_agent(instrument, password)
    key = generate_key(key_path)
    text = render_config(
        config,
        header=f"Instrumetry agent for instrument {instrument}, written by `instrumetry agent "
        "enroll`.\nRelative paths are relative to this file. See agents/config.py for every "
        "option.",
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # may get a password
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    typer.echo(f"wrote {out} and {key_path}")
    if broker_password_file is None:
        typer.echo(
            "add the agent's broker login (its password is in the config file): "
            f"instrumetry broker add-agent {instrument} --password <password from {out}>"
        )
    else:
        typer.echo(
            f"added broker login {instrument!r} to {broker_password_file}; reload the broker"
        )
    typer.echo("public key (register it with the platform for this instrument):")
    typer.echo(public_key_b64(key))


@app.command()
def check(config: ConfigFile, verbose: Verbose = False) -> None:
    """Read the meter once and connect to the broker once; say what works."""
    from agents.config import LogConfig, load_config
    from agents.keys import load_key, public_key_b64
    from agents.logs import setup_logging
    from agents.meter import MeterReader
    from agents.publisher import probe_broker
    from instrumetry.domain.errors import ServiceError

    settings = load_config(config)
    setup_logging(LogConfig(level="ERROR"), verbose=verbose)  # failures are printed below
    typer.echo(f"instrument: {settings.instrument_id}")
    typer.echo(f"public key: {public_key_b64(load_key(Path(settings.key_file)))}")
    failed = []

    meter = MeterReader.from_config(settings.meter)
    power = meter.read_power()
    meter.close()
    if power is None:
        failed.append("meter")
        typer.echo(f"{meter.where} ({settings.meter.model}): no reading: {meter.last_error}")
    else:
        typer.echo(f"{meter.where} ({settings.meter.model}): {power:.1f} W")

    if settings.probe is not None:
        from agents.probe import ProcessProbe

        probe = ProcessProbe(settings.probe.processes)
        running = {True: "running", False: "not running", None: "cannot tell"}[probe.running()]
        typer.echo(
            f"control software ({', '.join(settings.probe.processes)}): {running}; "
            f"logged-in user: {probe.user or 'nobody'}; running_if = {settings.probe.running_if}"
        )

    address = settings.broker.address()
    try:
        probe_broker(settings.broker, settings.instrument_id)
    except ServiceError as error:
        failed.append("broker")
        typer.echo(str(error))
    else:
        typer.echo(f"broker {address.host}:{address.port}: connected")

    if failed:
        raise ServiceError(f"check failed: {' and '.join(failed)} (see above)")
