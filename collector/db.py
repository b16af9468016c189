"""Opening database connections with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import psycopg
from psycopg import Copy
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.array import ListBinaryDumper

from instrumetry.domain.errors import ConfigError, ServiceError


def describe(url: str) -> str:
    """``host:port/dbname`` of a connection URL, without the password, for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"invalid database URL: {error}") from None
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


INGEST_SETTINGS = {"jit": "off"}
"""Session settings of the collector's connections. Its statements are index
lookups driven by array parameters whose row counts the planner cannot see,
so their estimated cost passes ``jit_above_cost`` while they run in
milliseconds: JIT compiling them cost about a second a batch (measured with a
year of events, docs/BENCHMARKS.md)."""


def connect_ingest(url: str) -> psycopg.Connection[TupleRow]:
    """A connection of the collector's: autocommit, with ``INGEST_SETTINGS``.

    Lists go as binary arrays: psycopg dumps a text array element by element in
    Python, 1.8 ms for 500 timestamps against 0.08 ms in binary, and a batch
    passes about ten such arrays.
    """
    conn = connect(url, autocommit=True, settings=INGEST_SETTINGS)
    conn.adapters.register_dumper(list, ListBinaryDumper)
    return conn


def connect(
    url: str, *, autocommit: bool = False, settings: Mapping[str, str] | None = None
) -> psycopg.Connection[TupleRow]:
    """Connect, or raise ``ServiceError`` naming the database that refused us.

    ``settings`` are set for the session, after any ``options`` the URL holds.
    """
    where = describe(url)
    if settings:
        options = [str(conninfo_to_dict(url).get("options", ""))]
        options += (f"-c {name}={value}" for name, value in settings.items())
        url = make_conninfo(url, options=" ".join(option for option in options if option))
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = " ".join(line.strip() for line in str(error).splitlines()) or "no answer"
        raise ServiceError(f"cannot connect to the database at {where}: {reason}") from None


@contextmanager
def copy_in(
    cur: psycopg.Cursor[TupleRow], table: str, columns: Mapping[str, str]
) -> Iterator[Copy]:
    """``COPY table (columns) FROM STDIN`` in binary; ``columns`` maps each name to its type.

    Binary rows cost the collector a quarter of the CPU of text rows (1.2
    against 4.5 us for an event): no hex for ``bytea``, no text for times.
    An enum column goes as ``text``: its binary input is its label.
    """
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(columns.values()))
        yield copy
