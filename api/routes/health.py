"""Liveness and readiness probes, for load balancers and ``docker compose``.

``/healthz`` says the process serves requests, whatever the database does,
so an orchestrator does not restart a healthy API during a database outage;
``/readyz`` says whether it can answer reports right now.
"""

from __future__ import annotations

import psycopg
from fastapi import APIRouter

from api import problems, queries
from api.deps import Pool, Settings
from api.models import Status
from instrumetry.domain.errors import ServiceError

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0
"""Probes are short: a database that needs longer to answer is not ready."""


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Status:
    return Status()


@router.get(
    "/readyz",
    summary="The database answers and its schema is migrated",
    responses=problems.responses(503),
)
async def readyz(pool: Pool, settings: Settings) -> Status:
    timeout = min(settings.pool_timeout_s, READY_TIMEOUT_S)
    try:
        async with pool.connection(timeout=timeout) as conn:
            version = await queries.schema_version(conn)
    except psycopg.OperationalError:
        raise ServiceError(f"the database did not answer within {timeout:g} s") from None
    if version is None or version < queries.SCHEMA_VERSION:
        raise ServiceError(
            f"the database schema is at version {version or 0}, the API needs "
            f"{queries.SCHEMA_VERSION}; run `instrumetry db migrate`"
        )
    return Status()
