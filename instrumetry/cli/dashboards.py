"""``instrumetry dashboards``: build the Grafana dashboards' JSON, or push it to a Grafana."""

from __future__ import annotations

from typing import Annotated

import typer

from instrumetry.domain.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code.")


@app.command()
def build(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; fail if the committed JSON differs from the code."
        ),
    ] = False,
) -> None:
    """Write every dashboard's JSON to dashboards/json (what provisioning loads)."""
    from dashboards import build as builder

    if check:
        problems = builder.stale()
        if problems:
            for problem in problems:
                typer.echo(f"{builder.JSON_DIR}/{problem}", err=True)
            raise ConfigError("dashboard JSON is stale: run `instrumetry dashboards build`")
        typer.echo(f"{len(builder.BUILDERS)} dashboards in {builder.JSON_DIR} are up to date")
        return
    changed = builder.write()
    typer.echo(f"wrote {len(changed)} of {len(builder.BUILDERS)} dashboards to {builder.JSON_DIR}")


@app.command()
def push(
    url: Annotated[
        str, typer.Option("--url", envvar="INSTRUMETRY_GRAFANA_URL", help="http(s)://host:port")
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="INSTRUMETRY_GRAFANA_TOKEN", help="Service-account or API token."
        ),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option("--basic-auth", help="USER:PASSWORD, instead of a token.", show_default=False),
    ] = None,
    folder: Annotated[str, typer.Option("--folder", help="Folder, created if missing.")] = (
        "Instrumetry"
    ),
) -> None:
    """Upload every dashboard to a running Grafana, overwriting older versions."""
    from dashboards import build as builder
    from dashboards import push as pusher

    if (token is None) == (basic_auth is None):
        raise ConfigError("give exactly one of --token or --basic-auth USER:PASSWORD")
    credential: pusher.Credential
    if basic_auth is not None:
        user, colon, password = basic_auth.partition(":")
        if not colon or not user:
            raise ConfigError("--basic-auth must be USER:PASSWORD")
        credential = (user, password)
    else:
        assert token is not None
        credential = token
    result = pusher.push(url, credential, folder, builder.rendered())
    verb = "created" if result.folder_created else "existing"
    typer.echo(
        f"pushed {len(result.dashboards)} dashboards to {verb} folder {folder!r} "
        f"(uid {result.folder_uid}) at {url}"
    )
