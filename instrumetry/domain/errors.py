"""Errors that name a user's mistake, shown as one line without a traceback."""


class InstrumetryError(Exception):
    """A problem the user can fix: bad input, a missing service, a port in use.

    The CLI prints ``str(error)`` on one line and exits non-zero; anything that
    is not an ``InstrumetryError`` is a bug and keeps its traceback.
    """


class ConfigError(InstrumetryError):
    """A configuration file or option is missing, malformed or out of range."""


class ServiceError(InstrumetryError):
    """A service (broker, database, meter) is unreachable or refused us."""


class WireError(InstrumetryError):
    """A message on the wire does not follow docs/PROTOCOL.md."""
