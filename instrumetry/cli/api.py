"""``instrumetry api``: the HTTP API server.

Server libraries are imported inside the command, so the CLI on an
instrument PC never loads them.
"""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from instrumetry.cli.options import DatabaseUrl
from instrumetry.domain.errors import ConfigError, ServiceError

app = typer.Typer(no_args_is_help=True, help="The usage and audit HTTP API.")

Host = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="Address to listen on (default: INSTRUMETRY_HOST or 127.0.0.1).",
        show_default=False,
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=1,
        max=65535,
        help="TCP port (default: INSTRUMETRY_PORT or 8000).",
        show_default=False,
    ),
]


@app.command()
def run(database_url: DatabaseUrl, host: Host = None, port: Port = None) -> None:
    """Serve the API (OpenAPI at /openapi.json, docs at /docs) until interrupted."""
    import uvicorn

    from api.main import create_app
    from api.settings import load_settings

    settings = load_settings(database_url=database_url, host=host, port=port)
    ensure_port_free(settings.host, settings.port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


def ensure_port_free(host: str, port: int) -> None:
    """Bind once before uvicorn does, so a busy port is one line, not a log dump."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ConfigError(f"cannot listen on host {host!r}: {error.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # Like uvicorn: ignore TIME_WAIT leftovers, fail on a live listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ServiceError(
                    f"port {port} on {host} is already in use; "
                    "choose another with --port or INSTRUMETRY_PORT"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
