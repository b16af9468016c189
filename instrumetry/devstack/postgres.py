"""A private PostgreSQL + TimescaleDB cluster for development and tests.

PostgreSQL refuses to run as root, so when we are root every server tool
runs as the ``postgres`` system user through ``runuser`` (which also sets
that user's groups, unlike a bare setuid) and the cluster's home belongs to
it. The home holds the data directory, the unix socket directory and the
server log, so one ``chown`` makes all of them reachable by the server.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from instrumetry.devstack.procs import (
    kill_group,
    last_problem,
    log_size,
    process_is,
    read_pid,
    run,
)
from instrumetry.domain.errors import ConfigError, ServiceError

SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
APP_ROLE = "instrumetry"
APP_DATABASE = "instrumetry"
_INSTALL_HINT = "run scripts/install-system-deps.sh"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_START_TIMEOUT = 60
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def _candidate_bindirs() -> list[Path]:
    """Debian's versioned bindirs, newest first, then whatever pg_config is on PATH."""
    found: list[Path] = []
    if _DEBIAN_ROOT.is_dir():
        majors = [d for d in _DEBIAN_ROOT.iterdir() if d.name.isdigit()]
        found += [d / "bin" for d in sorted(majors, key=lambda d: int(d.name), reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        found.append(Path(pg_config).resolve().parent)
    return [d for d in found if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]


@functools.cache
def find_postgres() -> Path:
    """The bindir of a PostgreSQL that has TimescaleDB, or an error saying what to install."""
    bindirs = _candidate_bindirs()
    if not bindirs:
        raise ServiceError(f"PostgreSQL server (initdb, pg_ctl) is not installed; {_INSTALL_HINT}")
    for bindir in bindirs:
        sharedir = run([str(bindir / "pg_config"), "--sharedir"], "pg_config", Path("/"), 30)
        if (Path(sharedir.strip()) / "extension" / "timescaledb.control").is_file():
            return bindir
    raise ServiceError(f"TimescaleDB is not installed for PostgreSQL; {_INSTALL_HINT}")


def _as_server_user() -> list[str]:
    """The command prefix that runs a server tool as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ConfigError(
            f"we are root but system user {SYSTEM_USER!r} does not exist; {_INSTALL_HINT}"
        ) from None
    return ["runuser", "-u", SYSTEM_USER, "--"]


def server_user_can_reach(path: Path) -> bool:
    """Tell whether the server's user can traverse every directory down to ``path``."""
    prefix = _as_server_user()
    if not prefix:
        return True
    check = subprocess.run([*prefix, "test", "-x", str(path)], check=False, cwd="/")
    return check.returncode == 0


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Postgres:
    """One cluster living in ``home``: ``data/``, ``run/`` (socket) and ``postgresql.log``."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.data_dir = home / "data"
        self.socket_dir = home / "run"
        self.log_file = home / "postgresql.log"
        self._pid_file = self.data_dir / "postmaster.pid"

    def pid(self) -> int | None:
        """The postmaster's pid if it is running, else None."""
        pid = read_pid(self._pid_file)
        return pid if pid is not None and process_is(pid, "postgres") else None

    def running_port(self) -> int | None:
        """The port the running postmaster listens on (line 4 of postmaster.pid)."""
        if self.pid() is None:
            return None
        try:
            return int(self._pid_file.read_text(encoding="utf-8").splitlines()[3])
        except (OSError, IndexError, ValueError):
            return None

    def superuser_dsn(self, dbname: str = APP_DATABASE) -> str:
        """A libpq connection string for the superuser over the unix socket (trust auth)."""
        return make_conninfo(
            "", host=str(self.socket_dir), port=str(self.port), user=SUPERUSER, dbname=dbname
        )

    def start(self) -> None:
        """Create the cluster on first use, then start it unless it already runs."""
        if self.pid() is not None:
            return
        bindir = find_postgres()
        self._prepare_home()
        self._pid_file.unlink(missing_ok=True)  # stale: its postmaster is gone
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bindir)
        self._write_conf()
        offset = log_size(self.log_file)
        try:
            self._pg_ctl(bindir, "start", "-l", str(self.log_file))
        except ServiceError:
            problem = last_problem(self.log_file, offset)
            raise ServiceError(
                f"PostgreSQL did not start: {problem}; see {self.log_file}"
            ) from None

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        if self.pid() is None:
            self._pid_file.unlink(missing_ok=True)
            return
        self._pg_ctl(find_postgres(), "stop", "-m", "fast")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, leaving crash recovery to the next start."""
        pid = self.pid()
        if pid is not None:
            kill_group(pid, "postgres", timeout=10)

    def provision(self, password: str) -> None:
        """Ensure the login role, its database and the TimescaleDB extension exist.

        Idempotent; the password is set on every call so the role always
        matches the credentials file, even if that file was recreated.
        """
        with psycopg.connect(self.superuser_dsn("postgres"), autocommit=True) as conn:
            role_exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]
            ).fetchone()
            statement = (
                "ALTER ROLE {} LOGIN PASSWORD {}"
                if role_exists
                else "CREATE ROLE {} LOGIN PASSWORD {}"
            )
            conn.execute(sql.SQL(statement).format(sql.Identifier(APP_ROLE), sql.Literal(password)))
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [APP_DATABASE]
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                    )
                )
        with psycopg.connect(self.superuser_dsn(APP_DATABASE), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    def _prepare_home(self) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_path)) > _SOCKET_PATH_MAX:
            raise ConfigError(
                f"unix socket path {socket_path} is too long; choose a shorter --state-dir"
            )
        for directory in (self.home, self.socket_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.geteuid() == 0:
                server_user = pwd.getpwnam(SYSTEM_USER)
                os.chown(directory, server_user.pw_uid, server_user.pw_gid)
            directory.chmod(0o700)

    def _initdb(self, bindir: Path) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ServiceError(
                f"{self.data_dir} is not empty but holds no cluster (an interrupted initdb?); "
                "remove it and run up again"
            )
        run(
            [
                *_as_server_user(),
                str(bindir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-instructions",
            ],
            "initdb",
            cwd=self.home,
            timeout=120,
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# Instrumetry dev stack settings, rewritten on every start.\n")
            conf.write("include_if_exists = 'instrumetry.conf'\n")

    def _write_conf(self) -> None:
        """Rewrite our settings on every start, so a new --pg-port takes effect."""
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": _conf_string(str(self.socket_dir)),
            "shared_preload_libraries": "'timescaledb'",
            "timescaledb.telemetry_level": "off",
            "max_connections": "100",
        }
        conf = self.data_dir / "instrumetry.conf"
        conf.write_text(
            "# Written by `instrumetry dev up`; edits are overwritten.\n"
            + "".join(f"{name} = {value}\n" for name, value in settings.items()),
            encoding="utf-8",
        )
        if os.geteuid() == 0:
            server_user = pwd.getpwnam(SYSTEM_USER)
            os.chown(conf, server_user.pw_uid, server_user.pw_gid)

    def _pg_ctl(self, bindir: Path, action: str, *options: str) -> None:
        run(
            [
                *_as_server_user(),
                str(bindir / "pg_ctl"),
                f"--pgdata={self.data_dir}",
                "--wait",
                f"--timeout={_START_TIMEOUT}",
                action,
                *options,
            ],
            f"pg_ctl {action}",
            cwd=self.home,
            timeout=_START_TIMEOUT + 10,
        )
