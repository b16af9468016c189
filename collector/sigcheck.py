"""Checking a batch's Ed25519 signatures in child processes: one round trip per batch.

The checks are ``ed25519.PublicKey.verify``'s (libsodium's speed, OpenSSL's
answers). They release the GIL, but each of a batch's hundreds of checks must
take it back, and the collector's other threads hold it most of the time:
checked on a thread of the collector, the signatures ran at a third of their
speed and bounded the whole collector (docs/BENCHMARKS.md). A child process
checks a whole batch as one task, on the other core, without the GIL.

The children are plain ``python -m collector.sigcheck`` processes on pipes,
not a ``multiprocessing`` pool: a child ends when its stdin closes, so a
collector killed with ``kill -9`` leaves none behind, and starting one does
not touch the signal mask of the collector's thread (``multiprocessing``'s
resource tracker unblocks SIGTERM in the thread that first starts a child).
The children only save time: if one fails, the batch counts as unchecked and
the collector checks it on its own thread. Later batches are checked on the
calling thread until a new child is tried, one second after the failure, then
two, four, up to five minutes while the children keep failing at once.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import msgspec

from collector import frames
from instrumetry.domain.ed25519 import PublicKey
from instrumetry.domain.errors import WireError

log = logging.getLogger(__name__)

Item = tuple[bytes, bytes, bytes]
"""``(raw public key, signature, signed message)``."""

_RETRY_MIN_S, _RETRY_MAX_S = 1.0, 300.0
_KEYS_MAX = 100_000
_keys: dict[bytes, PublicKey] = {}
"""The loaded keys of this process: loading one costs a third of a check."""


def check(items: Sequence[Item]) -> list[bool]:
    """Whether each signature verifies with its key (raw keys that are no key never do)."""
    results = []
    for raw, signature, message in items:
        key = _keys.get(raw)
        if key is None:
            if len(_keys) >= _KEYS_MAX:
                _keys.clear()
            try:
                key = _keys[raw] = PublicKey(raw)
            except WireError:
                results.append(False)
                continue
        results.append(key.verify(signature, message))
    return results


class Checker:
    """``check`` split between ``processes`` children; with none, on the calling thread.

    Children start on first use and live until ``close``; one ``Checker`` is
    used by one thread at a time. ``on_failure`` is called each time a child
    fails (a metric: the collector then runs at half speed). ``clock`` times
    the wait before new children are tried after a failure.
    """

    def __init__(
        self,
        processes: int,
        on_failure: Callable[[], object] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processes = processes
        self._on_failure = on_failure
        self._clock = clock
        self._children: list[subprocess.Popen[bytes]] = []
        self._retry_at = 0.0
        """After a failure, no child starts before this ``clock`` time."""
        self._retry_s = _RETRY_MIN_S

    def __call__(self, items: Sequence[Item]) -> list[bool] | None:
        """``check(items)``, or ``None`` if a child failed (new ones are tried later)."""
        if not self._processes or not items:
            return check(items)
        if not self._children and self._clock() < self._retry_at:
            return check(items)
        try:
            if not self._children:
                self._children = [_start() for _ in range(self._processes)]
            size = -(-len(items) // len(self._children))
            parts = [items[start : start + size] for start in range(0, len(items), size)]
            for child, part in zip(self._children, parts, strict=False):
                assert child.stdin is not None
                frames.write(child.stdin, msgspec.msgpack.encode(part))
            results = []
            for child, part in zip(self._children, parts, strict=False):
                assert child.stdout is not None
                answer = frames.read(child.stdout)
                if answer is None or len(answer) != len(part):
                    raise OSError(f"child {child.pid} ended (exit code {child.poll()})")
                results += [flag == 1 for flag in answer]
        except OSError as error:
            log.warning(
                "signature checking process failed (%s); checking here, trying a new one in %.0f s",
                error,
                self._retry_s,
            )
            self._on_failure()
            self.close()
            self._retry_at = self._clock() + self._retry_s
            self._retry_s = min(2 * self._retry_s, _RETRY_MAX_S)
            return None
        self._retry_s = _RETRY_MIN_S
        return results

    def close(self) -> None:
        """End the children: closing their stdin ends them. Idempotent."""
        children, self._children = self._children, []
        for child in children:
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # a dead child's: unflushed bytes
                        pipe.close()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _start() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "collector.sigcheck"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def main() -> None:
    """The child: answer each frame of items with one byte per item, 1 if it verifies."""
    decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes, bytes]])
    while (request := frames.read(sys.stdin.buffer)) is not None:
        frames.write(sys.stdout.buffer, bytes(check(decoder.decode(request))))


if __name__ == "__main__":
    main()
