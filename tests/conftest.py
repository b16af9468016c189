"""Shared fixtures: the real development stack, and the ``--long`` switch.

Integration tests run against real PostgreSQL + TimescaleDB and Mosquitto,
started once per session in a pytest temp folder on free ports, so they never
touch a developer's own ``instrumetry dev up`` stack or the machine's services.
Missing binaries skip those tests on a laptop but fail them in CI, where a
skip would hide a broken install script.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from collector import migrate
from instrumetry.cli.main import main
from instrumetry.devstack.mosquitto import find_mosquitto
from instrumetry.devstack.postgres import find_postgres
from instrumetry.devstack.stack import DevStack, StackInfo
from instrumetry.domain.errors import ServiceError

# Collectors started by tests serve no /metrics unless a test asks for a port: the
# default 9464 may be held by another collector on this machine.
os.environ.setdefault("INSTRUMETRY_METRICS_PORT", "0")
# The CLI run in this process (`run_cli`) fills the environment from the dev stack's
# env file, and child processes inherit it: never from a developer's own stack.
os.environ["INSTRUMETRY_STATE_DIR"] = tempfile.mkdtemp(prefix="instrumetry-tests-")
atexit.register(shutil.rmtree, os.environ["INSTRUMETRY_STATE_DIR"], ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="also run tests marked `long` (fault injection and soak runs)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip_long = pytest.mark.skip(reason="long run; enable with --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip_long)


def run_cli(monkeypatch: pytest.MonkeyPatch, database_url: str, *argv: str) -> int:
    """``instrumetry *argv`` in this process, against ``database_url``; its exit code."""
    monkeypatch.setattr(sys, "argv", ["instrumetry", *argv])
    monkeypatch.setenv("INSTRUMETRY_DATABASE_URL", database_url)
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def free_ports(count: int) -> list[int]:
    """Ports the kernel calls free right now; all held at once so they differ."""
    with ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def require_services() -> None:
    """Skip without the service binaries, but fail where they are mandatory (CI)."""
    try:
        find_postgres()
        find_mosquitto()
    except ServiceError as error:
        if os.environ.get("CI") or os.environ.get("INSTRUMETRY_REQUIRE_SERVICES"):
            pytest.fail(f"services required but missing: {error}")
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def unused_ports() -> Callable[[int], list[int]]:
    """``free_ports`` as a fixture, for tests that need ports of their own."""
    return free_ports


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """The session's running stack. Tests that crash a service must restart it."""
    require_services()
    pg_port, mqtt_port = free_ports(2)
    dev = DevStack(tmp_path_factory.mktemp("devstack"), pg_port, mqtt_port)
    try:
        dev.up()
        yield dev
    finally:
        dev.purge()


@pytest.fixture(scope="session")
def stack_info(stack: DevStack) -> StackInfo:
    """URLs, DSNs and files of the session stack."""
    return stack.up()


@pytest.fixture(scope="session")
def database_url(stack_info: StackInfo) -> str:
    """``postgresql://instrumetry:...@127.0.0.1:PORT/instrumetry`` of the session stack."""
    return stack_info.database_url


@pytest.fixture(scope="session")
def mqtt_url(stack_info: StackInfo) -> str:
    """``mqtt://127.0.0.1:PORT`` of the session stack."""
    return stack_info.mqtt_url


class MakeDatabase(Protocol):
    """The ``make_database`` fixture's type, for annotations in test modules."""

    def __call__(self, prefix: str, *, migrated: bool = True) -> AbstractContextManager[str]: ...


@pytest.fixture(scope="session")
def make_database(stack_info: StackInfo) -> MakeDatabase:
    """A factory of fresh databases on the session stack, each dropped when its block exits.

    ``with make_database("test_x") as url:`` creates ``test_x_<random>`` owned by the
    app role, installs TimescaleDB (that needs a superuser), migrates it unless
    ``migrated=False``, and yields its URL as the app role sees it.
    """
    admin = make_conninfo(stack_info.superuser_dsn, dbname="postgres")

    @contextmanager
    def make(prefix: str, *, migrated: bool = True) -> Iterator[str]:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        database = sql.Identifier(name)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER instrumetry").format(database))
        try:
            superuser = make_conninfo(stack_info.superuser_dsn, dbname=name)
            with psycopg.connect(superuser, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION timescaledb")
            url = make_conninfo(stack_info.database_url, dbname=name)
            if migrated:
                with psycopg.connect(url) as conn:
                    migrate.migrate(conn, report=lambda _: None)
            yield url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(database))

    return make


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of the requesting test module's own: no other module sees its rows."""
    with make_database(request.module.__name__.rsplit(".", 1)[-1]) as url:
        yield url


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit connection to the module's ``database``."""
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], DevStack]]:
    """A factory of private, not yet started stacks, for tests that stop or crash services.

    Each gets its own temp folder and free ports; all are purged (stopped, and
    their data deleted, including any cluster under /var/lib) after the test.
    """
    require_services()
    made: list[DevStack] = []

    def make() -> DevStack:
        pg_port, mqtt_port = free_ports(2)
        made.append(DevStack(tmp_path_factory.mktemp("own-stack"), pg_port, mqtt_port))
        return made[-1]

    try:
        yield make
    finally:
        for dev in made:
            dev.purge()
