"""The development stack: one PostgreSQL + TimescaleDB and one Mosquitto per state folder.

``up`` is idempotent and safe after a crash: running services are kept,
dead ones (stale pid files included) are restarted, and every port is
checked before anything starts, so a clash is reported instead of a
half-started stack. A lock file serialises concurrent ``up``/``down`` calls
on the same folder.
"""

from __future__ import annotations

import fcntl
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from instrumetry.devstack.broker_auth import AuthFiles
from instrumetry.devstack.mosquitto import Mosquitto, find_mosquitto, policy_dir
from instrumetry.devstack.postgres import (
    APP_DATABASE,
    APP_ROLE,
    SYSTEM_USER,
    Postgres,
    find_postgres,
    server_user_can_reach,
)
from instrumetry.devstack.procs import ensure_port_free
from instrumetry.devstack.state import (
    FALLBACK_ROOT,
    StackRecord,
    fallback_pg_home,
    load_or_create_password,
    load_record,
    save_record,
    write_private,
)
from instrumetry.domain.broker_auth import Account
from instrumetry.domain.errors import ServiceError

COLLECTOR_LOGIN = "collector"
"""The collector's broker account on a stack with ``broker_auth``."""
SIMULATOR_LOGIN = "simulator"
"""The simulated fleet's broker account on a stack with ``broker_auth``."""
_CREDENTIALS = {
    Account.COLLECTOR: (COLLECTOR_LOGIN, "broker-credentials"),
    Account.SIMULATOR: (SIMULATOR_LOGIN, "simulator-credentials"),
}
"""Each account's login and the file of the state folder that keeps its password."""
DEFAULT_PG_PORT = 55432
DEFAULT_MQTT_PORT = 18883
PG_PORT_HINT = ("--pg-port", "INSTRUMETRY_DEV_PG_PORT")
MQTT_PORT_HINT = ("--mqtt-port", "INSTRUMETRY_DEV_MQTT_PORT")


