"""Every role tried on every route of the app: who gets 401, who gets 403, who gets through.

The routes are read from the app's own OpenAPI schema, so a route added
later (by any router) is tried too, and one without an access dependency
fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from api import auth
from api.auth import Role
from api.main import create_app
from api.registry import upsert_agents, upsert_institutions, upsert_instruments
from api.settings import ApiSettings
from instrumetry.domain.registry import Agent, Institution, Instrument
from tests.api_support import issue_token, public_key, serve

if TYPE_CHECKING:
    from tests.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

OPEN = {"/healthz", "/readyz", "/metrics"}
"""Probes and scrapers need no token."""
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SCOPED = {"institution_id", "instrument_id", "agent_id"}
"""Path parameters that name something of one institution (403 for another's token)."""
PLATFORM_WIDE = {"/api/v1/usage/platform"}

_app = create_app(ApiSettings(database_url="postgresql://unused@127.0.0.1:1/unused"))
ROUTES = sorted(
    (path, method.upper())
    for path, operations in _app.openapi()["paths"].items()
    if path not in OPEN
    for method in operations
)
# Ids of the two institutions' things; "ghost" ids are where admins write, so nothing changes.
IDS = {
    "own": {"institution_id": "own", "instrument_id": "own-1", "agent_id": "agent-own-1"},
    "other": {"institution_id": "other", "instrument_id": "other-1", "agent_id": "agent-other-1"},
    "ghost": {"institution_id": "ghost", "instrument_id": "ghost-1", "agent_id": "ghost-1"},
}
PARAMS = {"from": "2026-03-02", "to": "2026-03-02", "year": "2026"}
"""Plausible query parameters for every route (unused ones are ignored)."""
ROLES = ["anonymous", "revoked", "admin", "auditor", "institution"]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def database(make_database: MakeDatabase) -> Iterator[str]:
    with make_database("test_access") as url:
        with psycopg.connect(url) as conn:
            upsert_institutions(conn, [Institution("own", "Own"), Institution("other", "Other")])
            upsert_instruments(
                conn, [Instrument("own-1", "own", "One"), Instrument("other-1", "other", "Two")]
            )
            upsert_agents(
                conn,
                [
                    Agent("agent-own-1", "own-1", public_key()),
                    Agent("agent-other-1", "other-1", public_key()),
                ],
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS service_orders (instrument_id text, "
                "starts_at timestamptz, ends_at timestamptz, external boolean)"
            )
            conn.commit()
        yield url


@pytest.fixture(scope="module")
async def clients(database: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    revoked = issue_token(database, Role.AUDITOR)
    with psycopg.connect(database) as conn:
        (record,) = [r for r in auth.list_tokens(conn) if r.role is Role.AUDITOR]
        auth.revoke_token(conn, record.id)
    tokens = {
        "anonymous": None,
        "revoked": revoked,
        "admin": issue_token(database, Role.ADMIN),
        "auditor": issue_token(database, Role.AUDITOR),
        "institution": issue_token(database, Role.INSTITUTION, "own"),
    }
    async with AsyncExitStack() as stack:
        yield {
            role: await stack.enter_async_context(serve(database, token))
            for role, token in tokens.items()
        }


def expected(role: str, method: str, path: str, target: str) -> set[int] | None:
    """The statuses a role may get, or None for "let through" (anything but 401/403/5xx).

    Another institution's resource may be refused (403) or hidden (404), but never served.
    """
    if role in ("anonymous", "revoked"):
        return {401}
    if method in WRITES:
        return None if role == "admin" else {403}
    if role != "institution":
        return None
    if path in PLATFORM_WIDE:
        return {403}
    return {403, 404} if target == "other" and set(_names(path)) & SCOPED else None


@pytest.mark.parametrize("target", ["own", "other"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("path", "method"), ROUTES)
async def test_every_role_on_every_route(
    clients: dict[str, httpx.AsyncClient], path: str, method: str, role: str, target: str
) -> None:
    ids = IDS["ghost" if method in WRITES and role == "admin" else target]
    url = path.format(**{name: ids.get(name, "x") for name in _names(path)})
    body: dict[str, Any] = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    response = await clients[role].request(method, url, params=PARAMS, **body)
    want = expected(role, method, path, target)
    assert response.status_code < 500, response.text
    if want is None:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code in want, response.text
        assert response.headers["content-type"] == "application/problem+json"
    if want == {401}:
        assert response.headers["www-authenticate"] == "Bearer"


def _names(path: str) -> list[str]:
    return [part.strip("{}") for part in path.split("/") if part.startswith("{")]


def test_the_matrix_covers_the_registry_and_usage() -> None:
    paths = {path for path, _ in ROUTES}
    assert {"/api/v1/instruments/{instrument_id}", "/api/v1/usage/platform"} <= paths
    assert ("/api/v1/reports/startup-rate", "GET") in ROUTES
    assert ("/api/v1/instruments/import", "POST") in ROUTES


async def test_every_protected_operation_documents_its_token(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    schema = (await clients["anonymous"].get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    for path, method in ROUTES:
        operation = schema["paths"][path][method.lower()]
        assert operation.get("security") == [{"token": []}], (method, path)
        assert "401" in operation["responses"], (method, path)
