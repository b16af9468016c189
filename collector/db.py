"""Opening database connections with errors a user can act on."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from instrumetry.domain.errors import ConfigError, ServiceError


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection URL, without the password, for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"invalid database URL: {error}") from None
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[TupleRow]:
    """Connect, or raise ``ServiceError`` naming the database that refused us."""
    where = describe(url)
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = " ".join(line.strip() for line in str(error).splitlines()) or "no answer"
        raise ServiceError(f"cannot connect to the database at {where}: {reason}") from None
