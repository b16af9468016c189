"""Length-prefixed frames on a pipe: how the collector talks to its child processes."""

from __future__ import annotations

import struct
from typing import IO

_LENGTH = struct.Struct(">I")


def write(pipe: IO[bytes], payload: bytes) -> None:
    """Write one frame and flush it."""
    pipe.write(_LENGTH.pack(len(payload)))
    pipe.write(payload)
    pipe.flush()


def read(pipe: IO[bytes]) -> bytes | None:
    """One frame, or ``None`` at the end of the stream (also mid-frame)."""
    header = pipe.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    payload = pipe.read(length)
    return payload if len(payload) == length else None
