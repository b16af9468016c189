"""Schema migrations against a real PostgreSQL + TimescaleDB: once, recorded, tamper-evident."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest

from collector import migrate
from instrumetry.domain.errors import ConfigError
from tests.test_devstack import cli

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase


@pytest.fixture
def empty_database(make_database: MakeDatabase) -> Iterator[str]:
    """A new database with TimescaleDB installed and nothing else."""
    with make_database("test_migrate", migrated=False) as url:
        yield url


def test_applies_each_migration_once(empty_database: str) -> None:
    reported: list[str] = []
    with psycopg.connect(empty_database) as conn:
        assert migrate.migrate(conn, report=reported.append) == len(migrate.available())
        assert migrate.migrate(conn, report=reported.append) == 0
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in migrate.available()]
    assert reported == [f"applied {m.version:04d}_{m.name}" for m in migrate.available()]


def test_events_and_heartbeats_are_hypertables(empty_database: str) -> None:
    with psycopg.connect(empty_database) as conn:
        migrate.migrate(conn, report=lambda _: None)
        names = {
            name
            for (name,) in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            )
        }
    assert names == {"events", "heartbeats"}


def test_a_migration_edited_after_it_ran_is_refused(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrate.available()
    with psycopg.connect(empty_database) as conn:
        migrate.migrate(conn, report=lambda _: None)
        edited = [dataclasses.replace(shipped[0], sql=shipped[0].sql + "\n-- edited\n")]
        monkeypatch.setattr(migrate, "available", lambda: edited + shipped[1:])
        with pytest.raises(ConfigError, match=r"0001_core was edited after it was applied"):
            migrate.migrate(conn, report=lambda _: None)


def test_the_cli_migrates_once_and_names_an_unreachable_database_in_one_line(
    empty_database: str, unused_ports: Callable[[int], list[int]]
) -> None:
    first = cli("db", "migrate", "--database-url", empty_database)
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith(f"is up to date ({len(migrate.available())} applied)\n")
    again = cli("db", "migrate", "--database-url", empty_database)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("is up to date (0 applied)\n"), again.stdout

    (port,) = unused_ports(1)
    down = cli("db", "migrate", "--database-url", f"postgresql://u:p@127.0.0.1:{port}/db")
    assert down.returncode == 2
    assert down.stderr.startswith(
        f"instrumetry: error: cannot connect to the database at 127.0.0.1:{port}/db: "
    )
    assert down.stderr.count("\n") == 1, down.stderr
