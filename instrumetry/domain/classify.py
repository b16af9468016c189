"""Power readings to states: thresholds with hysteresis and a minimum dwell time.

A noisy meter must not make an instrument flap between states, and a clean
step must be detected within one poll plus the dwell time. The classifier is a
small state machine fed ``(now, power)``; it never reads a clock itself, so the
real agent and the simulator's virtual agents run the very same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from instrumetry.domain.combine import RunningIf, combine
from instrumetry.domain.errors import ConfigError
from instrumetry.domain.states import State


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per-instrument classification settings (watts and seconds).

    Rising edges switch at the threshold itself; falling edges only once the
    power drops ``hysteresis_w`` below it. A new state is adopted only after it
    has been seen continuously for ``min_dwell_s``; a reading that is missing
    for ``unknown_after_s`` makes the state ``unknown`` (never ``off``).
    """

    standby_w: float = 5.0
    run_w: float = 100.0
    hysteresis_w: float = 2.0
    min_dwell_s: float = 30.0
    unknown_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.standby_w < self.run_w:
            raise ConfigError(
                f"thresholds: need 0 <= standby_w < run_w, got standby_w={self.standby_w} "
                f"run_w={self.run_w}"
            )
        if not 0 <= self.hysteresis_w < self.standby_w or self.hysteresis_w >= (
            self.run_w - self.standby_w
        ):
            raise ConfigError(
                f"thresholds: hysteresis_w={self.hysteresis_w} must be >= 0, below standby_w "
                f"and below run_w - standby_w"
            )
        if self.min_dwell_s < 0 or self.unknown_after_s < 0:
            raise ConfigError("thresholds: min_dwell_s and unknown_after_s must be >= 0")

    def level(self, current: State, power_w: float) -> State:
        """The state a reading points to, given the state we are in (hysteresis)."""
        run_edge = self.run_w - (self.hysteresis_w if current is State.RUNNING else 0.0)
        if power_w >= run_edge:
            return State.RUNNING
        on = current in (State.STANDBY, State.RUNNING)
        standby_edge = self.standby_w - (self.hysteresis_w if on else 0.0)
        return State.STANDBY if power_w >= standby_edge else State.OFF


@dataclass(frozen=True, slots=True)
class Transition:
    """A committed state change, timed at the first reading that showed it."""

    at_ms: int
    from_state: State
    to_state: State
    power_w: float | None


class Classifier:
    """Debounced state machine over successive meter readings.

    ``step`` takes the reading time in epoch milliseconds and the power in watts
    (``None`` when the meter could not be read) and returns the transition the
    reading completes, if any. The transition is dated at the first reading of
    the new state, so measured intervals match the truth within one poll.
    """

    __slots__ = (
        "_candidate",
        "_candidate_power",
        "_candidate_since",
        "_missing_since",
        "running_if",
        "state",
        "thresholds",
    )

    def __init__(
        self,
        thresholds: Thresholds,
        state: State = State.UNKNOWN,
        running_if: RunningIf = RunningIf.POWER,
    ) -> None:
        self.thresholds = thresholds
        self.state = state
        self.running_if = running_if
        self._candidate: State | None = None
        self._candidate_since = 0
        self._candidate_power: float | None = None
        self._missing_since: int | None = None

    def step(
        self, now_ms: int, power_w: float | None, process_running: bool | None = None
    ) -> Transition | None:
        """Feed one reading; return the transition it completes, if any.

        ``process_running`` is the PC probe's word, combined with the power
        level by ``running_if`` (``None``: not checked, power alone decides).
        """
        if power_w is None:
            return self._missing(now_ms)
        self._missing_since = None
        power_level = self.thresholds.level(self.state, power_w)
        target = combine(power_level, process_running, self.running_if)
        if self.state is State.UNKNOWN:
            # Knowing beats waiting: the first good reading ends "unknown" at once.
            return self._commit(target, now_ms, power_w)
        if target is self.state:
            self._candidate = None
            return None
        if target is not self._candidate:
            self._candidate = target
            self._candidate_since = now_ms
            self._candidate_power = power_w
        if now_ms - self._candidate_since >= self.thresholds.min_dwell_s * 1000:
            return self._commit(target, self._candidate_since, self._candidate_power)
        return None

    def suspend(self, now_ms: int) -> Transition | None:
        """Stop knowing the state as of ``now_ms``: commit ``unknown`` at once.

        For when the agent cannot keep what it measures (its outbox is full):
        the time until readings are classified again is then ``unknown``, not a
        state prolonged by guesswork. The next ``step`` with a reading resumes.
        """
        self._missing_since = None
        return self._commit(State.UNKNOWN, now_ms, None)

    def _missing(self, now_ms: int) -> Transition | None:
        """A failed read: ``unknown`` once reads have failed for ``unknown_after_s``.

        The transition is dated at the first failed read, when data stopped.
        """
        if self.state is State.UNKNOWN:
            return None
        if self._missing_since is None:
            self._missing_since = now_ms
        if now_ms - self._missing_since >= self.thresholds.unknown_after_s * 1000:
            return self._commit(State.UNKNOWN, self._missing_since, None)
        return None

    def _commit(self, target: State, at_ms: int, power_w: float | None) -> Transition | None:
        self._candidate = None
        if target is self.state:
            return None
        transition = Transition(at_ms, self.state, target, power_w)
        self.state = target
        return transition
