"""An async database connection for commands that reuse the API's query code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from instrumetry.domain.errors import ServiceError


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Any]:
    """Connect, or raise ``ServiceError`` naming the database that refused us."""
    import psycopg

    from collector.db import describe

    where = describe(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = " ".join(line.strip() for line in str(error).splitlines()) or "no answer"
        raise ServiceError(f"cannot connect to the database at {where}: {reason}") from None
    async with conn:
        yield conn
