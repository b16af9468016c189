"""``instrumetry collector run`` as a child process: what fault tests kill and benchmarks time.

A real process, not a thread, so that ``kill -9`` loses exactly what a crash
loses and a benchmark measures one collector with its own interpreter (and
GIL), as deployed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_READY = "storing messages"
"""What the collector prints once it is subscribed (instrumetry.cli.collector)."""


class CollectorProcess:
    """One collector child; its output goes to ``log_file`` (appended across restarts).

    ``settings`` are further ``INSTRUMETRY_*`` variables, e.g. ``batch_ms="50"``.
    """

    def __init__(
        self,
        log_file: Path,
        *,
        database_url: str,
        mqtt_url: str,
        client_id: str,
        share_group: str,
        verbose: bool = False,
        **settings: str,
    ) -> None:
        self.log_file = log_file
        self.command = [sys.executable, "-m", "instrumetry", "collector", "run"]
        if verbose:
            self.command.append("--verbose")  # one log line per batch, with its counts
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("INSTRUMETRY_")} | {
            "INSTRUMETRY_STATE_DIR": "/nonexistent",  # never read a developer's dev stack
            "INSTRUMETRY_DATABASE_URL": database_url,
            "INSTRUMETRY_MQTT_URL": mqtt_url,
            "INSTRUMETRY_CLIENT_ID": client_id,
            "INSTRUMETRY_SHARE_GROUP": share_group,
            **{f"INSTRUMETRY_{name.upper()}": value for name, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until it is subscribed; ``RuntimeError`` with its log if not."""
        self.wait_ready(self.launch(), timeout)

    def launch(self) -> int:
        """Start it without waiting; return the log offset to pass to ``wait_ready``.

        Several collectors launched before any is waited for start together.
        """
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return offset

    def wait_ready(self, offset: int, timeout: float = 60) -> None:
        """Wait until the collector launched at log ``offset`` is subscribed."""
        assert self.process is not None, "launch() it first"
        deadline = time.monotonic() + timeout
        while _READY not in self._log_since(offset):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the collector did not start:\n{self._log_since(offset)}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would, and reap it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (drain and exit cleanly); return its exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None
        return status

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.kill()

    def _log_since(self, offset: int) -> str:
        with self.log_file.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
