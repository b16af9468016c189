"""How the meter's verdict and the control software's combine into an instrument's state.

Power alone cannot tell every instrument's measuring from its idling (an NMR
magnet draws the same either way), and the control software alone cannot tell
whether the instrument is even switched on. The agent's config picks the rule
per instrument (``running_if``); this module applies it, with no I/O, so it is
tested like the rest of the domain and the simulator could use it too.
"""

from __future__ import annotations

import enum

from instrumetry.domain.states import State


class RunningIf(enum.StrEnum):
    """Which signal decides ``running`` (the standby/off split is always the meter's)."""

    POWER = "power"
    """Power above the run threshold; the process is ignored (the default)."""
    PROCESS = "process"
    """The control software's process runs, and the instrument is powered."""
    POWER_OR_PROCESS = "power_or_process"
    """Either one says running (an instrument drawing no power is still off)."""
    POWER_AND_PROCESS = "power_and_process"
    """Both say running: high power without the software is standby."""


def combine(power_level: State, process_running: bool | None, rule: RunningIf) -> State:
    """The state ``power_level`` (the meter's, after hysteresis) becomes under ``rule``.

    ``process_running`` is ``None`` when the process could not be checked: the
    meter's verdict stands then, so a failing probe never invents or hides a run.
    """
    if rule is RunningIf.POWER or process_running is None or power_level is State.UNKNOWN:
        return power_level
    if power_level is State.OFF:
        return State.OFF  # nothing runs on an instrument that draws no power
    power_running = power_level is State.RUNNING
    running = {
        RunningIf.PROCESS: process_running,
        RunningIf.POWER_OR_PROCESS: power_running or process_running,
        RunningIf.POWER_AND_PROCESS: power_running and process_running,
    }[rule]
    return State.RUNNING if running else State.STANDBY
