"""``instrumetry collector``: run the service that stores agents' messages."""

from __future__ import annotations

from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl, MqttUrl

app = typer.Typer(no_args_is_help=True, help="The collector: MQTT messages into the database.")


@app.command()
def run(
    database_url: DatabaseUrl,
    mqtt_url: MqttUrl,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also log one line per stored batch.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the Prometheus /metrics endpoint; 0 turns it off. "
            "(default: INSTRUMETRY_METRICS_PORT, else 9464)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Store events, heartbeats and statuses until SIGINT or SIGTERM, then drain and exit.

    Migrates the database first. Further settings come from the environment:
    INSTRUMETRY_CLIENT_ID (unique per collector), INSTRUMETRY_SHARE_GROUP,
    INSTRUMETRY_BATCH_MAX, INSTRUMETRY_BATCH_MS, INSTRUMETRY_SESSION_EXPIRY_S,
    INSTRUMETRY_HEARTBEAT_TIMEOUT_S (180: an agent not heard for this long is
    offline), INSTRUMETRY_CLOCK_SKEW_LIMIT_S (60), INSTRUMETRY_METRICS_HOST.
    """
    import logging

    from collector import db
    from collector.service import Collector
    from collector.settings import load_settings
    from instrumetry.stopping import calling_on_stop_signals

    extra = {} if metrics_port is None else {"metrics_port": metrics_port}
    settings = load_settings(database_url=database_url, mqtt_url=mqtt_url, **extra)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    collector = Collector(settings)
    with calling_on_stop_signals(lambda _name: collector.stop()):  # before its threads start
        collector.start()
        metrics = (
            f"; metrics at http://{settings.metrics_host}:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else ""
        )
        typer.echo(
            f"collector {settings.client_id!r} (group {settings.share_group!r}) storing "
            f"messages from {settings.broker} in {db.describe(settings.database_url)}{metrics}; "
            "Ctrl-C stops it"
        )
        collector.serve()
    typer.echo("collector stopped")
