"""Agents: the enrolled programs beside instruments, with the keys their events are signed by.

There is no DELETE: an agent's public key is what verifies its signed
events, so removing it would make measured history unverifiable.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, status

from api import problems
from api.deps import AdminAccess, Conn, CurrentPrincipal, ReadAccess, check_institution
from api.pagination import IdFilter, Limit, Offset
from api.registry_models import ID_PATTERN, Agent, AgentCreate, AgentFields, Page
from api.store import agents as store

router = APIRouter(
    prefix="/api/v1/agents",
    tags=["registry"],
    dependencies=[ReadAccess],
    responses=problems.responses(400, 401, 403, 422, 503),
)
AgentId = Path(pattern=ID_PATTERN, description="The agent's id.")


@router.get("", summary="List agents with their public keys and last contact")
async def list_agents(
    *,
    conn: Conn,
    principal: CurrentPrincipal,
    institution: IdFilter = None,
    instrument: IdFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[Agent]:
    if institution is not None:
        check_institution(principal, institution)
    return await store.page(
        conn,
        scope=principal.scope,
        institution=institution,
        instrument=instrument,
        limit=limit,
        offset=offset,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[AdminAccess],
    summary="Enrol an agent with its Ed25519 public key",
    responses=problems.responses(409),
)
async def create_agent(conn: Conn, body: AgentCreate) -> Agent:
    return await store.create(conn, body)


@router.get("/{agent_id}", summary="One agent", responses=problems.responses(404))
async def get_agent(conn: Conn, principal: CurrentPrincipal, agent_id: str = AgentId) -> Agent:
    found = await store.get(conn, agent_id)
    check_institution(principal, found.institution_id)
    return found


@router.put(
    "/{agent_id}",
    dependencies=[AdminAccess],
    summary="Re-enrol an agent (a new key replaces the old one)",
    description="The old key is retired, not forgotten: it still verifies the events it "
    "signed before now (the audit lists it with its `retired_at`), and nothing dated later.",
    responses=problems.responses(404),
)
async def replace_agent(conn: Conn, body: AgentFields, agent_id: str = AgentId) -> Agent:
    return await store.replace(conn, agent_id, body)
