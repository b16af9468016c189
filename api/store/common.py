"""What the registry stores share: conflicts, pages and LIKE patterns."""

from __future__ import annotations

from starlette.exceptions import HTTPException


class Conflict(HTTPException):
    """409: the request contradicts what is stored (a duplicate id, rows that refer to it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class NotFound(HTTPException):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(404, f"no {what} has id {key!r}")


def contains(text: str | None) -> str | None:
    """A LIKE pattern matching ``text`` anywhere, its wildcards taken literally."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
