"""The HTTP API: usage reports and audits over the measured intervals.

``create_app`` builds the application from settings; the database pool is
opened by the lifespan and closed with it, so importing this module (to read
the OpenAPI schema, or in tests) opens nothing. ``uvicorn --factory
api.main:create_app`` reads the settings from the environment.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

import instrumetry
from api import definitions, problems
from api.routes import (
    agents,
    annual,
    audit,
    capacity,
    health,
    institutions,
    instruments,
    orders,
    reconciliation,
    reports,
    usage,
)
from api.settings import ApiSettings, load_settings

DESCRIPTION = (
    "Measured usage of shared scientific instruments: how often they are switched on, "
    "how much they run, and how much of the time is measured at all. Every figure comes "
    "from the state intervals the instruments' agents report, never from self-reporting. "
    "Errors are RFC 9457 problem details (`application/problem+json`).\n\n" + definitions.markdown()
)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API for ``settings`` (default: read from ``INSTRUMETRY_*`` variables now)."""
    config = settings if settings is not None else load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # open(wait=False): the API starts during a database outage and says so
        # in /readyz and 503 answers, instead of failing to start.
        pool = AsyncConnectionPool(
            config.database_url,
            connection_class=AsyncConnection[Any],
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            timeout=config.pool_timeout_s,
            # A connection broken by a database restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="api",
        )
        await pool.open(wait=False)
        app.state.pool = pool
        # What startup built (modules, routes, schemas) lives as long as the process: out
        # of the collector's reach, a full collection, which a report over thousands of
        # instruments triggers every request, no longer walks it (profiled: a third of the
        # annual startup-rate report's time in Python).
        gc.freeze()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Instrumetry",
        description=DESCRIPTION,
        version=instrumetry.__version__,
        lifespan=lifespan,
    )
    app.state.settings = config
    problems.install(app)
    app.include_router(health.router)
    app.include_router(reports.router)
    app.include_router(institutions.router)
    app.include_router(instruments.router)
    app.include_router(agents.router)
    app.include_router(usage.router)
    app.include_router(orders.router)
    app.include_router(reconciliation.router)
    app.include_router(audit.router)
    app.include_router(annual.router)
    app.include_router(capacity.router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.problem_media_type(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
