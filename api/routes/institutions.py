"""Institutions: who owns instruments, and their working calendars."""

from __future__ import annotations

from fastapi import APIRouter, Path, status

from api import problems
from api.deps import AdminAccess, Conn, CurrentPrincipal, ReadAccess, check_institution
from api.pagination import Limit, Offset, Search
from api.registry_models import ID_PATTERN, Institution, InstitutionCreate, InstitutionFields, Page
from api.store import institutions as store

router = APIRouter(
    prefix="/api/v1/institutions",
    tags=["registry"],
    dependencies=[ReadAccess],
    responses=problems.responses(400, 401, 403, 422, 503),
)
InstitutionId = Path(pattern=ID_PATTERN, description="The institution's id.")


@router.get("", summary="List institutions (an institution's token sees only its own)")
async def list_institutions(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    q: Search = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[Institution]:
    return await store.page(conn, scope=principal.scope, q=q, limit=limit, offset=offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminAccess],
    summary="Register an institution",
    responses=problems.responses(409),
)
async def create_institution(conn: Conn, body: InstitutionCreate) -> Institution:
    return await store.create(conn, body)


@router.get("/{institution_id}", summary="One institution", responses=problems.responses(404))
async def get_institution(
    conn: Conn, principal: CurrentPrincipal, institution_id: str = InstitutionId
) -> Institution:
    found = await store.get(conn, institution_id)
    check_institution(principal, found.id)
    return found


@router.put(
    "/{institution_id}",
    dependencies=[AdminAccess],
    summary="Replace an institution's name, calendar and region",
    responses=problems.responses(404),
)
async def replace_institution(
    conn: Conn, body: InstitutionFields, institution_id: str = InstitutionId
) -> Institution:
    return await store.replace(conn, institution_id, body)


@router.delete(
    "/{institution_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminAccess],
    summary="Delete an institution without instruments or tokens",
    responses=problems.responses(404, 409),
)
async def delete_institution(conn: Conn, institution_id: str = InstitutionId) -> None:
    await store.delete(conn, institution_id)
