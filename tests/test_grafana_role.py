"""Grafana's read-only role as docker compose makes it, in a cluster of its own.

Compose migrates as the database's superuser, so migration 0006 creates the
role itself (the shared test cluster's app role may not, so other tests
create it beforehand); then compose's ``grafana-role`` step sets its password
with psql. Both run here as written, on a fresh cluster where the role does
not exist yet, and the role must read every table and write none.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector import migrate
from instrumetry.devstack.postgres import find_postgres
from instrumetry.devstack.stack import DevStack

REPO = Path(__file__).resolve().parents[1]
ROLE = "instrumetry_grafana"
PASSWORD = "it's a $ecret with spaces"
"""Quotes, a dollar and spaces: psql's ``:'pw'`` must quote it as one literal."""


def _compose_step(superuser_dsn: str, password: str) -> None:
    """Compose's ``grafana-role`` command, pointed at this cluster's superuser socket."""
    step = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))["services"][
        "grafana-role"
    ]
    shell, flag, script = step["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    target = "-h timescaledb -U instrumetry -d instrumetry"
    assert target in script
    dsn = conninfo_to_dict(superuser_dsn)
    local = f"-h {dsn['host']} -p {dsn['port']} -U {dsn['user']} -d {dsn['dbname']}"
    script = (
        script.replace("$$", "$")
        .replace("psql", str(find_postgres() / "psql"))
        .replace(target, local)
    )
    env = {**os.environ, "GRAFANA_DB_PASSWORD": password}
    subprocess.run([shell, flag, script], env=env, check=True, timeout=60, capture_output=True)


def test_the_role_compose_deploys_reads_and_cannot_write(
    make_stack: Callable[[], DevStack],
) -> None:
    info = make_stack().up()
    with psycopg.connect(info.superuser_dsn, autocommit=True) as conn:
        assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone()
        migrate.migrate(conn, report=lambda _: None)
        role = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolconfig "
            "FROM pg_roles WHERE rolname = %s",
            [ROLE],
        ).fetchone()
        conn.execute("INSERT INTO institutions (id, name, tz) VALUES ('u', 'U', 'UTC')")
    assert role == (True, False, False, False, ["default_transaction_read_only=on"])

    _compose_step(info.superuser_dsn, PASSWORD)

    grafana = make_conninfo(info.database_url, user=ROLE, password=PASSWORD)
    with psycopg.connect(grafana, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM institutions").fetchall() == [("u",)]
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO institutions (id, name, tz) VALUES ('x', 'X', 'UTC')")
        # Turning the default off does not help: the role has no write privilege either.
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "INSERT INTO institutions (id, name, tz) VALUES ('x', 'X', 'UTC')",
            "UPDATE institutions SET name = 'changed'",
            "DELETE FROM institutions",
            "CREATE TABLE grafana_was_here (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
