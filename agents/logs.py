"""The agent's logs: one JSON object per line, in a size-rotated file, or plain text on stderr.

An agent runs for months on a PC nobody watches, so its log must neither
fill the disk (``RotatingFileHandler``: ``max_bytes`` per file, ``backups``
old files kept) nor need a parser to read: JSON lines load into any log tool
and still read fine in Notepad. Without a file (a terminal, or systemd's
journal, which rotates by itself) it logs plain lines to stderr.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agents.config import LogConfig
from instrumetry.domain.errors import ConfigError

_PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """``{"t": ISO time, "level", "logger", "msg"[, "exc"]}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "t": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(config: LogConfig, *, verbose: bool = False) -> None:
    """Route the root logger as ``config`` says; ``verbose`` forces DEBUG."""
    handler: logging.Handler
    if config.file is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_PLAIN))
    else:
        # Imported only here: with its pickle it is half a MB of an agent's
        # 40 MB budget (docs/BENCHMARKS.md), and agents under systemd log to
        # the journal.
        from logging.handlers import RotatingFileHandler  # noqa: PLC0415

        path = Path(config.file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(
                path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
            )
        except OSError as error:
            raise ConfigError(f"log.file {path}: cannot open: {error.strerror or error}") from None
        handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else config.level)
    # pymodbus logs every failed read with a frame dump; the agent logs one line.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
