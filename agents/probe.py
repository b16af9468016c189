"""The PC probe: is the instrument's control software running, and who is logged in?

Optional (``pip install instrumetry[probe]``, psutil): only agents whose config
has a ``[probe]`` section import it. Listing processes costs a few
milliseconds, so it is done every ``interval_s`` (10 s by default), not on every
meter poll; in between the last answer stands. A failed listing answers
``None`` — "not known" — and the meter alone decides, so a broken probe never
invents a run. The logged-in user is logged when it changes: the wire format
has no field for it, and the local log is where a lab manager looks for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import psutil

log = logging.getLogger(__name__)


class ProcessProbe:
    """Whether any process named one of ``names`` (case-insensitive) runs on this PC."""

    def __init__(
        self,
        names: Iterable[str],
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = frozenset(name.casefold() for name in names)
        self._interval_s = interval_s
        self._clock = clock
        self._checked_at = -float("inf")
        self._running: bool | None = None
        self.user: str | None = None

    def running(self) -> bool | None:
        """The last answer, refreshed once ``interval_s`` has passed; ``None`` if unknown."""
        now = self._clock()
        if now - self._checked_at >= self._interval_s:
            self._checked_at = now
            self._refresh()
        return self._running

    def _refresh(self) -> None:
        try:
            running = any(
                (process.info["name"] or "").casefold() in self.names
                for process in psutil.process_iter(["name"])
            )
            users = psutil.users()
        except (psutil.Error, OSError) as error:
            if self._running is not None:
                log.warning("cannot list processes (%s): the meter alone decides", error)
            self._running = None
            return
        if running != self._running:
            log.info("control software %s", "running" if running else "not running")
        self._running = running
        user = users[0].name if users else None
        if user != self.user:
            log.info("logged-in user: %s", user or "nobody")
            self.user = user
