"""Dependencies of the routes, as ``Annotated`` aliases (``conn: Conn``).

The pool and the settings live on the application (built by its lifespan),
never in module globals, so several apps (tests) can run in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.settings import ApiSettings
from instrumetry.domain.reconcile import DEFAULT_TOLERANCES, Tolerances

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


def _tolerances(
    inflation_factor: Annotated[
        float, Query(gt=0, le=10, description="`inflated` when billed > E × this + slack.")
    ] = DEFAULT_TOLERANCES.inflation_factor,
    inflation_slack_h: Annotated[
        float, Query(ge=0, le=24, description="`inflated`: hours billed beyond E × factor.")
    ] = DEFAULT_TOLERANCES.inflation_slack_h,
    min_coverage: Annotated[
        float, Query(ge=0, le=1, description="Below it an order is `unverifiable`.")
    ] = DEFAULT_TOLERANCES.min_coverage,
    max_overlap_min: Annotated[
        float, Query(ge=0, le=1440, description="`double_billed` beyond this overlap, minutes.")
    ] = DEFAULT_TOLERANCES.max_overlap.total_seconds() / 60,
) -> Tolerances:
    """Reconciliation tolerances from query parameters, DESIGN.md's values by default."""
    return Tolerances(
        inflation_factor=inflation_factor,
        inflation_slack_h=inflation_slack_h,
        min_coverage=min_coverage,
        max_overlap=timedelta(minutes=max_overlap_min),
    )


ReconcileTolerances = Annotated[Tolerances, Depends(_tolerances)]
