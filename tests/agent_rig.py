"""A real agent beside a real collector: processes, files and checks the agent's tests share.

An ``AgentRig`` is one instrument registered in a database, its signing key,
its ``agent.toml`` and a simulated meter; it starts ``instrumetry agent run``
and ``instrumetry collector run`` as child processes, so a test can kill -9
either one. ``settle_and_verify`` ends a test the same way every time: the
instrument is held steady, the agent's outbox drains, and the database must
hold every event the agent ever made, exactly once, as one intact signed chain.
The agent is started as the service files start it: the lean
``instrumetry-agent`` entry point (``python -m agents``).
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agents.config import parse_config, render_config
from agents.keys import generate_key
from agents.outbox import FILE_NAME
from instrumetry.domain import wire
from instrumetry.domain.states import State

INSTRUMETRY = str(Path(sys.executable).parent / "instrumetry")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.05)


def stored_events(database_url: str, instrument: str) -> list[wire.Event]:
    """The instrument's events as stored, re-encoded as the agent signed them."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT boot_id, seq, device_time, from_state, to_state, power_w, prev_hash, "
            "signature FROM events WHERE instrument_id = %s ORDER BY seq, device_time",
            (instrument,),
        ).fetchall()
    return [
        wire.Event(
            v=wire.SCHEMA_VERSION,
            instrument=instrument,
            boot=boot.hex,
            seq=seq,
            t=(device_time - _EPOCH) // timedelta(milliseconds=1),
            from_state=State(from_state),
            to_state=State(to_state),
            power_w=power_w,
            prev=bytes(prev).hex(),
            sig=base64.b64encode(bytes(signature)).decode(),
        )
        for boot, seq, device_time, from_state, to_state, power_w, prev, signature in rows
    ]


