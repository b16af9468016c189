"""API tokens and the principals they stand for.

A token is 32 random bytes (``imt_`` + URL-safe base64) shown once when it is
created; the database keeps only its SHA-256. A hash without a salt is enough
here because the token is high-entropy: nobody can guess it from the hash,
and a lookup by hash is one index probe per request.

Roles (see docs/API.md):

- ``admin``: reads and changes everything;
- ``auditor``: reads everything, changes nothing;
- ``institution``: reads only its own institution and instruments.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from instrumetry.domain.errors import ConfigError

PREFIX = "imt_"
MAX_TOKEN_LENGTH = 100
"""Longer bearer values are rejected before hashing: no token is that long."""


class Role(enum.StrEnum):
    ADMIN = "admin"
    AUDITOR = "auditor"
    INSTITUTION = "institution"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id and name, its role and, for ``institution``, which."""

    token_id: int
    name: str
    role: Role
    institution_id: str | None

    @property
    def scope(self) -> str | None:
        """The only institution this principal may read, or None for all of them."""
        return self.institution_id if self.role is Role.INSTITUTION else None

    def may_read(self, institution_id: str) -> bool:
        return self.scope is None or self.scope == institution_id


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token, without its secret (which is not stored)."""

    id: int
    name: str
    role: Role
    institution_id: str | None
    created_at: datetime
    revoked_at: datetime | None


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def authenticate(conn: AsyncConnection[Any], token: str) -> Principal | None:
    """The principal of a live (not revoked) token, or None."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with conn.transaction():
        cur = await conn.execute(
            """SELECT id, name, role, institution_id FROM api_tokens
               WHERE token_hash = %s AND revoked_at IS NULL""",
            (hash_token(token),),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return Principal(token_id=row[0], name=row[1], role=Role(row[2]), institution_id=row[3])


def create_token(
    conn: psycopg.Connection[Any], name: str, role: Role, institution_id: str | None
) -> tuple[TokenRecord, str]:
    """Store a new token; return its record and the token itself, which is never stored."""
    if not 1 <= len(name) <= 200:
        raise ConfigError("token name must be 1 to 200 characters")
    if (role is Role.INSTITUTION) != (institution_id is not None):
        raise ConfigError(
            "--institution is required for role 'institution' and not allowed for other roles"
        )
    token = new_token()
    with conn.transaction():
        if institution_id is not None:
            found = conn.execute(
                "SELECT 1 FROM institutions WHERE id = %s", (institution_id,)
            ).fetchone()
            if found is None:
                raise ConfigError(f"no institution has id {institution_id!r}")
        row = conn.execute(
            """INSERT INTO api_tokens (name, role, institution_id, token_hash)
               VALUES (%s, %s, %s, %s)
               RETURNING id, name, role, institution_id, created_at, revoked_at""",
            (name, role.value, institution_id, hash_token(token)),
        ).fetchone()
    assert row is not None
    return _record(row), token


def list_tokens(conn: psycopg.Connection[Any]) -> list[TokenRecord]:
    rows = conn.execute(
        """SELECT id, name, role, institution_id, created_at, revoked_at
           FROM api_tokens ORDER BY id"""
    ).fetchall()
    return [_record(row) for row in rows]


def revoke_token(conn: psycopg.Connection[Any], token_id: int) -> TokenRecord:
    """Revoke a token from now on; revoking twice keeps the first revocation time."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s
               RETURNING id, name, role, institution_id, created_at, revoked_at""",
            (token_id,),
        ).fetchone()
    if row is None:
        raise ConfigError(f"no token has id {token_id}")
    return _record(row)


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        id=row[0],
        name=row[1],
        role=Role(row[2]),
        institution_id=row[3],
        created_at=row[4],
        revoked_at=row[5],
    )