@dataclass(frozen=True)
class StackInfo:
    """How to reach a running stack; the three URLs also go to ``env_file``."""

    state_dir: Path
    env_file: Path
    database_url: str
    mqtt_url: str
    """The collector's way in: with its login where the broker wants logins."""
    fleet_mqtt_url: str
    """A simulated fleet's: with the simulator's login where the broker wants logins."""
    superuser_dsn: str
    pg_port: int
    mqtt_port: int
    pg_data_dir: Path
    pg_log: Path
    mqtt_log: Path


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``status`` sees it; ``port`` is the configured one even when stopped."""

    name: str
    running: bool
    pid: int | None
    port: int
    log_file: Path


@dataclass(frozen=True)
class StackStatus:
    """Both services of one state folder."""

    state_dir: Path
    postgres: ServiceStatus
    mosquitto: ServiceStatus

    @property
    def services(self) -> tuple[ServiceStatus, ServiceStatus]:
        """The services in start order."""
        return (self.postgres, self.mosquitto)


class DevStack:
    """The services of one state folder; also the handle fault tests use to crash them."""

    def __init__(
        self,
        state_dir: Path,
        pg_port: int = DEFAULT_PG_PORT,
        mqtt_port: int = DEFAULT_MQTT_PORT,
        *,
        broker_auth: bool | None = None,
    ) -> None:
        """``broker_auth``: the broker refuses anonymous clients and applies per-agent logins
        and the topic ACL (``<state>/mosquitto/passwd`` and ``acl``), as production does;
        ``up`` gives the collector and the simulated fleet their accounts and puts those
        logins in their MQTT URLs. ``None`` keeps what the stack was last brought up with
        (no logins for a new one), so a handle that does not say, like a fault test's
        restart of the broker, cannot turn the logins off.
        """
        self.state_dir = state_dir.resolve()
        self.pg_port = pg_port
        self.mqtt_port = mqtt_port
        self.broker_auth = broker_auth
        broker_home = self.state_dir / "mosquitto"
        self.auth_files = AuthFiles(broker_home / "passwd", broker_home / "acl")
        self._record_file = self.state_dir / "stack.json"
        self._credentials_file = self.state_dir / "credentials.json"
        self._env_file = self.state_dir / "env"

    def up(self) -> StackInfo:
        """Start what is not running, provision the database, write the env file."""
        find_postgres()  # fail with an install hint before creating anything
        find_mosquitto()
        policy_dir()
        with self._locked():
            previous = load_record(self._record_file)
            self._check_ports(previous)
            pg_home = previous.pg_home if previous else self._choose_pg_home()
            broker_auth = self.broker_auth
            if broker_auth is None:
                broker_auth = previous is not None and previous.broker_auth
            record = StackRecord(pg_home, self.pg_port, self.mqtt_port, broker_auth)
            postgres, mosquitto = self._services(record)
            save_record(self._record_file, record)
            postgres.start()
            password = load_or_create_password(self._credentials_file)
            postgres.provision(password)
            logins = {kind: self._login(record, kind) for kind in _CREDENTIALS}
            if previous is not None and previous.broker_auth != broker_auth:
                mosquitto.stop()  # its config changes: it starts again with the new one
            elif broker_auth and mosquitto.pid() is not None:
                mosquitto.reload()  # running: it reads the logins written above again
            mosquitto.start()
            info = self._info(record, password, logins)
            write_private(
                self._env_file,
                f"# Written by `instrumetry dev up`. Load: set -a; . {self._env_file}; set +a\n"
                f"INSTRUMETRY_DATABASE_URL={info.database_url}\n"
                f"INSTRUMETRY_MQTT_URL={info.mqtt_url}\n"
                f"INSTRUMETRY_FLEET_MQTT_URL={info.fleet_mqtt_url}\n",
            )
            return info

    def down(self) -> None:
        """Stop both services; data, credentials and the env file stay for the next ``up``."""
        if not self.state_dir.is_dir():
            return
        with self._locked():
            postgres, mosquitto = self._services(self._record_or_default())
            mosquitto.stop()
            postgres.stop()

    def status(self) -> StackStatus:
        """Whether each service runs, with pid and port; reads files only, starts nothing."""
        record = self._record_or_default()
        postgres, mosquitto = self._services(record)
        pg_pid, mqtt_pid = postgres.pid(), mosquitto.pid()
        return StackStatus(
            state_dir=self.state_dir,
            postgres=ServiceStatus(
                "postgres", pg_pid is not None, pg_pid, record.pg_port, postgres.log_file
            ),
            mosquitto=ServiceStatus(
                "mosquitto", mqtt_pid is not None, mqtt_pid, record.mqtt_port, mosquitto.log_file
            ),
        )

    def purge(self) -> None:
        """Stop and delete everything, including a cluster kept outside the state folder."""
        record = self._record_or_default()
        self.down()
        if record.pg_home.is_relative_to(FALLBACK_ROOT):
            shutil.rmtree(record.pg_home.parent, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def kill_postgres(self) -> None:
        """SIGKILL PostgreSQL and its backends, as a crash would (for fault tests)."""
        self._recorded_services()[0].kill()

    def stop_postgres(self) -> None:
        """Shut PostgreSQL down cleanly, as a database outage for maintenance would."""
        self._recorded_services()[0].stop()

    def start_postgres(self) -> None:
        """Start PostgreSQL again after ``kill_postgres`` or ``stop_postgres``."""
        postgres = self._recorded_services()[0]
        if postgres.pid() is None:
            ensure_port_free(postgres.port, *PG_PORT_HINT)
            postgres.start()

    def reload_mosquitto(self) -> None:
        """Make the running broker read its password and ACL files again."""
        self._recorded_services()[1].reload()

    def kill_mosquitto(self) -> None:
        """SIGKILL the broker, losing what it has not autosaved (for fault tests)."""
        self._recorded_services()[1].kill()

    def stop_mosquitto(self) -> None:
        """Stop the broker cleanly; it saves its persistence file first."""
        self._recorded_services()[1].stop()

    def start_mosquitto(self) -> None:
        """Start the broker again after ``kill_mosquitto`` or ``stop_mosquitto``."""
        mosquitto = self._recorded_services()[1]
        if mosquitto.pid() is None:
            ensure_port_free(mosquitto.port, *MQTT_PORT_HINT)
            mosquitto.start()

    def _services(self, record: StackRecord) -> tuple[Postgres, Mosquitto]:
        return (
            Postgres(record.pg_home, record.pg_port),
            Mosquitto(
                self.state_dir / "mosquitto",
                record.mqtt_port,
                self.auth_files if record.broker_auth else None,
            ),
        )

    def _record_or_default(self) -> StackRecord:
        return load_record(self._record_file) or StackRecord(
            self.state_dir / "pg", self.pg_port, self.mqtt_port
        )

    def _recorded_services(self) -> tuple[Postgres, Mosquitto]:
        """The services of a stack brought up before, as fault tests expect."""
        record = load_record(self._record_file)
        if record is None:
            raise ServiceError(f"no dev stack in {self.state_dir}; run `instrumetry dev up` first")
        return self._services(record)

    def _choose_pg_home(self) -> Path:
        """``<state>/pg`` if the server's user can reach it, else a home under /var/lib."""
        if server_user_can_reach(self.state_dir):
            return self.state_dir / "pg"
        home = fallback_pg_home(self.state_dir)
        for directory in (FALLBACK_ROOT.parent, FALLBACK_ROOT, home.parent):
            directory.mkdir(exist_ok=True)
            directory.chmod(0o755)
        if not server_user_can_reach(home.parent):
            raise ServiceError(f"user {SYSTEM_USER} cannot reach {home.parent}; check its parents")
        return home

    def _check_ports(self, previous: StackRecord | None) -> None:
        """Fail before starting anything if a wanted port is taken."""
        pg_running = mqtt_running = None
        if previous:
            postgres, mosquitto = self._services(previous)
            pg_running = postgres.running_port()
            mqtt_running = previous.mqtt_port if mosquitto.pid() is not None else None
        self._check_port("PostgreSQL", pg_running, self.pg_port, PG_PORT_HINT)
        self._check_port("Mosquitto", mqtt_running, self.mqtt_port, MQTT_PORT_HINT)

    def _check_port(
        self, name: str, running_port: int | None, wanted: int, hint: tuple[str, str]
    ) -> None:
        """A port held by our own running service is fine if it is the one wanted."""
        if running_port is None:
            ensure_port_free(wanted, *hint)
        elif running_port != wanted:
            raise ServiceError(
                f"{name} of {self.state_dir} already runs on port {running_port}; "
                f"run `instrumetry dev down` before moving it to port {wanted}"
            )

    def _login(self, record: StackRecord, kind: Account) -> str:
        """``NAME:<password>@`` of ``kind``'s account for an MQTT URL, ``""`` without logins.

        Each password is made once and kept in the state folder; every ``up``
        writes its hash again, so the broker's files can be rebuilt from scratch.
        """
        if not record.broker_auth:
            return ""
        name, file_name = _CREDENTIALS[kind]
        self.auth_files.password_file.parent.mkdir(parents=True, exist_ok=True)
        credentials = self.state_dir / file_name
        try:
            password = credentials.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            password = secrets.token_urlsafe(24)
            write_private(credentials, password + "\n")
        self.auth_files.add_account(kind, name, password)
        return f"{name}:{quote(password, safe='')}@"

    def _info(self, record: StackRecord, password: str, logins: dict[Account, str]) -> StackInfo:
        postgres, mosquitto = self._services(record)
        return StackInfo(
            state_dir=self.state_dir,
            env_file=self._env_file,
            database_url=(
                f"postgresql://{APP_ROLE}:{quote(password, safe='')}"
                f"@127.0.0.1:{record.pg_port}/{APP_DATABASE}"
            ),
            mqtt_url=f"mqtt://{logins[Account.COLLECTOR]}127.0.0.1:{record.mqtt_port}",
            fleet_mqtt_url=f"mqtt://{logins[Account.SIMULATOR]}127.0.0.1:{record.mqtt_port}",
            superuser_dsn=postgres.superuser_dsn(),
            pg_port=record.pg_port,
            mqtt_port=record.mqtt_port,
            pg_data_dir=postgres.data_dir,
            pg_log=postgres.log_file,
            mqtt_log=mosquitto.log_file,
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``<state>/.lock`` so two ``up``/``down`` runs never interleave."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