def verify_chain(events: list[wire.Event], public_key: Ed25519PublicKey) -> None:
    """Seqs 1..N once each, every ``prev`` the hash of its predecessor, every signature valid,
    and within one boot each event starts in the state the previous one ended in."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "gap or duplicate"
    assert events[0].prev == wire.GENESIS
    for earlier, later in itertools.pairwise(events):
        assert later.prev == wire.event_hash(earlier), f"chain broken at seq {later.seq}"
        if later.boot == earlier.boot:  # a restart begins from unknown
            assert later.from_state is earlier.to_state, f"states jump at seq {later.seq}"
    for event in events:
        public_key.verify(wire.signature_bytes(event), wire.canonical(event))


def register_instrument(database_url: str, instrument: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO institutions (id, name) VALUES ('lab', 'Test lab') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO instruments (id, institution_id, name) VALUES (%s, 'lab', 'NMR')",
            (instrument,),
        )


class AgentRig:
    """One instrument's agent and a collector, as child processes, around a simulated meter."""

    def __init__(
        self,
        work: Path,
        *,
        database_url: str,
        mqtt_url: str,
        meter: dict[str, Any],
        broker: dict[str, Any] | None = None,
        outbox: dict[str, Any] | None = None,
    ) -> None:
        self.work = work
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.instrument = f"rig-{uuid.uuid4().hex[:10]}"
        self.tag = uuid.uuid4().hex[:8]
        register_instrument(database_url, self.instrument)
        key = generate_key(work / "agent.key")
        raw_key = key.public_key()
        self.public_key = Ed25519PublicKey.from_public_bytes(raw_key.public_bytes_raw())
        config = parse_config(
            {
                "instrument_id": self.instrument,
                "key_file": str(work / "agent.key"),
                "state_dir": str(work / "state"),
                "heartbeat_interval_s": 1.0,
                "broker": {
                    "url": mqtt_url,
                    "keepalive_s": 5,
                    "replay_per_s": 500.0,
                    "ack_timeout_s": 3.0,
                }
                | (broker or {}),
                "meter": {
                    "timeout_s": 0.2,
                    "poll_interval_s": 0.1,
                    "backoff_max_s": 0.4,
                }
                | meter,
                # Readings may stall for a while on a loaded machine (an RTU read over a
                # pty): a reading missed for 0.6 s made an unknown transition while the
                # tests held the meter steady, and stopping the agent then left it unsent.
                "thresholds": {"min_dwell_s": 0.25, "unknown_after_s": 2.0},
                "outbox": outbox or {},
                "log": {"file": str(work / "agent.log"), "level": "DEBUG"},
            },
            "rig",
        )
        self.config_path = work / "agent.toml"
        self.config_path.write_text(render_config(config), encoding="utf-8")
        self.agent: subprocess.Popen[bytes] | None = None
        self.collector: subprocess.Popen[str] | None = None

    # --- processes ---------------------------------------------------------

    def start_agent(self) -> None:
        assert self.agent is None or self.agent.poll() is not None
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agents", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            env=os.environ | {"PYTHONFAULTHANDLER": "1"},
            stderr=(self.work / "agent.stderr").open("ab"),
        )

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(timeout=10)

    def stop_agent(self) -> None:
        """SIGTERM, as a service manager stops it; it must exit 0."""
        assert self.agent is not None
        self.agent.send_signal(signal.SIGTERM)
        try:
            code = self.agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.agent.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
            self.agent.wait(timeout=10)
            code = None
        assert code == 0, (self.work / "agent.stderr").read_text()

    def start_collector(self) -> None:
        assert self.collector is None or self.collector.poll() is not None
        env = os.environ | {
            "INSTRUMETRY_DATABASE_URL": self.database_url,
            "INSTRUMETRY_MQTT_URL": self.mqtt_url,
            "INSTRUMETRY_CLIENT_ID": f"collector-{self.tag}",
            "INSTRUMETRY_SHARE_GROUP": f"group-{self.tag}",
            "INSTRUMETRY_BATCH_MS": "50",
        }
        self.collector = subprocess.Popen(
            [INSTRUMETRY, "collector", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(self.work / "collector.stderr").open("ab"),
            text=True,
        )
        assert self.collector.stdout is not None
        for line in self.collector.stdout:
            if "storing messages" in line:
                return
        raise AssertionError(
            "the collector did not start: " + (self.work / "collector.stderr").read_text()
        )

    def kill_collector(self) -> None:
        assert self.collector is not None
        self.collector.send_signal(signal.SIGKILL)
        self.collector.wait(timeout=10)

    def close(self) -> None:
        """Leave nothing running, whatever state the test ended in."""
        for process in (self.agent, self.collector):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    # --- observations ------------------------------------------------------

    def outbox(self) -> tuple[int, int]:
        """(events made so far, events waiting for an ack), read from the agent's state."""
        path = Path(self.work / "state" / FILE_NAME)
        if not path.exists():
            return 0, 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                head = db.execute("SELECT next_seq FROM chain").fetchone()
                (pending,) = db.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.OperationalError:  # the agent is still creating its schema
            return 0, 0
        return (head[0] - 1, pending) if head else (0, 0)

    def stored(self) -> list[wire.Event]:
        return stored_events(self.database_url, self.instrument)

    def boots_stored(self) -> set[str]:
        return {event.boot for event in self.stored()}

    def settle_and_verify(
        self, hold: Callable[[], None], timeout_s: float = 60
    ) -> list[wire.Event]:
        """Hold the instrument steady (``hold``), let everything drain, stop the agent, check.

        Every event the agent made is in the database exactly once and the
        chain is intact; returns the stored events.
        """
        hold()
        seen, seen_since = -1, time.monotonic()  # events made so far, and since when

        def drained_and_quiet() -> bool:
            # Quiet for a second: the held power's own transition (after a poll and
            # the dwell) may come after the outbox was first seen empty.
            nonlocal seen, seen_since
            made, pending = self.outbox()
            if made != seen:
                seen, seen_since = made, time.monotonic()
            drained = pending == 0 and made > 0 and len(self.stored()) == made
            return drained and time.monotonic() - seen_since >= 1.0

        wait_for(drained_and_quiet, timeout_s, "the outbox to drain into the database")
        self.stop_agent()
        made, pending = self.outbox()
        events = self.stored()
        assert pending == 0
        assert len(events) == made
        verify_chain(events, self.public_key)
        return events


@contextmanager
def agent_rig(work: Path, **kwargs: Any) -> Iterator[AgentRig]:
    rig = AgentRig(work, **kwargs)
    try:
        yield rig
    finally:
        rig.close()


@contextmanager
def pty_pair(folder: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: (the meter's end, the agent's end).

    Skips without socat, but fails where services are mandatory (CI), where a
    skip would hide a broken install script.
    """
    socat = shutil.which("socat")
    if socat is None:
        if os.environ.get("CI") or os.environ.get("INSTRUMETRY_REQUIRE_SERVICES"):
            pytest.fail("socat required but missing (scripts/install-system-deps.sh installs it)")
        pytest.skip("socat is not installed")
    meter_end, agent_end = folder / "meter-tty", folder / "agent-tty"
    process = subprocess.Popen(
        [socat, f"PTY,raw,echo=0,link={meter_end}", f"PTY,raw,echo=0,link={agent_end}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: meter_end.exists() and agent_end.exists(), 5, "socat's pty pair")
        yield str(meter_end), str(agent_end)
    finally:
        process.terminate()
        process.wait(timeout=5)
