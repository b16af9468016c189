"""Dependencies of the routes, as ``Annotated`` aliases (``conn: Conn``).

The pool and the settings live on the application (built by its lifespan),
never in module globals, so several apps (tests) can run in one process.

Access control (docs/API.md): every router but health declares
``dependencies=[ReadAccess]`` (any valid token) and every route that changes
data adds ``AdminAccess``; a route that must scope its answer to the caller's
institution takes ``principal: CurrentPrincipal`` and reads ``principal.scope``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException

from api import auth
from api.auth import Principal, Role
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


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `instrumetry token create`, sent as `Authorization: Bearer …`.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def current_principal(
    conn: Conn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its bearer token; 401 without a live token."""
    if credentials is None:
        raise HTTPException(401, "an API token is required (Authorization: Bearer …)", _CHALLENGE)
    principal = await auth.authenticate(conn, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "the API token is unknown or revoked", _CHALLENGE)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_reader(principal: CurrentPrincipal) -> Principal:
    """Any valid token reads; what an institution token sees is narrowed by ``scope``."""
    return principal


def require_admin(principal: CurrentPrincipal) -> Principal:
    """Only admins change data: auditors read everything and change nothing."""
    if principal.role is not Role.ADMIN:
        raise HTTPException(403, f"role '{principal.role}' may read but not change data")
    return principal


def require_platform_reader(principal: CurrentPrincipal) -> Principal:
    """Platform-wide figures include every institution: not for an institution's token."""
    if principal.scope is not None:
        raise HTTPException(403, "an institution's token reads only its own institution")
    return principal


def check_institution(principal: Principal, institution_id: str) -> None:
    """403 unless ``principal`` may read ``institution_id``'s data."""
    if not principal.may_read(institution_id):
        raise HTTPException(
            403, f"this token reads only institution {principal.scope!r}, not {institution_id!r}"
        )


ReadAccess = Depends(require_reader)
AdminAccess = Depends(require_admin)
PlatformAccess = Depends(require_platform_reader)
