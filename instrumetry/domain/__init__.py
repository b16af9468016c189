"""The shared, pure domain: states, wire format, interval and usage math, calendars.

Nothing here does I/O or reads a clock: functions take ``now`` and values and
return values, so every component (agent, collector, API, simulator) computes
the same thing the same way, and the math is testable without services.
"""
