"""Query parameters shared by every list route: ``limit``/``offset`` and free-text search."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from api.registry_models import ID_PATTERN, NO_NUL

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (1–500).")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]
Search = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=100,
        pattern=NO_NUL,
        description="Case-insensitive substring of the id or name (and more, per resource).",
    ),
]
IdFilter = Annotated[str | None, Query(pattern=ID_PATTERN, description="Exact id.")]
