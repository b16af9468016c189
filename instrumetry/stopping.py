"""Stopping a threaded service on SIGINT or SIGTERM, reliably.

Shared by the agent and the collector (both run a paho network thread beside
their main loop). ``signal.signal`` is not enough there: CPython 3.11 runs a
Python signal handler only in the main thread, when it next checks the
interpreter's "eval breaker", and any other thread that recomputes that flag
(paho's, on every GIL hand-over) can clear the pending-signal bit. A main
thread waiting on a timed queue get then never runs the handler, and a
SIGTERM from systemd hangs until SIGKILL; CI saw exactly that.

So on POSIX the stop signals are blocked in the calling thread, and thus in
every thread it starts afterwards, and a small thread takes them with
``sigwait``, which waits in the kernel and does not depend on the
interpreter's flags. Enter ``calling_on_stop_signals`` before any thread is
started: a thread that already runs keeps the signals unblocked, and the
kernel may hand them to it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextmanager
def calling_on_stop_signals(on_signal: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_signal(name)`` (e.g. ``"SIGTERM"``) for each stop signal received in the block.

    ``on_signal`` runs on a helper thread (or, on Windows, in a signal
    handler), so it must only set flags or put to a queue. Off the main
    thread, where signals cannot be handled, the block does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks, no such race either
        with _handlers(on_signal):
            yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    closing = threading.Event()

    def wait_for_signals() -> None:
        while True:
            signum = signal.sigwait(STOP_SIGNALS)
            if closing.is_set():
                return
            on_signal(signal.Signals(signum).name)

    waiter = threading.Thread(target=wait_for_signals, name="stop-signals", daemon=True)
    waiter.start()
    try:
        yield
    finally:
        closing.set()
        if waiter.ident is not None:
            signal.pthread_kill(waiter.ident, signal.SIGTERM)  # wakes its sigwait
        waiter.join(timeout=5)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _handlers(on_signal: Callable[[str], None]) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        on_signal(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
