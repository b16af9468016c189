"""A private Mosquitto broker for development and tests.

The generated main config holds only what is specific to this state folder
(listener, files, user); the broker policy — persistence and queue limits —
is included from ``deploy/mosquitto/conf.d``, the same files docker compose
mounts, so tests exercise the production policy.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
from pathlib import Path

from instrumetry.devstack.broker_auth import AuthFiles
from instrumetry.devstack.procs import (
    kill_group,
    last_problem,
    log_size,
    port_accepts,
    process_is,
    read_pid,
    run,
    terminate,
    wait_until,
)
from instrumetry.domain.errors import ConfigError, ServiceError

_INSTALL_HINT = "run scripts/install-system-deps.sh"
_SBIN_CANDIDATES = (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto"))
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


@functools.cache
def find_mosquitto() -> Path:
    """The broker binary; sbin is often missing from a non-root PATH, so look there too."""
    on_path = shutil.which("mosquitto")
    if on_path:
        return Path(on_path)
    for candidate in _SBIN_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ServiceError(f"mosquitto is not installed; {_INSTALL_HINT}")


def policy_dir() -> Path:
    """``deploy/mosquitto/conf.d`` of the source tree this package was loaded from."""
    directory = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "conf.d"
    if not directory.is_dir():
        raise ConfigError(
            f"broker policy {directory} is missing; run Instrumetry from its source checkout"
        )
    return directory


def _conf_path(path: Path) -> str:
    """A path as Mosquitto's line-based config can hold it: no whitespace."""
    text = str(path)
    if any(char.isspace() for char in text):
        raise ConfigError(f"path {text!r} contains whitespace, which mosquitto.conf cannot hold")
    return text


class Mosquitto:
    """One broker living in ``home``: config, pid file, log and ``data/`` (persistence).

    With ``auth`` it refuses anonymous clients and applies the password and
    ACL files (``instrumetry.devstack.broker_auth``); without, anyone may
    connect, as a development broker on the loopback interface allows.
    """

    def __init__(self, home: Path, port: int, auth: AuthFiles | None = None) -> None:
        self.home = home
        self.port = port
        self.auth = auth
        self.conf_file = home / "mosquitto.conf"
        self.data_dir = home / "data"
        self.pid_file = home / "mosquitto.pid"
        self.log_file = home / "mosquitto.log"

    def pid(self) -> int | None:
        """The broker's pid if it is running, else None."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_is(pid, "mosquitto") else None

    def start(self) -> None:
        """Start the broker unless it runs, and wait until it accepts connections."""
        if self.pid() is not None:
            return
        binary = find_mosquitto()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)  # stale: its broker is gone
        self._write_conf()
        offset = log_size(self.log_file)
        try:
            run([str(binary), "-d", "-c", str(self.conf_file)], "mosquitto", self.home, 30)
            started = wait_until(
                lambda: self.pid() is not None and port_accepts(self.port), _START_TIMEOUT
            )
        except ServiceError:  # a bad config: the reason is in its log, not on stderr
            started = False
        if not started:
            problem = last_problem(self.log_file, offset)
            raise ServiceError(f"Mosquitto did not start: {problem}; see {self.log_file}")

    def stop(self) -> None:
        """SIGTERM (the broker saves its persistence file), SIGKILL if it hangs."""
        pid = self.pid()
        if pid is not None:
            terminate(pid, "mosquitto", _STOP_TIMEOUT)
        self.pid_file.unlink(missing_ok=True)

    def reload(self) -> None:
        """SIGHUP: the broker reads its password and ACL files again."""
        pid = self.pid()
        if pid is None:
            raise ServiceError("Mosquitto is not running")
        os.kill(pid, signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL the broker: whatever it has not autosaved is lost, as in a crash."""
        pid = self.pid()
        if pid is not None:
            kill_group(pid, "mosquitto", _STOP_TIMEOUT)

    def _write_conf(self) -> None:
        # As root, Mosquitto switches to the `mosquitto` user unless told otherwise,
        # and that user cannot write persistence files in a folder we created. So it
        # runs as whoever started it; for a non-root user the line has no effect.
        user = pwd.getpwuid(os.geteuid()).pw_name
        lines = [
            "# Written by `instrumetry dev up` on every start; edits are overwritten.",
            f"listener {self.port} 127.0.0.1",
            *(
                ["allow_anonymous true"]
                if self.auth is None
                else [
                    "allow_anonymous false",
                    f"password_file {_conf_path(self.auth.password_file)}",
                    f"acl_file {_conf_path(self.auth.acl_file)}",
                ]
            ),
            f"persistence_location {_conf_path(self.data_dir)}/",
            f"pid_file {_conf_path(self.pid_file)}",
            f"log_dest file {_conf_path(self.log_file)}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"user {user}",
            f"include_dir {_conf_path(policy_dir())}",
        ]
        self.conf_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
