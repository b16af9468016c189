"""Process and port helpers shared by the PostgreSQL and Mosquitto drivers.

Both servers daemonise, so we never hold a child handle: everything goes
through pid files, ``/proc`` and the TCP port. A pid is trusted only if
``/proc/<pid>/comm`` names the expected program, so a pid file left by a
crash whose number was later reused by another process reads as stale.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from instrumetry.domain.errors import ServiceError

_POLL_SECONDS = 0.05


def read_pid(pid_file: Path) -> int | None:
    """Return the pid on the first line of ``pid_file``, or None if absent or garbled."""
    try:
        first_line = pid_file.read_text(encoding="ascii", errors="replace").split("\n", 1)[0]
    except FileNotFoundError:
        return None
    try:
        return int(first_line.strip())
    except ValueError:
        return None


def process_is(pid: int, program: str) -> bool:
    """Tell whether ``pid`` is a live (non-zombie) process running ``program``."""
    proc = Path("/proc") / str(pid)
    try:
        comm = (proc / "comm").read_text(encoding="utf-8").strip()
        state = (proc / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return comm == program and state not in {"Z", "X"}


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def port_accepts(port: int) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_port_free(port: int, option: str, envvar: str) -> None:
    """Fail with a one-line hint if another process listens on 127.0.0.1:``port``.

    SO_REUSEADDR makes the probe ignore TIME_WAIT leftovers of our own previous
    run (the servers set it too) while still failing on a live listener.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        if error.errno not in {errno.EADDRINUSE, errno.EACCES}:
            raise
        raise ServiceError(
            f"port {port} is already in use by another process; "
            f"choose another with {option} or {envvar}"
        ) from None
    finally:
        probe.close()


def terminate(pid: int, program: str, timeout: float) -> None:
    """Stop ``pid`` with SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not process_is(pid, program):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_until(lambda: not process_is(pid, program), timeout):
            return
    raise ServiceError(f"{program} (pid {pid}) did not exit after SIGKILL")


def kill_group(pid: int, program: str, timeout: float) -> None:
    """SIGKILL the whole process group led by ``pid``, as a power cut would.

    Daemons lead their own session, so the group holds the server and all its
    workers; killing only the leader would leave workers holding the port. A
    process that leads no group is killed alone, never the group it is in.
    """
    if not process_is(pid, program):
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return

    def group_gone() -> bool:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        return False

    if not wait_until(group_gone, timeout):
        raise ServiceError(f"{program} process group {pid} survived SIGKILL")


def run(command: Sequence[str], what: str, cwd: Path, timeout: float) -> str:
    """Run a service tool, returning its stdout; fail with its last stderr line.

    ``what`` names the step in the error ("initdb", "pg_ctl start"), so the
    one-line message says which step broke and why.
    """
    try:
        result = subprocess.run(
            list(command),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise ServiceError(f"{what} failed: {reason}")
    return result.stdout


def log_size(log_file: Path) -> int:
    """Current size of ``log_file`` (0 if absent), to read only what a start adds."""
    try:
        return log_file.stat().st_size
    except FileNotFoundError:
        return 0


def last_problem(log_file: Path, offset: int) -> str:
    """The last error line written to ``log_file`` after ``offset``, else its last line."""
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "it wrote no log"
    lines = [line.strip() for line in lines if line.strip()]
    problems = [line for line in lines if any(word in line for word in ("Error", "FATAL"))]
    return (problems or lines or ["its log is empty"])[-1]
