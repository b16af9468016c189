"""The agent's log file: JSON lines, rotated by size so months unattended never fill the disk."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.config import LogConfig
from agents.logs import setup_logging
from instrumetry.domain.errors import ConfigError

MAX_BYTES = 4096
BACKUPS = 2


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back to pytest as it was, with the test's handlers closed."""
    root, pymodbus = logging.getLogger(), logging.getLogger("pymodbus")
    handlers, level, pymodbus_level = root.handlers[:], root.level, pymodbus.level
    yield root
    pymodbus.setLevel(pymodbus_level)
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_the_log_file_is_json_lines_rotated_at_max_bytes_keeping_backups(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    path = tmp_path / "logs" / "agent.log"  # its folder is created too
    setup_logging(LogConfig(file=str(path), max_bytes=MAX_BYTES, backups=BACKUPS, level="INFO"))
    log = logging.getLogger("agents.test")
    for n in range(200):  # about 20 KB of records: several rotations
        log.info("poll %d: meter 192.168.1.50:502 unit 1 answers 912.5 W", n)
    log.debug("below the configured level")
    try:
        raise OSError("no route to host")
    except OSError:
        log.exception("read failed")

    files = sorted(tmp_path.joinpath("logs").iterdir())
    assert [f.name for f in files] == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all(f.stat().st_size <= MAX_BYTES for f in files)
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert set(entries[0]) == {"t", "level", "logger", "msg"}
    assert entries[0]["logger"] == "agents.test"
    last = entries[-1]
    assert (last["level"], last["msg"]) == ("ERROR", "read failed")
    assert "OSError: no route to host" in last["exc"]
    older = [json.loads(line) for line in files[1].read_text(encoding="utf-8").splitlines()]
    assert older[-1]["msg"].startswith("poll ")  # rotated whole lines, nothing cut
    everything = "".join(f.read_text(encoding="utf-8") for f in files)
    assert "below the configured level" not in everything
    assert "poll 0:" not in everything  # the oldest records went with the oldest file


def test_a_log_file_that_cannot_be_opened_is_a_config_error(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"log\.file {blocker}/agent\.log: cannot open"):
        setup_logging(LogConfig(file=str(blocker / "agent.log")))
