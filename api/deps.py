"""Dependencies of the routes, as ``Annotated`` aliases (``conn: Conn``).

The pool and the settings live on the application (built by its lifespan),
never in module globals, so several apps (tests) can run in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.settings import ApiSettings

AsyncPool = AsyncConnectionPool[AsyncConnection[Any]]


def _pool(request: Request) -> AsyncPool:
    return cast(AsyncPool, request.app.state.pool)


def _settings(request: Request) -> ApiSettings:
    return cast(ApiSettings, request.app.state.settings)


async def _connection(
    pool: Annotated[AsyncPool, Depends(_pool)],
) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection for one request, returned to the pool afterwards."""
    async with pool.connection() as conn:
        yield conn


Pool = Annotated[AsyncPool, Depends(_pool)]
Settings = Annotated[ApiSettings, Depends(_settings)]
Conn = Annotated[AsyncConnection[Any], Depends(_connection)]
