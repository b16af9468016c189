"""Helpers of the API tests: an app with its lifespan running, and tokens to call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api import auth
from api.main import create_app
from api.settings import ApiSettings


@asynccontextmanager
async def serve(url: str, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app on ``url`` with its lifespan running (the pool open), and a client of it."""
    app = create_app(ApiSettings(database_url=url, pool_timeout_s=0.5))
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client,
    ):
        yield client


def public_key() -> bytes:
    """A new agent's raw public key: enrolment refuses bytes that are no real key."""
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def issue_token(url: str, role: auth.Role, institution_id: str | None = None) -> str:
    """A new token of ``role`` in the database at ``url``."""
    with psycopg.connect(url) as conn:
        _, token = auth.create_token(conn, f"test {role}", role, institution_id)
    return token
